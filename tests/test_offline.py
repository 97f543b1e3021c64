"""Compute nodes without internet, end to end: `python -m led.prepare` writes local files into a directory, and
`python train.py data=arxiv data.source=DIR` (the shipped Hub option pointed at it) trains from it with
HF_HUB_OFFLINE=1 while every network connection in the subprocesses fails and is recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from led.models.tokenizer import LEDTokenizer

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
