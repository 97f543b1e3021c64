"""`train(cfg)`: what `train.py` runs — data, tokenizer, model, Trainer, fit, final validation, metrics.json.

The config is the one composed from conf/config.yaml (see conf/ for every group); each node names what it builds
with `_target_`, and `led.instantiate.build` builds it. The run directory (`cfg.run_dir`, Hydra's output directory)
receives the resolved config, the tokenizer, checkpoints, logs, `metrics.json` and `samples.jsonl`.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from led.config_check import setting_problems
from led.data.datamodule import SummarizationDataModule
from led.errors import ConfigError
from led.files import write_text_atomically
from led.instantiate import build, receiving
from led.models.families import family_of_model
from led.report import write_report_safely
from led.signals import StopRequested, stop_at_once_on_signals
from led.training.callbacks import ResumeCheckpoint
from led.training.checkpointing import (
    AtomicCheckpointIO,
    checkpoint_mismatch,
    checkpoint_problem,
    corrupt_checkpoint_message,
    read_saved_model,
)
from led.training.console import progress_bar, quiet_logging
from led.training.distributed import check_launch
from led.training.module import LEDSummarizer

log = logging.getLogger(__name__)

METRICS = ("loss", "rouge1", "rouge2", "rougeL", "rougeLsum")


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the model `cfg` describes and return the final validation metrics (also in metrics.json).

    Settings are checked before any work (led/config_check.py, the checkpoint, then the DataModule against the
    model); config.yaml is written once all passed, so a rejected resume leaves the run directory as it was.
    """
    started = time.perf_counter()
    quiet_logging()
    problems = setting_problems(cfg)
    if problems:
        raise ConfigError("; ".join(problems))
    run_dir = make_run_dir(Path(cfg.run_dir))
    L.seed_everything(cfg.seed, workers=True)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), run_dir)

    # The DataModule comes first: it generates the synthetic corpus and trains the tokenizer of a model from scratch,
    # which the LightningModule records. Neither draws random numbers, so the model's weights are those of the seed.
    datamodule: SummarizationDataModule = build("data", cfg.data, tokenizer_dir=str(run_dir / "tokenizer"),
                                                _convert_="all")
    # The LightningModule stores these nodes as plain values and builds what they name itself.
    with receiving("module", cfg.module):
        module: LEDSummarizer = build("module", cfg.module, _convert_="all")(
            model=_plain(cfg.model), optimizer=_plain(cfg.optimizer), scheduler=_plain(cfg.scheduler),
            generation=_plain(cfg.generation), tokenizer=datamodule.tokenizer_path,
            # A resumed run's model is built from the config its checkpoint stores: no pretrained files are read.
            saved_model=read_saved_model(Path(ckpt_path)) if ckpt_path is not None else None)
    check_checkpoint_fits(ckpt_path, module)
    # The DataModule checks lengths against the model before tokenising anything, and loading the tokenizer (the
    # log line) its vocabulary against the embeddings.
    datamodule.match_model(module.model)
    log.info("model: %s, %s parameters, inputs padded to multiples of %d; tokenizer: %d tokens; data: %s",
             family_of_model(module.model).name, f"{module.model.num_parameters():,}", module.model.input_multiple,
             datamodule.tokenizer.vocab_size, datamodule.source.describe("train"))

    if ckpt_path is not None:
        report_changed_settings(run_dir / "config.yaml", cfg)
    save_resolved_config(cfg, run_dir / "config.yaml")
    trainer = build_trainer(cfg, run_dir)
    check_launch(trainer)
    fit(trainer, module, datamodule, ckpt_path, cfg, run_dir)
    metrics = final_validation(trainer, module, datamodule, cfg, run_dir)
    metrics["train_minutes"] = round((time.perf_counter() - started) / 60, 2)
    if trainer.is_global_zero:
        write_json(run_dir / "metrics.json", metrics)
        write_samples(run_dir / "samples.jsonl", module)
        write_report_safely(run_dir)  # report.html: a failure to draw is a warning, not a failed run
        log.info("final validation: %s", json.dumps(metrics))
        print(format_summary(metrics, run_dir))
    return metrics


# ---------------------------------------------------------------------------------------- trainer
def build_trainer(cfg: DictConfig, run_dir: Path) -> L.Trainer:
    callbacks = [build(f"callbacks.{name}", node) for name, node in callback_nodes(cfg).items()]
    bar = progress_bar() if cfg.trainer.get("enable_progress_bar", True) else None
    if bar is not None and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(bar)
    loggers = [build_logger(f"logger.{name}", c, cfg) for name, c in (cfg.get("logger") or {}).items()
               if c is not None]
    if not loggers and any(isinstance(c, LearningRateMonitor) for c in callbacks):
        # Lightning refuses the learning-rate monitor without a logger to write to, at the start of fit.
        log.info("logger=none: the learning rate is not logged (callbacks.lr_monitor needs a logger)")
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    # The DataModule shards batches over ranks itself (length-grouped, token-budgeted), see docs/CONTRACTS.md.
    # AtomicCheckpointIO: a crash or a full disk while saving never leaves a truncated checkpoint. In a SLURM job,
    # Lightning's own requeue handler would save mid-step: ResumeCheckpoint takes the signal (led/training/slurm.py).
    plugins: list[Any] = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return build("trainer", cfg.trainer, callbacks=callbacks, logger=loggers or False, default_root_dir=str(run_dir),
                 use_distributed_sampler=False, plugins=plugins)


def callback_nodes(cfg: DictConfig) -> dict[str, DictConfig]:
    """The callbacks' nodes, by name. With `module.val_rouge_examples=0` (loss only) validation logs no ROUGE, so a
    callback that watches a validation ROUGE score (the best checkpoint, early stopping) watches val/loss instead,
    lower being better, rather than stopping the run at its first validation."""
    nodes = {str(name): node for name, node in (cfg.get("callbacks") or {}).items() if node is not None}
    if int(cfg.module.get("val_rouge_examples", 1)) != 0:
        return nodes
    watched = {}
    for name, node in nodes.items():
        if str(node.get("monitor", "")).startswith("val/rouge"):
            log.info("module.val_rouge_examples=0 (loss only): %s watches val/loss instead of %s", node._target_,
                     node.monitor)
            node = OmegaConf.merge(node, {"monitor": "val/loss", "mode": "min"})
            if "{val/rouge" in str(node.get("filename", "")):
                node.filename = "step{step}-loss{val/loss:.4f}"
        watched[name] = node
    return watched


def fit(trainer: L.Trainer, module: LEDSummarizer, datamodule: SummarizationDataModule, ckpt_path: str | None,
        cfg: DictConfig, run_dir: Path) -> None:
    """`trainer.fit`. SIGTERM or Ctrl+C ends it after the current step with last.ckpt saved
    (led.training.callbacks.ResumeCheckpoint): the process then exits with status 1 and says how to resume (or,
    after the last step, how to compute the metrics), skipping the final validation."""
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except SIGTERMException:
        if trainer.fit_loop.done:  # the signal came during the last step: nothing is left to resume
            raise SystemExit(not_validated_message(trainer, cfg, run_dir)) from None
        raise SystemExit(f"training stopped by a signal at step {trainer.global_step}; resume it with "
                         f"`python train.py ckpt_path=last hydra.run.dir={run_dir}` and the same overrides") from None


def final_validation(trainer: L.Trainer, module: LEDSummarizer, datamodule: SummarizationDataModule,
                     cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """`final_metrics`, unless SIGTERM or Ctrl+C comes (or came while fit saved last.ckpt): the weights are saved,
    so the run stops at once and says how to compute the metrics with evaluate.py."""
    try:
        with stop_at_once_on_signals():
            if trainer.received_sigterm:  # it came after the last step, while fit saved last.ckpt and returned
                raise StopRequested("SIGTERM")
            return final_metrics(trainer, module, datamodule)
    except StopRequested:
        raise SystemExit(not_validated_message(trainer, cfg, run_dir)) from None


def not_validated_message(trainer: L.Trainer, cfg: DictConfig, run_dir: Path) -> str:
    stopped = (f"training finished at step {trainer.global_step}, but a signal stopped the run before the final "
               "validation: metrics.json was not written")
    saved = [Path(c.last_model_path) for c in trainer.callbacks if isinstance(c, ResumeCheckpoint) and c.last_model_path]
    if not saved or not saved[0].is_file():
        return f"{stopped}, and no last.ckpt was saved (callbacks.last_checkpoint is not set)"
    return (f"{stopped}. The weights are in {saved[0]}; compute the metrics with "
            f"`{evaluate_command(cfg, saved[0], run_dir)}`")


def evaluate_command(cfg: DictConfig, checkpoint: Path, run_dir: Path) -> str:
    """The evaluate.py command that scores `checkpoint` on the final validation's examples (ROUGE with confidence
    intervals and the lead baseline; not the validation loss). evaluate.py takes the generation settings the
    checkpoint stores."""
    arguments = [f"ckpt_path={checkpoint}", "split=validation"]
    if int(cfg.module.val_rouge_examples) > 0:
        arguments.append(f"limit={int(cfg.module.val_rouge_examples)}")
    arguments.append(f"output_dir={run_dir / 'final_validation'}")
    return " ".join(["python evaluate.py", *map(shlex.quote, arguments)])


def build_logger(path: str, logger_cfg: DictConfig, cfg: DictConfig) -> Any:
    """The logger of the node at `path` (`logger.csv`); wandb's offline unless credentials are found."""
    if not str(logger_cfg.get("_target_", "")).endswith("WandbLogger"):
        return build(path, logger_cfg)
    offline = bool(logger_cfg.get("offline")) or not wandb_credentials_available()
    if offline:
        # wandb would otherwise prompt for a key on a terminal, or fail on a cluster node.
        os.environ.setdefault("WANDB_MODE", "offline")
        log.info("wandb: no API key found, logging offline into %s/wandb (`wandb sync` it later)", cfg.run_dir)
    logger = build(path, logger_cfg, offline=offline)
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return logger


def wandb_credentials_available() -> bool:
    """An API key in the environment or from `wandb login` (~/.netrc), without ever prompting."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return bool(os.environ.get("WANDB_API_KEY"))
    import netrc

    try:
        hosts = netrc.netrc().hosts
    except (OSError, netrc.NetrcParseError):
        return False
    return any("wandb" in host for host in hosts)


def make_run_dir(run_dir: Path) -> Path:
    """`run_dir`, created: one that cannot be created or written to is one line now, not a traceback later."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"run_dir={run_dir} cannot be created ({error.strerror or error}); choose another "
                          "directory with hydra.run.dir=DIR") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"run_dir={run_dir} is not writable; choose another directory with hydra.run.dir=DIR")
    return run_dir


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> str | None:
    """`last` resumes from this run's last checkpoint (None when there is none yet); a path must exist.
    A checkpoint file is checked whole first (led.training.checkpointing.checkpoint_problem); sharded FSDP ones are directories."""
    if not ckpt_path:
        return None
    if ckpt_path == "last":
        last = run_dir / "checkpoints" / "last.ckpt"
        if not last.exists():
            return None
        ckpt_path = str(last)
    if not Path(ckpt_path).exists():
        raise ConfigError(f"ckpt_path={ckpt_path} does not exist; give a .ckpt file of an earlier run, or "
                          "ckpt_path=last with that run's run_dir")
    problem = checkpoint_problem(Path(ckpt_path)) if Path(ckpt_path).is_file() else None
    if problem is not None:  # one line here, not a torch.load traceback (or, for damaged bytes, NaN weights)
        raise ConfigError(corrupt_checkpoint_message(Path(ckpt_path), problem))
    return ckpt_path


def check_checkpoint_fits(ckpt_path: str | None, module: LEDSummarizer) -> None:
    """A checkpoint of another model (size, vocabulary, layers) is one line here, not Lightning's state-dict error
    after the data is tokenised. Sharded (FSDP) checkpoints are directories and are left to Lightning."""
    if ckpt_path is None or not Path(ckpt_path).is_file():
        return
    problem = checkpoint_mismatch(Path(ckpt_path), module)
    if problem is not None:
        raise ConfigError(f"ckpt_path={ckpt_path} holds another model than this run builds ({problem}); resume with "
                          "the model settings of the run that saved it (its config.yaml), or start over with "
                          "ckpt_path=null")


# ---------------------------------------------------------------------------------------- results
def final_metrics(trainer: L.Trainer, module: LEDSummarizer, datamodule: SummarizationDataModule) -> dict[str, Any]:
    """Validation loss and ROUGE of the final weights: those of the training loop's last validation when it ran after
    the last step (`trainer.val_check_interval` divides `max_steps`), else of a validation pass run now."""
    if module.validated_at_step == trainer.global_step:
        logged = {name: float(value) for name, value in trainer.callback_metrics.items()}
    else:
        results = trainer.validate(module, datamodule=datamodule, verbose=False)
        logged = results[0] if results else {}
    metrics: dict[str, Any] = {name: round(float(logged[f"val/{name}"]), 4)
                               for name in METRICS if f"val/{name}" in logged}
    if "rouge1" in metrics:
        metrics["lead_rouge1"] = round(lead_rouge1(datamodule, module.hparams.val_rouge_examples), 4)
    metrics["global_step"] = int(trainer.global_step)
    metrics["skipped_batches"] = module.skipped_batches
    return metrics


def lead_rouge1(datamodule: SummarizationDataModule, examples: int) -> float:
    """ROUGE-1 of the lead baseline (each document's first sentences, as long as its reference) on the
    validation examples the model summarised: the score a model gets without reading past the start."""
    from led.metrics import compute_rouge, lead_baseline

    documents = datamodule.documents("validation")
    count = len(documents) if examples < 0 else min(examples, len(documents))
    documents, references = documents[:count], datamodule.references("validation")[:count]
    leads = [lead_baseline(document, reference) for document, reference in zip(documents, references)]
    return compute_rouge(leads, references, bootstrap=0)["rouge1"]


def write_samples(path: Path, module: LEDSummarizer) -> None:
    samples = getattr(module, "validation_samples", [])
    lines = [json.dumps({"id": i, "prediction": p, "reference": r}) for i, p, r in samples]
    write_text_atomically(path, "".join(line + "\n" for line in lines))


def format_summary(metrics: dict[str, Any], run_dir: Path) -> str:
    names = [n for n in ("rouge1", "rouge2", "rougeL", "rougeLsum") if n in metrics]
    rows = [f"  validation loss {metrics.get('loss', float('nan')):.4f}"]
    rows += [f"  {name:<10}{metrics[name]:7.2f}" for name in names]
    if "lead_rouge1" in metrics:
        rows.append(f"  lead baseline rouge1 {metrics['lead_rouge1']:.2f} (the document's first sentences)")
    report = run_dir / "report.html"
    rows.append(f"Run directory: {run_dir}" + (f" (curves, metrics and samples: {report})" if report.is_file() else ""))
    return "\n".join([f"Finished in {metrics['train_minutes']:.1f} min, step {metrics['global_step']}:", *rows])


def report_changed_settings(saved: Path, cfg: DictConfig) -> None:
    """Log the settings of a resumed run that differ from those it was started with (its config.yaml): a resumed
    run with other settings (a longer `trainer.max_steps`, a new lr) is a different run from the one started."""
    if not saved.is_file():
        return
    before = _flat(OmegaConf.to_container(OmegaConf.load(saved), resolve=False))
    after = _flat(OmegaConf.to_container(cfg, resolve=True))
    changed = [f"{key}: {before.get(key, '(unset)')} -> {after.get(key, '(unset)')}"
               for key in sorted(set(before) | set(after))
               if before.get(key) != after.get(key) and key not in ("ckpt_path", "run_dir")]
    if changed:
        log.warning("resuming with %d setting(s) that differ from %s: %s", len(changed), saved, "; ".join(changed))


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def save_resolved_config(cfg: DictConfig, path: Path) -> None:
    """The fully resolved config of the run (secrets, e.g. a wandb key, never appear in it: they come from env)."""
    write_text_atomically(path, OmegaConf.to_yaml(cfg, resolve=True))


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_text_atomically(path, json.dumps(data, indent=2) + "\n")


def _plain(node: DictConfig) -> dict[str, Any]:
    """A config node as plain values (what the LightningModule stores with save_hyperparameters)."""
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
