"""Settings a user can get wrong, through the entry points: Hydra's own messages for unknown top-level keys and group
options, ours (led/config_check.py, led.recipes.train) for keys a node's `_target_` does not take, values of the wrong
type, model settings, lengths, vocabularies and
checkpoints of another model. Each stops the run with one line (a traceback only with HYDRA_FULL_ERROR=1) and leaves
what an earlier run wrote in the run directory as it was."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict
from test_training import FAMILY_MODELS, ROOT, TINY_CORPUS, make_config

from led.models.tokenizer import LEDTokenizer
from led.recipes.train import train

ENV = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)  # tiny models: one thread is the fastest on a shared machine


def earlier_run(run_dir: Path) -> dict[str, bytes]:
    """Files as an earlier run leaves them in `run_dir` (made up: only their bytes matter); returns a snapshot."""
    files = {"checkpoints/last.ckpt": b"weights of step 400", "config.yaml": b"seed: 0\n",
             "metrics.json": b'{"rouge1": 30.0}\n', "csv/metrics.csv": b"step,train/loss\n0,5.0\n"}
    for name, data in files.items():
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_bytes(data)
    return snapshot(run_dir)


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def assert_untouched(run_dir: Path, before: dict[str, bytes]) -> None:
    """The earlier files are as they were; only Hydra's own (its .hydra/ and log, written before our code runs,
    as on every launch) may have been added."""
    after = snapshot(run_dir)
    assert {name: after.get(name) for name in before} == before
    added = [name for name in after if name not in before and not name.startswith(".hydra/") and name != "train.log"]
    assert not added, added


def run_train_py(*overrides: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], capture_output=True, text=True,
                          timeout=300, env=env or ENV, cwd=ROOT, check=False)


def error_line(stderr: str) -> str:
    """The one line train.py prints for our errors (Lightning may log before it, on other lines)."""
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


# ------------------------------------------------------------------------------- while Hydra composes the config
@pytest.mark.parametrize(("override", "expected"), [
    # Hydra refuses a key its node lacks; train.py names the closest setting of what the node builds, as for `+`.
    ("optimizer.lrr=1e-3", ["error: optimizer.lrr is not a setting of torch.optim.AdamW; did you mean optimizer.lr?"]),
    ("foo=1", ["Could not override 'foo'", "Key 'foo' is not in struct"]),
    ("model=tinny", ["Could not find 'model/tinny'", "Available options in 'model':", "led_base", "led_large",
                     "tiny"]),
])
def test_unknown_key_or_group_option_stops_while_composing(override: str, expected: list[str],
                                                           tmp_path: Path) -> None:
    before = earlier_run(tmp_path / "run")
    result = run_train_py(override, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 1
    assert all(text in result.stderr for text in expected), result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(tmp_path / "run") == before  # Hydra stops while composing, before it makes the run directory

    full = run_train_py(override, f"hydra.run.dir={tmp_path / 'run'}", env={**ENV, "HYDRA_FULL_ERROR": "1"})
    assert full.returncode == 1 and "Traceback" in full.stderr


def test_value_of_the_wrong_type_is_one_line_naming_the_keys(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    before = earlier_run(run_dir)
    result = run_train_py("trainer.max_steps=abc", "optimizer.lr=fast", "ckpt_path=last", f"hydra.run.dir={run_dir}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert error_line(result.stderr) == (
        "error: optimizer.lr='fast' is not valid: torch.optim.AdamW takes lr as a number; "
        "trainer.max_steps='abc' is not valid: lightning.Trainer takes max_steps as an integer")
    assert_untouched(run_dir, before)


def test_a_rejected_config_leaves_no_new_run_directory(tmp_path: Path) -> None:
    # Hydra makes the run directory (.hydra/, train.log) before train.py's checks run; a refused job removes it.
    result = run_train_py("+optimizer.lrr=1e-3", f"hydra.run.dir={tmp_path / 'new'}")
    assert result.returncode == 1 and error_line(result.stderr).startswith("error: optimizer.lrr is not a setting")
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------------------- our checks, through train(cfg)
@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tokenizer for every run here (none of them trains one): 400 tokens, like TINY_CORPUS asks for."""
    directory = tmp_path_factory.mktemp("tokenizer")
    words = [f"word{i}" for i in range(600)]
    LEDTokenizer.train([" ".join(words[i:i + 50]) for i in range(0, 600, 5)], vocab_size=400).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("synthetic")


def tiny(corpus: Path, tokenizer_dir: Path, *overrides: str, family: str = "led") -> list[str]:
    return [f"data.synthetic.dir={corpus}", *TINY_CORPUS, *FAMILY_MODELS[family], f"data.tokenizer={tokenizer_dir}",
            "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
            "trainer.enable_progress_bar=false", "module.val_rouge_examples=1", "generation.num_beams=1",
            "generation.max_new_tokens=4", *overrides]


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.attention_window=63"],
     "LEDConfig.attention_window=63 is invalid: every window must be a positive even integer (e.g. 512 or 1024)"),
    (["model.attention_window=0"], "LEDConfig.attention_window=0 is invalid: every window must be a positive even"),
    (["model.attention_window=[32,32,32]"],
     ("LEDConfig.attention_window has 3 values [32, 32, 32] but the encoder has 2 layers: give one value per encoder "
      "layer, or a single int")),
    (["data.max_input_length=5000"],
     ("data.max_input_length=5000 exceeds the model's 1024 encoder positions (max_encoder_position_embeddings); set "
      "data.max_input_length<=1024")),
    (["data.max_target_length=200"],
     ("data.max_target_length=200 exceeds the model's 128 decoder positions (max_decoder_position_embeddings); set "
      "data.max_target_length<=128")),
    (["model.vocab_size=300"], "has 400 tokens but the model's embeddings hold 300 (model_vocab_size)"),
    (["+optimizer.lrr=1e-3"], "optimizer.lrr is not a setting of torch.optim.AdamW; did you mean optimizer.lr?"),
    # Checked before the family is known: a field of neither family's config.
    (["+model.overrides.d_modle=256"],
     "model.overrides.d_modle is not a setting of led.LEDConfig or led.PegasusXConfig; did you mean "
     "model.overrides.d_model?"),
    (["model.size=huge"],
     "model.size='huge': unknown model size 'huge': valid names are tiny (LED), led-base-16384 (LED), "
     "led-large-16384 (LED), pegasus-x-tiny (PEGASUS-X)"),
    (["data.batch_size=two"],
     "data.batch_size='two' is not valid: led.data.datamodule.SummarizationDataModule takes batch_size as an integer"),
    (["model.gradient_checkpointing=yes"], "model.gradient_checkpointing='yes' is not valid"),
])
def test_setting_that_cannot_work_stops_with_one_line(overrides: list[str], message: str, tmp_path: Path,
                                                      corpus: Path, tokenizer_dir: Path) -> None:
    before = earlier_run(tmp_path / "run")
    with pytest.raises(ValueError) as caught:  # ConfigError or DataError: both are printed as one line
        train(make_config(tmp_path, *tiny(corpus, tokenizer_dir, *overrides)))
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert_untouched(tmp_path / "run", before)


@pytest.mark.parametrize(("overrides", "message"), [
    (["+model.attention_window=32"],
     "model.attention_window=32 is LED's sliding window; PEGASUS-X attends within blocks instead: set "
     "model.overrides.block_size"),
    # A field of LED's config only: it passes the check of both families' fields, not the model's own.
    (["+model.overrides.max_encoder_position_embeddings=1024"],
     "model.overrides.max_encoder_position_embeddings is not a field of PEGASUS-X's config (PegasusXConfig); did you "
     "mean model.overrides.max_position_embeddings?"),
    # The size names the family: LED's tiny takes no PEGASUS-X block size.
    (["model.size=tiny"], "model.overrides.block_size is not a field of LED's config (LEDConfig)"),
    (["model.overrides.block_size=33"],
     "PegasusXConfig.block_size=33 is invalid with stagger_local_blocks=true: staggering shifts blocks by half a "
     "block, so block_size must be even"),
    # The module's tokenizer (LED's byte-level BPE) would give ids that mean other tokens to PEGASUS-X.
    ([], "holds a LED tokenizer (BPE), but the model is PEGASUS-X: use the model's own tokenizer"),
    (["data.tokenizer=null", "data.tokenizer_vocab_size=100"],
     "tokenizer_vocab_size=100: vocab_size=100 is too small: it must exceed 106 (PEGASUS reserves ids 0-105 for "
     "special tokens)"),
])
def test_pegasus_x_setting_that_cannot_work_stops_with_one_line(overrides: list[str], message: str, tmp_path: Path,
                                                                corpus: Path, tokenizer_dir: Path) -> None:
    before = earlier_run(tmp_path / "run")
    with pytest.raises(ValueError) as caught:
        train(make_config(tmp_path, *tiny(corpus, tokenizer_dir, *overrides, family="pegasus_x")))
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert_untouched(tmp_path / "run", before)


def test_value_left_at_question_marks(tmp_path: Path) -> None:
    before = earlier_run(tmp_path / "run")
    with pytest.raises(ValueError, match=r"^data.train_file has no value \(it is \?\?\? in its config file\): give "
                                         r"one, e.g. data.train_file=...$"):
        train(make_config(tmp_path, "data=jsonl"))
    assert_untouched(tmp_path / "run", before)


def test_every_shipped_config_passes_the_setting_checks(tmp_path: Path) -> None:
    from led.config_check import setting_problems

    groups = {group: sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))
              for group in ("experiment", "trainer", "logger", "debug", "optimizer", "scheduler", "model", "callbacks")}
    choices = [[]] + [[f"{group}={option}"] for group, options in groups.items() for option in options]
    choices += [["data=jsonl", "data.train_file=train.jsonl"], ["data=arxiv"], ["data=pubmed"],
                ["trainer.devices=auto", "trainer.deterministic=warn", "trainer.val_check_interval=0.5",
                 "model.attention_window=[32,64]", "data.global_attention=[5,7]"]]
    for overrides in choices:
        assert setting_problems(make_config(tmp_path, *overrides)) == [], overrides


def test_run_dir_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("not a directory")
    cfg = make_config(tmp_path)
    with open_dict(cfg):
        cfg.run_dir = str(tmp_path / "a_file" / "run")
    with pytest.raises(ValueError, match=r"^run_dir=.*a_file/run cannot be created \(Not a directory\); choose "
                                         r"another directory with hydra.run.dir=DIR$"):
        train(cfg)


# ------------------------------------------------------------------------------- checkpoints of another model
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, corpus: Path, tokenizer_dir: Path) -> Path:
    """The run directory of a 2-step run (its last.ckpt is a real checkpoint)."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("finished")
    train(make_config(tmp, *tiny(corpus, tokenizer_dir)))
    return tmp / "run"


def test_checkpoint_of_another_model_size(tmp_path: Path, corpus: Path, tokenizer_dir: Path,
                                          finished_run: Path) -> None:
    shutil.copytree(finished_run, tmp_path / "run")
    before = snapshot(tmp_path / "run")
    cfg = make_config(tmp_path, *tiny(corpus, tokenizer_dir, "+model.overrides.d_model=64", "ckpt_path=last"))
    with pytest.raises(ValueError) as caught:
        train(cfg)
    message = str(caught.value)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert message.startswith(f"ckpt_path={last} holds another model than this run builds (it was saved with "
                              "d_model=128, this run has d_model=64; ")
    assert "weights of another shape (checkpoint vs this model), e.g. model.led." in message
    assert message.endswith("resume with the model settings of the run that saved it (its config.yaml), or start "
                            "over with ckpt_path=null") and "\n" not in message
    assert snapshot(tmp_path / "run") == before


# ------------------------------------------------------------------------------- evaluate.py
@pytest.mark.parametrize(("overrides", "message"), [
    (["ckpt_path={tmp}/nope/last.ckpt"], ("error: ckpt_path='{tmp}/nope/last.ckpt' does not exist; give a Lightning "
                                          "checkpoint file (.ckpt), a directory with config.json")),
    (["ckpt_path=last.ckpt"], "error: ckpt_path='last.ckpt' does not exist"),  # relative: not a Hub id either
    ([], "error: neither of predictions= and ckpt_path= given: set exactly one"),
])
def test_evaluate_py_user_errors_are_one_line(overrides: list[str], message: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, str(ROOT / "evaluate.py"), *(o.format(tmp=tmp_path) for o in overrides),
               f"output_dir={out}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**ENV, "HF_HUB_OFFLINE": "1"},
                            cwd=tmp_path, check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message.format(tmp=tmp_path)), result.stderr
    assert not (out / "metrics.json").exists()
