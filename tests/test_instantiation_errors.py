"""Mistakes found while the config's `_target_` nodes are built or called (led/instantiate.py), and files a user names
that are corrupt, through every entry point: each is one `error:` line (exit status 1 from train.py / evaluate.py,
2 from `python -m led.…`) naming the setting or file and what is valid, with no traceback; a bug in our own code
keeps its traceback. Entry points run in-process (led.entry.run_job, each tool's main) on tiny models and files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import save_tiny_led
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from test_config_errors import ENV, corpus, run_train_py, tiny, tokenizer_dir  # noqa: F401 - two are fixtures
from test_training import ROOT, make_config

from led.entry import run_job
from led.instantiate import build, receiving, refusal
from led.recipes.evaluate import evaluate
from led.recipes.train import train

CORRUPT_JSON = '{"truncated'


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    """A tiny Hugging Face-format LED with the test tokenizer (model.pretrained=, evaluate.py ckpt_path=)."""
    return save_tiny_led(tmp_path_factory.mktemp("model"), tokenizer_dir, vocab_size=400)


def one_error_line(stderr: str, prefix: str) -> str:
    """The single line of stderr that starts with `prefix` (Lightning may log other lines); no traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def job_error(work: Callable[[Any], Any], cfg: Any, capsys: pytest.CaptureFixture) -> str:
    """The line train.py / evaluate.py print for `work(cfg)` (led.entry.run_job), after checking exit status 1."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run_job(work, cfg)
    assert exit_.value.code == 1
    return one_error_line(capsys.readouterr().err, "error: ")


def tool_error(main: Callable[[list[str]], Any], program: str, argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """The line `python -m <program> ARGV` prints, after checking exit status 2."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    return one_error_line(capsys.readouterr().err, f"{program}: error: ")


def eval_config(tmp_path: Path, *overrides: str) -> Any:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="eval", overrides=[*overrides, f"output_dir={tmp_path / 'out'}"])


def write_test_split(tmp_path: Path) -> Path:
    """A jsonl split for evaluate.py's `+data.test_file=` (words of the test tokenizer)."""
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps({"article": f"word{i} word{i + 1} word{i + 2}", "abstract": f"word{i}"}) + "\n"
                            for i in range(3)))
    return path


EVAL_DATA = ["device=cpu", "+data.max_input_length=16", "+data.max_target_length=8", "generation.num_beams=1",
             "generation.max_new_tokens=4"]


# ---------------------------------------------------------------------------------------------- train: every group
GROUP_CASES = [
    ("model", ["model.pretrained=/no/such/dir"], "Model directory /no/such/dir does not exist"),
    ("model", ["model.pretrained={empty}"], "no config.json in"),
    ("data", ["data.batch_size=0"], "batch_size=0 must be >= 1"),
    ("data", ["data.source=/no/such/prepared", "data.synthetic=null", "data.cache_dir={empty}"],
     "source directory '/no/such/prepared' does not exist"),
    ("optimizer", ["optimizer.lr=-1"],
     'optimizer.lr=-1 is not valid: torch.optim.AdamW says "Invalid learning rate: -1"'),
    ("optimizer", ["optimizer.eps=-1"], 'optimizer.eps=-1 is not valid: torch.optim.AdamW says "Invalid epsilon value'),
    ("optimizer", ["optimizer.betas=[1.5,0.999]"],
     'optimizer (torch.optim.AdamW with lr=0.0005, weight_decay=0.01, betas=[1.5, 0.999], eps=1e-08) is not valid: '
     'torch.optim.AdamW says "Invalid beta parameter at index 0: 1.5"'),
    ("optimizer", ["optimizer=adafactor", "optimizer.lr=-1"],
     'optimizer.lr=-1 is not valid: torch.optim.Adafactor says "Learning rate should be >= 0 but is: -1"'),
    ("scheduler", ["scheduler.warmup_steps=-5"], "scheduler.warmup_steps=-5 is not valid: the warmup must be >= 0"),
    ("scheduler", ["scheduler=cosine", "scheduler.min_lr_ratio=2"],
     "scheduler.min_lr_ratio=2 is not valid: it must be in [0, 1]"),
    # -1 is max_epochs' value too: the setting the message names is the one.
    ("trainer", ["trainer.limit_val_batches=-1"],
     'trainer.limit_val_batches=-1 is not valid: lightning.Trainer says "You have passed invalid value -1 for '
     'limit_val_batches, it has to be in [0.0, 1.0] or an int."'),
    ("trainer", ["trainer.accelerator=tpux"],
     "trainer.accelerator='tpux' is not valid: lightning.Trainer says \"You selected an invalid accelerator name"),
    ("trainer", ["trainer.max_steps=-2"],
     'trainer.max_steps=-2 is not valid: lightning.Trainer says "`max_steps` must be a non-negative integer or -1'),
    ("trainer", ["+trainer.gradient_clip_algorithm=nrm"],
     "trainer.gradient_clip_algorithm='nrm' is not valid: lightning.Trainer says \"`gradient_clip_algorithm` nrm is "
     "invalid. Allowed algorithms: ['value', 'norm'].\""),
    ("callbacks", ["callbacks.checkpoint.mode=maxx"],
     "callbacks.checkpoint.mode='maxx' is not valid: lightning.pytorch.callbacks.ModelCheckpoint says \"`mode` can be "
     "min, max but got maxx\""),
    ("callbacks", ["callbacks.checkpoint.save_top_k=-2"],
     'callbacks.checkpoint.save_top_k=-2 is not valid: lightning.pytorch.callbacks.ModelCheckpoint says "Invalid '
     'value for save_top_k=-2. Must be >= -1"'),
    ("callbacks", ["+callbacks.checkpoint.every_n_train_steps=-1"],
     'callbacks.checkpoint.every_n_train_steps=-1 is not valid: lightning.pytorch.callbacks.ModelCheckpoint says '
     '"Invalid value for every_n_train_steps=-1. Must be >= 0"'),
    # Our subclass of ModelCheckpoint checks its own setting.
    ("callbacks", ["callbacks.last_checkpoint.every_n_train_steps=-1"],
     "callbacks.last_checkpoint.every_n_train_steps=-1 must be an integer >= 1"),
    ("logger", ["logger=wandb", "logger.wandb.log_model=true"],
     'logger.wandb.log_model=true is not valid: lightning.pytorch.loggers.WandbLogger says "Providing log_model=True '
     'and offline=True is an invalid configuration'),
    ("module", ["module.label_smoothing=2"], "module.label_smoothing=2 must be in [0, 1)"),
    ("generation", ["generation.num_beams=0"], "generation.num_beams=0 is invalid: it must be an integer >= 1"),
    ("generation", ["+generation.num_return_sequences=3"],
     "generation.num_return_sequences=3 is larger than num_beams=1: return at most num_beams sequences"),
    # A target that is not there (Hydra's "Error locating target" wrapper, before) and an interpolation that cannot
    # resolve (omegaconf's traceback, before).
    ("optimizer", ["optimizer._target_=torch.optim.AdamX"],
     "optimizer._target_=torch.optim.AdamX cannot be imported: torch.optim has no AdamX; did you mean "
     "torch.optim.Adam?"),
    ("callbacks", ["callbacks.samples._target_=led.training.callbacks.LogSample"],
     "callbacks.samples._target_=led.training.callbacks.LogSample cannot be imported: led.training.callbacks has no "
     "LogSample; did you mean led.training.callbacks.LogSamples?"),
    ("trainer", ["trainer.max_steps=${{nope}}"],  # {{ }}: the overrides go through str.format
     "trainer.max_steps cannot be resolved (Interpolation key 'nope' not found)"),
]


@pytest.mark.parametrize(("group", "overrides", "expected"), GROUP_CASES,
                         ids=[f"{group}:{' '.join(overrides)}" for group, overrides, _ in GROUP_CASES])
def test_train_refusal_of_each_group_is_one_line(group: str, overrides: list[str], expected: str, tmp_path: Path,
                                                 corpus: Path, tokenizer_dir: Path, capsys: pytest.CaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")  # build_logger would set it for the process
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no wandb credentials
    cfg = make_config(tmp_path, *tiny(corpus, tokenizer_dir, *(o.format(empty=tmp_path / "empty") for o in overrides)))
    line = job_error(train, cfg, capsys)
    assert expected in line, line
    assert not (tmp_path / "run" / "metrics.json").exists()


# ---------------------------------------------------------------------------------------------- train.py itself
@pytest.mark.parametrize(("override", "expected"), [
    # Called inside trainer.fit (a traceback, before); errors raised while Hydra builds a node (its four-line
    # wrapper, before) print through the same led.entry.run_job, tested in-process above.
    ("optimizer.lr=-1", 'error: optimizer.lr=-1 is not valid: torch.optim.AdamW says "Invalid learning rate: -1"'),
])
def test_train_py_prints_one_line_and_a_traceback_only_when_asked(override: str, expected: str, tmp_path: Path,
                                                                  corpus: Path, tokenizer_dir: Path) -> None:
    overrides = [*tiny(corpus, tokenizer_dir, override), f"hydra.run.dir={tmp_path / 'run'}"]
    result = run_train_py(*overrides)
    assert result.returncode == 1
    assert one_error_line(result.stderr, "error: ").startswith(expected)
    assert "Error executing job" not in result.stderr and "Error in call to target" not in result.stderr
    if override.startswith("optimizer"):
        full = run_train_py(*overrides, env={**ENV, "HYDRA_FULL_ERROR": "1"})
        assert full.returncode == 1 and "Traceback" in full.stderr and "Invalid learning rate: -1" in full.stderr


# ---------------------------------------------------------------------------------------------- the helper itself
def test_a_bug_in_our_code_keeps_its_traceback(tmp_path: Path, corpus: Path, tokenizer_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A ValueError raised by a led module is ours: it stays what it is (Hydra's wrapper, its cause chained), and
    train.py shows its traceback."""
    from led.models import families

    node = {"_target_": "led.models.families.family", "model_type": "nope"}
    with pytest.raises(InstantiationException) as caught:
        build("model", node)
    assert type(caught.value.__cause__) is ValueError
    with pytest.raises(ValueError) as direct:
        with receiving("model", node):
            families.family("nope")
    assert type(direct.value) is ValueError  # not turned into a ConfigError

    # As if the DataModule had a bug: a led function it calls raises a ValueError while Hydra builds it.
    monkeypatch.setattr("led.data.datamodule._resolve_tokenizer_path", lambda *_: families.family("nope"))
    with pytest.raises(InstantiationException) as in_train:
        run_job(train, make_config(tmp_path, *tiny(corpus, tokenizer_dir)))
    assert "model_type='nope' is not a family" in str(in_train.value.__cause__)


@pytest.mark.parametrize(("node", "message", "expected"), [
    ({"_target_": "x.Y", "lr": -1, "eps": 1}, "Invalid learning rate: -1", "node.lr=-1 is not valid: x.Y says"),
    # -1 is inside neither 1e-1 nor 10.1; two values quoted: the one whose key the message names.
    ({"_target_": "x.Y", "a": 1, "b": 0.1}, "got 1e-1 and 10.1", "node (x.Y with a=1, b=0.1) is not valid"),
    ({"_target_": "x.Y", "top_k": -2, "n": -2}, "Invalid value for top_k=-2.", "node.top_k=-2 is not valid"),
    ({"_target_": "x.Y", "mode": "maxx"}, "first line\nsecond line", 'node (x.Y with mode=\'maxx\') is not valid: '
                                                                     'x.Y says "first line"'),
])
def test_refusal_names_the_quoted_setting_else_the_node(node: dict[str, Any], message: str, expected: str) -> None:
    error = refusal("node", node, ValueError(message))
    assert str(error).startswith(expected) and "\n" not in str(error)


# ---------------------------------------------------------------------------------------------- the other entry points
def test_evaluate_refusals_are_one_line(tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    data = [f"+data.test_file={write_test_split(tmp_path)}", *EVAL_DATA]
    line = job_error(evaluate, eval_config(tmp_path, f"ckpt_path={model_dir}", *data, "generation.num_beams=0"), capsys)
    assert "generation.num_beams=0 is invalid: it must be an integer >= 1" in line
    line = job_error(evaluate, eval_config(tmp_path, f"ckpt_path={model_dir}", *data, "+data.batch_size=0"), capsys)
    assert "batch_size=0 must be >= 1" in line


def test_stats_refusal_while_building_the_datamodule_is_one_line(tmp_path: Path, corpus: Path, tokenizer_dir: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    from led.stats import main

    overrides = tiny(corpus, tokenizer_dir, "data.batch_size=0")
    line = tool_error(main, "led.stats", [*overrides, f"output_dir={tmp_path / 'stats'}"], capsys)
    assert "batch_size=0 must be >= 1" in line


def test_memory_prepare_and_report_refusals_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from led.memory.__main__ import main as memory_main
    from led.prepare import main as prepare_main
    from led.report.__main__ import main as report_main

    assert "strategy=single is one device" in tool_error(memory_main, "led.memory", ["devices=2"], capsys)
    assert "dataset='/no/such/data' does not exist" in tool_error(
        prepare_main, "led.prepare", ["dataset=/no/such/data", f"out={tmp_path / 'out'}"], capsys)
    assert "is none of a training run" in tool_error(report_main, "led.report", [str(tmp_path)], capsys)


# ---------------------------------------------------------------------------------------------- corrupt files
def corrupt_copy(source: Path, tmp_path: Path, name: str, content: str | bytes, remove: tuple[str, ...] = ()) -> Path:
    """A copy of the directory `source` with its file `name` replaced by `content` (and `remove` deleted)."""
    copy = tmp_path / f"corrupt-{name}"
    shutil.copytree(source, copy)
    (copy / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    for other in remove:
        (copy / other).unlink(missing_ok=True)
    return copy


TOKENIZER_FILES = {
    "tokenizer.json": (CORRUPT_JSON, (), "tokenizer.json cannot be read: it is not valid JSON (EOF while parsing a "
                                         "string at line 1 column 11); give a tokenizer directory written by train.py"),
    "tokenizer.json of another format": ('{"model": 1}', (), "tokenizer.json cannot be read: it is not in the format "
                                                            "the tokenizers library reads"),
    "vocab.json": (CORRUPT_JSON, ("tokenizer.json",), "vocab.json cannot be read: it is not valid JSON (EOF while "
                                                     "parsing a string at line 1 column 11)"),
    "merges.txt": ("#version: 0.2\nnot-a-token another\n", ("tokenizer.json",),
                   "merges.txt cannot be read with"),
}
TOKENIZER_PATHS = ("train data.tokenizer=", "evaluate ckpt_path=", "export tokenizer=", "prepare tokenizer=",
                   "stats data.tokenizer=")


@pytest.mark.parametrize("path", TOKENIZER_PATHS)
@pytest.mark.parametrize("case", list(TOKENIZER_FILES))
def test_corrupt_tokenizer_file_is_one_line_on_every_path(case: str, path: str, tmp_path: Path, corpus: Path,
                                                          tokenizer_dir: Path, model_dir: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    content, remove, expected = TOKENIZER_FILES[case]
    name = case.split()[0]
    if path == "evaluate ckpt_path=":
        model = corrupt_copy(model_dir, tmp_path, name, content, remove)
        cfg = eval_config(tmp_path, f"ckpt_path={model}", f"+data.test_file={write_test_split(tmp_path)}", *EVAL_DATA)
        line = job_error(evaluate, cfg, capsys)
    else:
        bad = corrupt_copy(tokenizer_dir, tmp_path, name, content, remove)
        line = tokenizer_path_error(path, bad, tmp_path, corpus, tokenizer_dir, capsys)
    assert expected in line and name in line, line


def tokenizer_path_error(path: str, bad: Path, tmp_path: Path, corpus: Path, tokenizer_dir: Path,
                         capsys: pytest.CaptureFixture) -> str:
    if path == "train data.tokenizer=":
        return job_error(train, make_config(tmp_path, *tiny(corpus, tokenizer_dir, f"data.tokenizer={bad}")), capsys)
    if path == "export tokenizer=":
        from led.export import main

        return tool_error(main, "led.export", [f"ckpt_path={lightning_checkpoint(tmp_path)}", f"out={tmp_path / 'x'}",
                                               f"tokenizer={bad}"], capsys)
    if path == "prepare tokenizer=":
        from led.prepare import main

        (tmp_path / "data").mkdir()
        write_test_split(tmp_path).rename(tmp_path / "data" / "train.jsonl")
        return tool_error(main, "led.prepare", [f"dataset={tmp_path / 'data'}", f"out={tmp_path / 'prepared'}",
                                                f"tokenizer={bad}", "splits=[train]"], capsys)
    from led.stats import main

    overrides = tiny(corpus, tokenizer_dir, f"data.tokenizer={bad}")
    return tool_error(main, "led.stats", [*overrides, f"output_dir={tmp_path / 'stats'}"], capsys)


def lightning_checkpoint(tmp_path: Path) -> Path:
    """A small checkpoint with LEDSummarizer's keys (export reads no more of it before the tokenizer)."""
    from led import LEDConfig, LEDForConditionalGeneration

    model = LEDForConditionalGeneration(LEDConfig(vocab_size=400, d_model=16, encoder_layers=1, decoder_layers=1,
                                                  encoder_attention_heads=2, decoder_attention_heads=2,
                                                  encoder_ffn_dim=32, decoder_ffn_dim=32, attention_window=8,
                                                  max_encoder_position_embeddings=64,
                                                  max_decoder_position_embeddings=16))
    path = tmp_path / "small.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"model": {"size": "tiny"}, "tokenizer": None, "generation": None},
                "model_config": model.config.to_dict()}, path)
    return path


MODEL_FILES = {
    "config.json": ("config.json", CORRUPT_JSON, (), "config.json cannot be read: it is not valid JSON"),
    "config.json not an object": ("config.json", "[1, 2]", (), "config.json cannot be read: it holds a JSON list"),
    "model.safetensors": ("model.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":", (),
                          "model.safetensors cannot be read: it is not a whole safetensors file (Error while "
                          "deserializing header"),
    "pytorch_model.bin": ("pytorch_model.bin", b"PK\x03\x04 cut short", ("model.safetensors",),
                          "pytorch_model.bin cannot be read as a PyTorch weights file"),
}
MODEL_PATHS = ("train model.pretrained=", "evaluate ckpt_path=", "memory model=")  # led.memory reads config.json only


@pytest.mark.parametrize(("case", "path"), [(case, path) for case in MODEL_FILES for path in MODEL_PATHS
                                             if path != "memory model=" or MODEL_FILES[case][0] == "config.json"])
def test_corrupt_model_file_is_one_line_on_every_path(case: str, path: str, tmp_path: Path, corpus: Path,
                                                      tokenizer_dir: Path, model_dir: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    name, content, remove, expected = MODEL_FILES[case]
    bad = corrupt_copy(model_dir, tmp_path, name, content, remove)
    if path == "train model.pretrained=":
        line = job_error(train, make_config(tmp_path, *tiny(corpus, tokenizer_dir, f"model.pretrained={bad}")), capsys)
    elif path == "evaluate ckpt_path=":
        cfg = eval_config(tmp_path, f"ckpt_path={bad}", f"+data.test_file={write_test_split(tmp_path)}", *EVAL_DATA)
        line = job_error(evaluate, cfg, capsys)
    else:
        from led.memory.__main__ import main

        line = tool_error(main, "led.memory", [f"model={bad}"], capsys)
    assert expected in line and name in line, line


CKPT_PATHS = ("train ckpt_path=", "evaluate ckpt_path=", "export ckpt_path=", "memory model=")


@pytest.mark.parametrize("path", CKPT_PATHS)
@pytest.mark.parametrize("damage", ["cut short", "not a checkpoint"])
def test_corrupt_lightning_checkpoint_is_one_line_on_every_path(damage: str, path: str, tmp_path: Path, corpus: Path,
                                                                tokenizer_dir: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    checkpoint = lightning_checkpoint(tmp_path)
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2] if damage == "cut short" else b"not a zip archive at all")
    if path == "train ckpt_path=":
        line = job_error(train, make_config(tmp_path, *tiny(corpus, tokenizer_dir, f"ckpt_path={checkpoint}")), capsys)
    elif path == "evaluate ckpt_path=":
        line = job_error(evaluate, eval_config(tmp_path, f"ckpt_path={checkpoint}", *EVAL_DATA), capsys)
    elif path == "export ckpt_path=":
        from led.export import main

        line = tool_error(main, "led.export", [f"ckpt_path={checkpoint}", f"out={tmp_path / 'x'}"], capsys)
    else:
        from led.memory.__main__ import main

        line = tool_error(main, "led.memory", [f"model={checkpoint}"], capsys)
        assert str(checkpoint) in line and "is not a checkpoint written by train.py" in line, line
        return
    assert str(checkpoint) in line and "cut short" in line, line


def test_corrupt_predictions_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    predictions = tmp_path / "predictions.parquet"
    predictions.write_bytes(b"PAR1 this is not a parquet file")
    line = job_error(evaluate, eval_config(tmp_path, f"predictions={predictions}"), capsys)
    assert f"predictions={str(predictions)!r}" in line, line


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    """A directory written by `python -m led.prepare` (raw split, tokenizer, tokenised split)."""
    from led.prepare import main

    tmp = tmp_path_factory.mktemp("prepare")
    (tmp / "data").mkdir()
    write_test_split(tmp).rename(tmp / "data" / "train.jsonl")
    main([f"dataset={tmp / 'data'}", f"out={tmp / 'prepared'}", f"tokenizer={tokenizer_dir}", "splits=[train]",
          "max_input_length=16", "max_target_length=8"])
    return tmp / "prepared"


PREPARED_FILES = {
    "led_prepared.json": ("led_prepared.json cannot be read (JSONDecodeError: "),
    "led_prepared.json without splits": ("led_prepared.json cannot be read (KeyError: "),
    "dataset_info.json": ("the tokenised train split"),
    "state.json": ("the tokenised train split"),
    "data-00000-of-00001.arrow": ("the tokenised train split"),
}
PREPARED_PATHS = ("datamodule (train, stats)", "evaluate +data.source=")


@pytest.mark.parametrize("path", PREPARED_PATHS)
@pytest.mark.parametrize("case", list(PREPARED_FILES))
def test_corrupt_prepared_directory_is_one_line(case: str, path: str, tmp_path: Path, prepared: Path,
                                                model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from led.data.datamodule import SummarizationDataModule
    from led.errors import DataError

    copy = tmp_path / "prepared"
    shutil.copytree(prepared, copy)
    name = case.split()[0]
    # The tokenised split's own files (the json reader's cache beside it has a dataset_info.json too).
    files = [copy / name] if name == "led_prepared.json" else [
        path for path in copy.rglob(name) if (path.parent / "state.json").is_file()]
    assert len(files) == 1, case
    files[0].write_text('{"data_id": "x"}' if "without" in case else CORRUPT_JSON)
    expected = PREPARED_FILES[case]
    if path == "evaluate +data.source=":
        cfg = eval_config(tmp_path, f"ckpt_path={model_dir}", f"+data.source={copy}", "split=train", *EVAL_DATA)
        line = job_error(evaluate, cfg, capsys)
    else:
        with pytest.raises(DataError) as caught:
            SummarizationDataModule(source=str(copy), max_input_length=16, max_target_length=8).setup("fit")
        line = str(caught.value)
    assert expected in line and "\n" not in line, line
    assert "led.prepare" in line or "delete that folder" in line


def test_a_corrupt_file_through_train_py_is_one_line(tmp_path: Path, corpus: Path, tokenizer_dir: Path) -> None:
    bad = corrupt_copy(tokenizer_dir, tmp_path, "tokenizer.json", CORRUPT_JSON)
    result = run_train_py(*tiny(corpus, tokenizer_dir, f"data.tokenizer={bad}"), f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 1
    assert f"{bad}/tokenizer.json cannot be read: it is not valid JSON" in one_error_line(result.stderr, "error: ")


def test_a_corrupt_file_through_python_m_led_export_is_one_line(tmp_path: Path, tokenizer_dir: Path) -> None:
    bad = corrupt_copy(tokenizer_dir, tmp_path, "tokenizer.json", CORRUPT_JSON)
    result = subprocess.run([sys.executable, "-m", "led.export", f"ckpt_path={lightning_checkpoint(tmp_path)}",
                             f"out={tmp_path / 'x'}", f"tokenizer={bad}"], capture_output=True, text=True,
                            timeout=300, env=ENV, cwd=ROOT, check=False)
    assert result.returncode == 2
    assert "tokenizer.json cannot be read" in one_error_line(result.stderr, "led.export: error: ")
