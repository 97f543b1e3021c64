"""Lightning callbacks of the training framework: sample summaries for the loggers, and `last.ckpt` to resume from
(saved on a stop by a signal too, and in a SLURM job before its time limit, which then requeues the job)."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from led.errors import ConfigError
from led.training import slurm

log = logging.getLogger(__name__)


class LogSamples(L.Callback):
    """After each validation, hand the module's sample summaries to every logger that can show text.

    wandb gets a table (step, id, prediction, reference), TensorBoard a text entry per sample; every run
    also appends them to `<run_dir>/samples_during_training.jsonl`, so CSV-only runs keep them too.
    """

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        samples = getattr(pl_module, "validation_samples", None)
        if not samples or trainer.sanity_checking or not trainer.is_global_zero:
            return
        step = trainer.global_step
        rows = [[step, example_id, prediction, reference] for example_id, prediction, reference in samples]
        for logger in trainer.loggers:
            kind = type(logger).__name__
            if kind == "WandbLogger":
                logger.log_text(key="val/samples", columns=["step", "id", "prediction", "reference"], data=rows)
            elif kind == "TensorBoardLogger":
                for _, example_id, prediction, reference in rows:
                    text = f"**prediction**\n\n{prediction}\n\n**reference**\n\n{reference}"
                    logger.experiment.add_text(f"val/sample_{example_id}", text, global_step=step)
        if trainer.default_root_dir:
            path = Path(trainer.default_root_dir) / "samples_during_training.jsonl"
            with path.open("a", encoding="utf-8") as out:
                for row in rows:
                    out.write(json.dumps(dict(zip(("step", "id", "prediction", "reference"), row))) + "\n")

    def state_dict(self) -> dict[str, Any]:
        return {}


class ResumeCheckpoint(ModelCheckpoint):
    """`<dirpath>/last.ckpt`: every `every_n_train_steps` optimizer steps, at the end of training, on SIGTERM or
    Ctrl+C, and in a SLURM job on the signal SLURM sends before its time limit. Always the same file, replaced
    atomically (with `AtomicCheckpointIO`).

    On SIGTERM Lightning (which registers the handler) lets the current step, or validation batch, finish and
    raises `SIGTERMException`; this callback then saves `last.ckpt` unless this step already has one.
    The first Ctrl+C takes the same path (it is turned into a SIGTERM); a second one interrupts at once.
    In a SLURM job `requeue_signal` (sbatch `--signal=USR1@90`; under hydra/launcher=slurm submitit's own, see
    led/training/slurm.py) takes it too, and once last.ckpt is saved rank 0 requeues the job (`scontrol requeue`).
    """

    def __init__(self, dirpath: str, every_n_train_steps: int = 200, requeue_signal: str = "USR1") -> None:
        if isinstance(every_n_train_steps, bool) or not isinstance(every_n_train_steps, int) \
                or every_n_train_steps < 1:
            raise ConfigError(f"callbacks.last_checkpoint.every_n_train_steps={every_n_train_steps!r} must be an "
                             "integer >= 1 (optimizer steps between two saves of last.ckpt)")
        slurm.parse_signal(requeue_signal, "callbacks.last_checkpoint.requeue_signal")  # a typo fails before any work
        super().__init__(dirpath=dirpath, every_n_train_steps=every_n_train_steps, save_top_k=0, save_last=True,
                         enable_version_counter=False)  # always last.ckpt, never last-v1.ckpt
        self.requeue_signal = requeue_signal
        self._original_sigint: Any = None
        self._sigint_seen = False
        self._slurm_signal: signal.Signals | None = None  # installed in a SLURM job, from on_train_start to teardown
        self._original_slurm_handler: Any = None
        self._requeue_asked = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        last = Path(self.dirpath or "") / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"
        if trainer.ckpt_path is None and last.exists() and trainer.is_global_zero:
            log.warning("%s exists but this run starts from scratch: it will be replaced at step %d. To continue "
                        "that run instead, stop now and add ckpt_path=last", last, self._every_n_train_steps)
        sigterm_handled = callable(signal.getsignal(signal.SIGTERM))  # Lightning's handler (not on Windows)
        if sigterm_handled and threading.current_thread() is threading.main_thread():
            self._sigint_seen = False
            self._original_sigint = signal.signal(signal.SIGINT, self._on_sigint)
            if slurm.in_slurm_job():
                # Replaces Lightning's handler for this signal (SLURMEnvironment's auto-requeue: an hpc_ckpt saved
                # mid-step) or submitit's (which requeues without saving); both come back at teardown.
                self._requeue_asked = False
                self._slurm_signal = slurm.requeue_signal(self.requeue_signal)
                self._original_slurm_handler = signal.signal(self._slurm_signal, self._on_requeue_signal)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._sigint_seen:
            raise KeyboardInterrupt
        self._sigint_seen = True
        log.warning("Ctrl+C: finishing this step and saving last.ckpt (press Ctrl+C again to stop at once)")
        signal.raise_signal(signal.SIGTERM)

    def _on_requeue_signal(self, signum: int, frame: Any) -> None:
        if self._requeue_asked:  # SLURM may send it again; one stop is enough
            return
        self._requeue_asked = True
        log.warning("%s: SLURM stops this job soon; finishing this step, saving last.ckpt and requeueing the job",
                    signal.Signals(signum).name)
        signal.raise_signal(signal.SIGTERM)  # the stop every signal takes: the step finishes, then last.ckpt

    def _requeue_if_asked(self, trainer: L.Trainer) -> None:
        """After last.ckpt is saved: rank 0 asks SLURM to requeue the job (which ends this one)."""
        if self._requeue_asked and trainer.is_global_zero:
            self._requeue_asked = False
            job = slurm.job_id()
            if job is not None:
                slurm.requeue(job)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # ModelCheckpoint saves last.ckpt here only if it never saved one; we want the final weights in it.
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        # The signal came in the last step: the requeued job finds training done and runs the final validation.
        self._requeue_if_asked(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        if not self._should_skip_saving_checkpoint(trainer):  # skipped when last.ckpt already holds this step
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            if trainer.is_global_zero:
                log.warning("stopped by a signal at step %d: saved %s", trainer.global_step, self.last_model_path)
        self._requeue_if_asked(trainer)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if self._original_sigint is not None:
            signal.signal(signal.SIGINT, self._original_sigint)
            self._original_sigint = None
        # Lightning's own teardown (before this one) already put back what the signal had before fit; only a handler
        # still ours is replaced here.
        if self._slurm_signal is not None and signal.getsignal(self._slurm_signal) == self._on_requeue_signal:
            signal.signal(self._slurm_signal, self._original_slurm_handler)
        self._slurm_signal = self._original_slurm_handler = None
