"""Compute nodes without internet, end to end: `python -m led.prepare` writes local files into a directory, and
`python train.py data=arxiv data.source=DIR` (the shipped Hub option pointed at it) trains from it with
HF_HUB_OFFLINE=1 while every network connection in the subprocesses fails and is recorded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from test_training import FAMILY_SIZES, FEW_STEPS, TINY_CORPUS, make_config

from led.data.synthetic import write_corpus
from led.export import main as export_main
from led.memory.__main__ import main as memory_main
from led.models.families import FAMILIES
from led.models.generation import GenerationConfig
from led.models.tokenizer import LEDTokenizer
from led.recipes.evaluate import evaluate
from led.recipes.train import train

ROOT = Path(__file__).resolve().parents[1]
WORDS = "the survey counted rivers towns roads farms schools wells bridges in each region of the valley".split()

# Imported by every Python process that has its folder on PYTHONPATH: DNS and connections to the outside raise, and
# each attempt is appended to $LED_NETWORK_LOG (a library that swallowed the error is still caught).
SITECUSTOMIZE = '''
import os, socket

def _refuse(*args, **kwargs):
    with open(os.environ["LED_NETWORK_LOG"], "a") as log:
        log.write(repr(args[1:] if args and isinstance(args[0], socket.socket) else args) + "\\n")
    raise OSError("network access attempted on an offline compute node")

_connect = socket.socket.connect

def _connect_local_only(self, address):
    if self.family == socket.AF_UNIX:  # multiprocessing and friends talk over local sockets
        return _connect(self, address)
    _refuse(self, address)

socket.socket.connect = _connect_local_only
socket.socket.connect_ex = _connect_local_only
socket.getaddrinfo = _refuse
socket.create_connection = _refuse
'''


def record(i: int) -> dict[str, str]:
    words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(60)]
    return {"article": " ".join(words) + ".", "abstract": f"region {i} has {i % 5} rivers."}


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"{command[1:3]} failed:\n{result.stderr[-3000:]}"
    return result


def test_prepare_then_train_offline_never_touches_the_network(tmp_path: Path) -> None:
    local = tmp_path / "downloaded"  # the files a user brought onto the cluster
    local.mkdir()
    sizes = {"train": 16, "validation": 4, "test": 2}
    start = 0
    for split, count in sizes.items():
        rows = [record(i) for i in range(start, start + count)]
        (local / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        start += count
    texts = [record(i)["article"] for i in range(start)] + [record(i)["abstract"] for i in range(start)]
    LEDTokenizer.train(texts, vocab_size=400).save_pretrained(tmp_path / "tokenizer")

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    attempts = tmp_path / "network-attempts.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(ROOT)]), "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf-home"), "LED_NETWORK_LOG": str(attempts), "OMP_NUM_THREADS": "1"}

    prepared = tmp_path / "prepared"
    run([sys.executable, "-m", "led.prepare", f"dataset={local}", f"out={prepared}", f"tokenizer={tmp_path / 'tokenizer'}",
         "max_input_length=256", "max_target_length=32"], env)
    result = run([sys.executable, str(ROOT / "train.py"), "data=arxiv", f"data.source={prepared}",
                  "data.max_input_length=256", "data.max_target_length=32", "data.num_workers=0", "data.num_proc=null",
                  "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
                  "module.val_rouge_examples=2", "generation.num_beams=1", "generation.max_new_tokens=4",
                  "callbacks=none", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"], env)

    assert not attempts.exists(), attempts.read_text()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and "rouge1" in metrics
    # The tokenised splits led.prepare wrote were used as they are (the run tokenised nothing itself).
    assert "Tokenizing" not in result.stderr


# ------------------------------------------------------------------------------- a fine-tuned run, off its node
@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """In this process: HF_HUB_OFFLINE=1 and every DNS lookup or outside connection raises; returns the attempts."""
    import socket

    import huggingface_hub.constants

    attempts: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        attempts.append(repr(args))
        raise OSError("network access attempted on an offline compute node")

    connect = socket.socket.connect

    def connect_local_only(self: socket.socket, address: Any) -> Any:
        if self.family == socket.AF_UNIX:
            return connect(self, address)
        return refuse(address)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # an empty Hub cache: nothing to fall back on
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for name, replacement in (("connect", connect_local_only), ("connect_ex", connect_local_only)):
        monkeypatch.setattr(socket.socket, name, replacement)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def pretrained_model(family: str, directory: Path, corpus: Path) -> Path:
    """A 'pretrained' model directory of `family` as the Hub ships one: config.json, weights, tokenizer files and a
    generation_config.json whose defaults (not set by the run's `generation` node) validation generates with."""
    records = [json.loads(line) for line in (corpus / "train.jsonl").read_text().splitlines()]
    tokenizer = FAMILIES[family].tokenizer_class.train([r[f] for r in records for f in ("article", "summary")],
                                                       vocab_size=400)
    shrink = {"led": dict(max_encoder_position_embeddings=1024, max_decoder_position_embeddings=128),
              "pegasus_x": dict(block_size=32)}[family]
    config = FAMILIES[family].config_of_size(FAMILY_SIZES[family], vocab_size=400, **shrink)
    torch.manual_seed(0)
    model = FAMILIES[family].model_class(config)
    model.generation_config = GenerationConfig.from_dict({**GenerationConfig.from_model_config(config).to_dict(),
                                                          "repetition_penalty": 1.3, "min_new_tokens": 2})
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_fine_tuned_run_evaluates_exports_and_resumes_without_its_pretrained_files(
        family: str, tmp_path: Path, offline: list[str]) -> None:
    """Fine-tune from a pretrained directory, delete it, then evaluate, export, plan memory and resume offline: the run
    directory is all they need (the model is built from the config the checkpoint stores, the tokenizer is the run's
    copy), and the evaluation gives the run's own validation ROUGE with the pretrained model's generation defaults."""
    corpus = tmp_path / "corpus"
    write_corpus(corpus, train=12, validation=4, test=2, short_train=0, min_sentences=15, max_sentences=25)
    pretrained = pretrained_model(family, tmp_path / "pretrained", corpus)
    run = tmp_path / "train" / "run"
    model_option = ["model=pegasus_x_tiny"] if family == "pegasus_x" else ["model.attention_window=32"]
    command = [f"data.synthetic.dir={corpus}", *TINY_CORPUS, *model_option, f"model.pretrained={pretrained}",
               *FEW_STEPS, "trainer.max_steps=2", "trainer.val_check_interval=2", "module.val_rouge_examples=4",
               "logger=none"]
    reported = train(make_config(tmp_path / "train", *command))
    copied = sorted(p.name for p in (run / "tokenizer").iterdir())
    assert "tokenizer.json" in copied
    shutil.rmtree(pretrained)

    checkpoint = run / "checkpoints" / "last.ckpt"
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        eval_cfg = compose("eval", overrides=[f"ckpt_path={checkpoint}", "split=validation", "limit=4", "device=cpu",
                                              "rouge.bootstrap=0", f"output_dir={tmp_path / 'eval'}"])
    evaluated = evaluate(eval_cfg)
    assert round(evaluated["rouge1"], 4) == reported["rouge1"]
    assert evaluated["generation"]["repetition_penalty"] == 1.3 and evaluated["generation"]["min_new_tokens"] == 2

    exported = export_main([f"ckpt_path={checkpoint}", f"out={tmp_path / 'exported'}"])
    assert (exported / "tokenizer.json").read_bytes() == (run / "tokenizer" / "tokenizer.json").read_bytes()
    assert json.loads((exported / "generation_config.json").read_text())["repetition_penalty"] == 1.3
    planned = memory_main([f"model={checkpoint}", "input_length=512", "target_length=64"])
    assert planned.startswith(f"{FAMILIES[family].name} (")

    resumed = train(make_config(tmp_path / "train", *command, "ckpt_path=last", "trainer.max_steps=4",
                                "trainer.val_check_interval=4"))
    assert resumed["global_step"] == 4
    assert not offline, offline
