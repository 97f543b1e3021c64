"""The training framework: Hydra configs compose, every experiment fits a few steps with tiny overrides,
the default run writes its outputs, and the LightningModule's pieces (schedules, decay groups, label
smoothing, non-finite losses) behave."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from led.errors import DataError
from led.recipes.train import train
from led.training import schedules
from led.training.module import (
    LEDSummarizer,
    NonFiniteLossError,
    parameter_groups,
)

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))

# A corpus small enough for seconds: ~15-25 sentence reports, a few records per split.
TINY_CORPUS = ["data.synthetic.train=12", "data.synthetic.short_train=0", "data.synthetic.validation=4", "data.synthetic.test=2",
               "data.synthetic.min_sentences=15", "data.synthetic.max_sentences=25",
               "data.tokenizer_vocab_size=400", "data.max_input_length=512", "data.batch_size=2",
               "data.eval_batch_size=4"]
# Each family's model, shrunk for seconds: FAMILY_SIZES[family] is its smallest named size (and conf/model option),
# SHRINK[family] what makes it smaller still; FAMILY_MODELS[family] picks the family's tiny model. The framework
# tests run for every family (parametrised with FAMILIES); TINY_MODEL is the default model=tiny (LED).
FAMILIES = ["led", "pegasus_x"]
FAMILY_SIZES = {"led": "tiny", "pegasus_x": "pegasus-x-tiny"}
SHRINK = {"led": ["model.attention_window=32", "+model.overrides.max_encoder_position_embeddings=1024",
                  "+model.overrides.max_decoder_position_embeddings=128"],
          "pegasus_x": ["+model.overrides.block_size=32"]}
FAMILY_MODELS = {"led": SHRINK["led"], "pegasus_x": ["model=pegasus_x_tiny", *SHRINK["pegasus_x"]]}
TINY_MODEL = FAMILY_MODELS["led"]
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


def test_logger_none_trains_with_the_default_callbacks(tmp_path: Path, corpus: Path) -> None:
    """The default callbacks hold a learning-rate monitor, which Lightning refuses without a logger: it is left out."""
    cfg = make_config(tmp_path, f"data.synthetic.dir={corpus}", *TINY_CORPUS, *TINY_MODEL, *FEW_STEPS, "logger=none")
    assert train(cfg)["global_step"] == 3
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file() and not (tmp_path / "run" / "csv").exists()


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


def test_loss_only_validation_keeps_the_best_checkpoint_by_loss(tmp_path: Path, corpus: Path) -> None:
    """module.val_rouge_examples=0: validation computes the loss alone, and the best checkpoint (which watches
    val/rouge1 by default) is chosen by val/loss, and the run trains on past its first validation."""
    steps = [o for o in FEW_STEPS if not o.startswith("module.val_rouge_examples=")]
    cfg = make_config(tmp_path, f"data.synthetic.dir={corpus}", *TINY_CORPUS, *TINY_MODEL, *steps,
                      "module.val_rouge_examples=0")
    metrics = train(cfg)
    assert "rouge1" not in metrics and math.isfinite(metrics["loss"]) and metrics["global_step"] == 3
    best = [p.name for p in (tmp_path / "run" / "checkpoints").glob("step*.ckpt")]
    assert len(best) == 1 and best[0].startswith("step3-loss"), best
    assert abs(float(best[0].removeprefix("step3-loss").removesuffix(".ckpt")) - metrics["loss"]) < 1e-3


# What each family's experiments keep of their published recipe (the first comment of conf/experiment/*.yaml): the
# pretrained model, lengths, optimizer, label smoothing and generation settings, and the learning rate by dataset.
RECIPES = {
    "led": dict(pretrained="allenai/led-{size}-16384", lengths=(16384, 512), optimizer="torch.optim.AdamW",
                scheduler="led.training.schedules.linear", label_smoothing=0.0, lr={"arxiv": 3e-5, "pubmed": 3e-5},
                generation={"num_beams": 4, "max_new_tokens": 511, "min_length": 100, "length_penalty": 2.0,
                            "no_repeat_ngram_size": 3, "early_stopping": True}),
    "pegasus_x": dict(pretrained="google/pegasus-x-{size}", lengths=(16384, 256), optimizer="torch.optim.Adafactor",
                      scheduler="led.training.schedules.constant", label_smoothing=0.1,
                      lr={"arxiv": 8e-4, "pubmed": 2e-4},
                      generation={"num_beams": 8, "max_new_tokens": 255, "length_penalty": 0.8,
                                  "no_repeat_ngram_size": 0, "early_stopping": True}),
}


def experiment_family(experiment: str, tmp_path: Path) -> str:
    """The family of the model an experiment trains, as the framework finds it: by its size's name."""
    from led.models.families import family_of_size

    return family_of_size(make_config(tmp_path, f"experiment={experiment}").model.size).model_type


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_fits_with_tiny_overrides(experiment: str, tmp_path: Path, corpus: Path) -> None:
    # The experiment's own data settings stay (fields, global attention...); only the source and sizes shrink, to
    # the tiny model of the experiment's family.
    family = experiment_family(experiment, tmp_path)
    cfg = make_config(
        tmp_path, f"experiment={experiment}", "model.pretrained=null", f"model.size={FAMILY_SIZES[family]}",
        "model.vocab_size=400", "model.gradient_checkpointing=true", "trainer.accelerator=cpu", "logger=csv",
        "data=synthetic", f"data.synthetic.dir={corpus}", *TINY_CORPUS, "data.max_target_length=32",
        "data.num_workers=0", "data.num_proc=null", *SHRINK[family], *FEW_STEPS, "trainer.limit_val_batches=1",
        "++generation.min_length=0",
    )
    recipe = RECIPES[family]
    dataset = experiment.split("_")[0]
    assert cfg.trainer.precision == "bf16-mixed" and cfg.optimizer.lr == recipe["lr"][dataset]  # the recipe survived
    metrics = train(cfg)
    assert metrics["global_step"] == 3 and math.isfinite(metrics["loss"])
    # The checkpoint stores the model's family and the generation settings it was validated with: evaluate.py and
    # led.export use them.
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["model_config"]["model_type"] == family
    assert checkpoint["hyper_parameters"]["generation"] == OmegaConf.to_container(cfg.generation)
    # the recipe's, not overridden
    assert checkpoint["hyper_parameters"]["generation"]["length_penalty"] == recipe["generation"]["length_penalty"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_compose_with_their_published_recipe(experiment: str, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, f"experiment={experiment}")
    family = experiment_family(experiment, tmp_path)
    assert family in experiment  # arxiv_led_base, pubmed_pegasus_x_base, ...
    recipe = RECIPES[family]
    size = "large" if "large" in experiment else "base"
    assert cfg.model.pretrained == recipe["pretrained"].format(size=size)
    assert (cfg.data.max_input_length, cfg.data.max_target_length) == recipe["lengths"]
    assert cfg.model.gradient_checkpointing and cfg.trainer.precision == "bf16-mixed"
    assert (cfg.optimizer._target_, cfg.scheduler._target_) == (recipe["optimizer"], recipe["scheduler"])
    assert cfg.optimizer.lr == recipe["lr"][experiment.split("_")[0]]
    assert cfg.module.label_smoothing == recipe["label_smoothing"]
    first_line = (ROOT / "conf" / "experiment" / f"{experiment}.yaml").read_text().splitlines()[1]
    assert first_line == f"# python train.py experiment={experiment}"
    # The published generation settings: validation uses them, the checkpoint stores them, and evaluate.py and
    # the exported generation_config.json take them from there.
    generation = {k: v for k, v in OmegaConf.to_container(cfg.generation).items() if not k.startswith("_")}
    assert generation == recipe["generation"]


def test_lengths_beyond_the_model_fail_before_any_work(tmp_path: Path, corpus: Path) -> None:
    cfg = make_config(tmp_path, f"data.synthetic.dir={corpus}", *TINY_CORPUS, *TINY_MODEL,
                      "data.max_input_length=5000")
    with pytest.raises(DataError, match=r"data.max_input_length=5000 exceeds the model's 1024 encoder positions"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert not (tmp_path / "run" / "tokenizer").exists()  # checked before the tokenizer is trained, not after


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
    linear = schedules.linear(110, warmup_steps=10)
    assert [linear(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert linear(60) == pytest.approx(0.5) and linear(110) == 0.0
    cosine = schedules.cosine(100, warmup_ratio=0.1, min_lr_ratio=0.1)
    assert cosine(10) == pytest.approx(1.0) and cosine(55) == pytest.approx(0.55) and cosine(100) == pytest.approx(0.1)
    constant = schedules.constant(100, warmup_steps=4)
    assert constant(1) == 0.5 and constant(99) == 1.0
    with pytest.raises(ValueError, match="set scheduler.warmup_steps or scheduler.warmup_ratio, not both"):
        schedules.linear(10, warmup_steps=1, warmup_ratio=0.1)


# A model of each family small enough for a few Lightning steps in a second: 16 channels, vocabulary 64.
TINY_MODULE_MODELS = {
    "led": dict(size="tiny", attention_window=8, overrides=dict(max_encoder_position_embeddings=64,
                                                                 max_decoder_position_embeddings=16)),
    "pegasus_x": dict(size="pegasus-x-tiny", overrides=dict(block_size=8, num_global_tokens=2)),
}


def tiny_module(family: str = "led", **kwargs: object) -> LEDSummarizer:
    torch.manual_seed(0)
    node = TINY_MODULE_MODELS[family]
    model = dict(node, _target_="led.training.module.build_model", vocab_size=64,
                 overrides=dict(node["overrides"], d_model=16, encoder_ffn_dim=32, decoder_ffn_dim=32,
                                encoder_attention_heads=2, decoder_attention_heads=2, dropout=0.0))
    return LEDSummarizer(model=model, optimizer=dict(_target_="torch.optim.AdamW", _partial_=True, lr=1e-3),
                         scheduler=dict(_target_="led.training.schedules.constant", _partial_=True), generation=None,
                         tokenizer=None, **kwargs)


def without_global_mask(batch: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """The batch as the DataModule makes it for `family`: a global attention mask for LED only."""
    return batch if family == "led" else {k: v for k, v in batch.items() if k != "global_attention_mask"}


def tiny_batch(family: str = "led") -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(4, 64, (2, 16), generator=generator)
    labels = torch.randint(4, 64, (2, 5), generator=generator)
    labels[1, 3:] = -100
    return without_global_mask(dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels,
                                     global_attention_mask=torch.zeros_like(input_ids), ids=torch.tensor([7, 9])),
                               family)


@pytest.mark.parametrize("family", FAMILIES)
def test_no_weight_decay_on_biases_and_layer_norms(family: str) -> None:
    module = tiny_module(family)
    decay, no_decay = parameter_groups(module.model, 0.1)
    names = {id(p): n for n, p in module.model.named_parameters()}
    assert all(names[id(p)].endswith("bias") or "layer_norm" in names[id(p)] or "layernorm" in names[id(p)]
               for p in no_decay["params"])
    assert all(p.dim() == 2 for p in decay["params"])
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(module.model.parameters()))


@pytest.mark.parametrize("family", FAMILIES)
def test_label_smoothing_loss(family: str) -> None:
    batch = tiny_batch(family)
    smoothed = tiny_module(family, label_smoothing=0.1)
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
    with pytest.raises(ValueError, match="on_nonfinite='ignore' is not one of stop, skip"):
        tiny_module(on_nonfinite="ignore")
    with pytest.raises(ValueError, match="label_smoothing=1.5 must be in"):
        tiny_module(label_smoothing=1.5)


def test_optimizer_node_builds_the_configured_optimizer_over_the_decay_groups(tmp_path: Path) -> None:
    """conf/optimizer/adamw.yaml through the LightningModule: AdamW with the config's values (betas a tuple), the
    decay group first, and the linear schedule called with the run's steps."""
    cfg = make_config(tmp_path)
    module = tiny_module()
    module.hparams.optimizer = OmegaConf.to_container(cfg.optimizer)
    module.hparams.scheduler = OmegaConf.to_container(cfg.scheduler)
    module._trainer = SimpleNamespace(estimated_stepping_batches=100)  # type: ignore[assignment]
    configured = module.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert type(optimizer) is torch.optim.AdamW
    decay, no_decay = optimizer.param_groups
    assert (decay["lr"], decay["betas"], decay["eps"]) == (5e-4 * 1 / 50, (0.9, 0.999), 1e-8)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.01, 0.0)
    assert [len(decay["params"]), len(no_decay["params"])] == [len(g["params"])
                                                              for g in parameter_groups(module.model, 0.01)]
    assert scheduler.lr_lambdas[0](49) == 1.0 and scheduler.lr_lambdas[0](100) == 0.0


def _batch(rows: list[tuple[list[int], list[int]]], ids: list[int], family: str) -> dict[str, torch.Tensor]:
    """A batch as the DataModule's collator builds it: inputs padded with 1 to 16 tokens, labels with -100."""
    inputs = torch.full((len(rows), 16), 1)
    labels = torch.full((len(rows), max(len(target) for _, target in rows)), -100)
    for row, (source, target) in enumerate(rows):
        inputs[row, : len(source)] = torch.tensor(source)
        labels[row, : len(target)] = torch.tensor(target)
    return without_global_mask(dict(input_ids=inputs, attention_mask=(inputs != 1).long(), labels=labels,
                                    global_attention_mask=torch.zeros_like(inputs), ids=torch.tensor(ids)), family)


def _weights_after_one_step(batches: list[dict[str, torch.Tensor]], accumulate: int,
                            family: str) -> dict[str, torch.Tensor]:
    import lightning as L

    # SGD: its step is proportional to the gradient (Adam's first step is nearly sign(g), blind to weighting).
    module = tiny_module(family)
    module.hparams.optimizer = dict(_target_="torch.optim.SGD", _partial_=True, lr=1.0)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, accumulate_grad_batches=accumulate, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    return {name: value.detach().clone() for name, value in module.model.state_dict().items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_accumulation_is_the_mean_over_all_target_tokens(family: str) -> None:
    # Two short summaries (2 tokens) and two long ones (12): a mean of the micro-batches' means would weight each
    # short-summary token 6x a long-summary one.
    generator = torch.Generator().manual_seed(1)
    rows = [(torch.randint(4, 64, (length,), generator=generator).tolist(),
             torch.randint(4, 64, (target,), generator=generator).tolist())
            for length, target in ((14, 2), (10, 2), (16, 12), (12, 12))]
    whole = _weights_after_one_step([_batch(rows, [0, 1, 2, 3], family)], accumulate=1, family=family)
    accumulated = _weights_after_one_step([_batch(rows[:2], [0, 1], family), _batch(rows[2:], [2, 3], family)],
                                          accumulate=2, family=family)
    start = tiny_module(family).model.state_dict()
    moved = max((whole[name] - start[name]).abs().max().item() for name in whole)
    difference = max((whole[name] - accumulated[name]).abs().max().item() for name in whole)
    assert moved > 1e-3  # the step changed the weights
    assert difference < 1e-6, difference


def test_resuming_with_other_settings_names_them(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from led.recipes.train import report_changed_settings, save_resolved_config

    saved = tmp_path / "config.yaml"
    save_resolved_config(make_config(tmp_path, "trainer.max_steps=100"), saved)
    with caplog.at_level("WARNING", logger="led.recipes.train"):
        report_changed_settings(saved, make_config(tmp_path, "trainer.max_steps=100"))
        assert not caplog.records
        report_changed_settings(saved, make_config(tmp_path, "trainer.max_steps=200", "optimizer.lr=1e-3"))
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert f"resuming with 2 setting(s) that differ from {saved}" in message
    assert "optimizer.lr: 0.0005 -> 0.001" in message and "trainer.max_steps: 100 -> 200" in message
