"""The training framework: Hydra configs compose, every experiment fits a few steps with tiny overrides,
the default run writes its outputs, and the LightningModule's pieces (schedules, decay groups, label
smoothing, non-finite losses) behave."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from led.errors import DataError
from led.recipes.train import train
from led.training.module import (
    LEDSummarizer,
    NonFiniteLossError,
    lr_lambda,
    parameter_groups,
)

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))

# A corpus small enough for seconds: ~15-25 sentence reports, a few records per split.
TINY_CORPUS = ["data.synthetic.train=12", "data.synthetic.short_train=0", "data.synthetic.validation=4", "data.synthetic.test=2",
               "data.synthetic.min_sentences=15", "data.synthetic.max_sentences=25",
               "data.tokenizer_vocab_size=400", "data.max_input_length=512", "data.batch_size=2",
               "data.eval_batch_size=4"]
TINY_MODEL = ["model.attention_window=32", "+model.overrides.max_encoder_position_embeddings=1024",
              "+model.overrides.max_decoder_position_embeddings=128"]
FEW_STEPS = ["trainer.max_steps=3", "trainer.val_check_interval=3", "trainer.log_every_n_steps=1",
             "trainer.enable_progress_bar=false", "module.val_rouge_examples=2", "generation.num_beams=2",
             "generation.max_new_tokens=6"]


def make_config(tmp_path: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=False)
    with open_dict(cfg):
        cfg.run_dir = str(tmp_path / "run")  # ${hydra:runtime.output_dir} needs a running Hydra app
    return cfg


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("synthetic")


def test_default_run_writes_metrics_checkpoints_and_config(tmp_path: Path, corpus: Path) -> None:
    cfg = make_config(tmp_path, f"data.synthetic.dir={corpus}", *TINY_CORPUS, *TINY_MODEL, *FEW_STEPS)
    metrics = train(cfg)
    run = tmp_path / "run"
    saved = json.loads((run / "metrics.json").read_text())
    assert saved == metrics
    for name in ("loss", "rouge1", "rouge2", "rougeL", "rougeLsum", "lead_rouge1"):
        assert math.isfinite(saved[name]), name
    assert saved["global_step"] == 3
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "tokenizer" / "tokenizer.json").is_file()
    assert "attention_window: 32" in (run / "config.yaml").read_text()  # resolved, with the overrides
    assert (run / "csv" / "metrics.csv").read_text().count("train/loss") == 1

    # evaluate.py takes the Lightning checkpoint: it finds the tokenizer and the data settings in it.
    out = tmp_path / "eval"
    result = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
         f"output_dir={out}", "split=validation", "rouge.bootstrap=20", "generation.num_beams=2",
         "generation.max_length=8", "generation.min_length=0"],
        capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 4 and all(p["reference"].startswith("- ") for p in predictions)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_fits_with_tiny_overrides(experiment: str, tmp_path: Path, corpus: Path) -> None:
    # The experiment's own data settings stay (fields, global attention...); only the source and sizes shrink.
    cfg = make_config(
        tmp_path, f"experiment={experiment}", "model.pretrained=null", "model.size=tiny", "model.vocab_size=400",
        "model.gradient_checkpointing=true", "trainer.accelerator=cpu", "logger=csv", "data=synthetic",
        f"data.synthetic.dir={corpus}", *TINY_CORPUS, "data.max_target_length=32", "data.num_workers=0",
        "data.num_proc=null", *TINY_MODEL, *FEW_STEPS, "trainer.limit_val_batches=1", "generation.min_length=0",
    )
    assert cfg.trainer.precision == "bf16-mixed" and cfg.optimizer.lr == 3e-5  # the recipe survived
    metrics = train(cfg)
    assert metrics["global_step"] == 3 and math.isfinite(metrics["loss"])


def test_experiments_compose_with_their_published_recipe(tmp_path: Path) -> None:
    for experiment in EXPERIMENTS:
        cfg = make_config(tmp_path, f"experiment={experiment}")
        size = "large" if "large" in experiment else "base"
        assert cfg.model.pretrained == f"allenai/led-{size}-16384"
        assert (cfg.data.max_input_length, cfg.data.max_target_length) == (16384, 512)
        assert cfg.model.gradient_checkpointing and cfg.trainer.precision == "bf16-mixed"
        first_line = (ROOT / "conf" / "experiment" / f"{experiment}.yaml").read_text().splitlines()[1]
        assert first_line == f"# python train.py experiment={experiment}"


def test_lengths_beyond_the_model_fail_before_any_work(tmp_path: Path, corpus: Path) -> None:
    cfg = make_config(tmp_path, f"data.synthetic.dir={corpus}", *TINY_CORPUS, *TINY_MODEL,
                      "data.max_input_length=5000")
    with pytest.raises(DataError, match=r"data.max_input_length=5000 exceeds the model's 1024 encoder positions"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_wandb_logs_offline_without_a_key(tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_config(tmp_path, "logger=wandb", f"data.synthetic.dir={corpus}", *TINY_CORPUS, *TINY_MODEL,
                      *FEW_STEPS)
    train(cfg)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert "WANDB_API_KEY" not in (tmp_path / "run" / "config.yaml").read_text()


# ------------------------------------------------------------------------------------ module pieces
def test_schedules_warm_up_then_decay() -> None:
    linear = lr_lambda(110, "linear", warmup_steps=10)
    assert [linear(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert linear(60) == pytest.approx(0.5) and linear(110) == 0.0
    cosine = lr_lambda(100, "cosine", warmup_ratio=0.1, min_lr_ratio=0.1)
    assert cosine(10) == pytest.approx(1.0) and cosine(55) == pytest.approx(0.55) and cosine(100) == pytest.approx(0.1)
    constant = lr_lambda(100, "constant", warmup_steps=4)
    assert constant(1) == 0.5 and constant(99) == 1.0
    with pytest.raises(ValueError, match="scheduler.name='step' is not one of linear, cosine, constant"):
        lr_lambda(10, "step")


def tiny_module(**kwargs: object) -> LEDSummarizer:
    torch.manual_seed(0)
    model = dict(size="tiny", attention_window=8, vocab_size=64,
                 overrides=dict(d_model=16, encoder_ffn_dim=32, decoder_ffn_dim=32, max_encoder_position_embeddings=64,
                                max_decoder_position_embeddings=16, encoder_attention_heads=2,
                                decoder_attention_heads=2, dropout=0.0))
    return LEDSummarizer(model=model, optimizer=dict(name="adamw", lr=1e-3), scheduler=dict(name="constant"),
                         **kwargs)


def tiny_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(4, 64, (2, 16), generator=generator)
    labels = torch.randint(4, 64, (2, 5), generator=generator)
    labels[1, 3:] = -100
    return dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels,
                global_attention_mask=torch.zeros_like(input_ids), ids=torch.tensor([7, 9]))


def test_no_weight_decay_on_biases_and_layer_norms() -> None:
    module = tiny_module()
    decay, no_decay = parameter_groups(module.model, 0.1)
    names = {id(p): n for n, p in module.model.named_parameters()}
    assert all(names[id(p)].endswith("bias") or "layer_norm" in names[id(p)] or "layernorm" in names[id(p)]
               for p in no_decay["params"])
    assert all(p.dim() == 2 for p in decay["params"])
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(module.model.parameters()))


def test_label_smoothing_loss() -> None:
    batch = tiny_batch()
    smoothed = tiny_module(label_smoothing=0.1)
    logits = smoothed.model(batch["input_ids"], batch["attention_mask"], labels=batch["labels"]).logits
    expected = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100, label_smoothing=0.1)
    torch.testing.assert_close(smoothed._loss(batch, 0.1), expected)
    assert not torch.allclose(smoothed._loss(batch, 0.0), expected)


def test_non_finite_loss_stops_with_step_and_ids_or_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    batch = tiny_batch()
    module = tiny_module()
    monkeypatch.setattr(module, "_loss_sum", lambda *_: (torch.tensor(float("nan")), torch.tensor(7)))
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 0 on the batch with ids \[7, 9\]"):
        module.training_step(batch, 0)
    skipping = tiny_module(on_nonfinite="skip")
    monkeypatch.setattr(skipping, "_loss_sum", lambda *_: (torch.tensor(float("inf")), torch.tensor(7)))
    monkeypatch.setattr(skipping, "log", lambda *_, **__: None)
    assert skipping.training_step(batch, 0) is None and skipping.skipped_batches == 1


def test_bad_module_settings_name_the_field() -> None:
    with pytest.raises(ValueError, match="optimizer.name='sgd' is not one of adamw, adafactor"):
        LEDSummarizer(model=dict(size="tiny"), optimizer=dict(name="sgd", lr=1.0), scheduler=dict(name="linear"))
    with pytest.raises(ValueError, match="label_smoothing=1.5 must be in"):
        tiny_module(label_smoothing=1.5)
