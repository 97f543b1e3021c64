"""Surviving crashes and preemption: whole checkpoint files, a `last.ckpt` to resume from, exact random streams.

- `AtomicCheckpointIO` (the Trainer's checkpoint writer, see `led.training.build_trainer`): each checkpoint is
  written to a hidden file beside its final name, flushed to disk and renamed over it, so a crash, a SIGKILL or
  a full disk while saving leaves the previous file whole. A failed write raises `CheckpointWriteError` naming
  the file and the cause.
- `ResumeCheckpoint` (`callbacks.last_checkpoint`): `last.ckpt` every `every_n_train_steps` steps, at the end of
  training, and when the run is stopped by SIGTERM (preemption, `scancel`, `kill`) or Ctrl+C.
- `rng_states()` / `restore_rng_states()`: the torch, CUDA, numpy and Python random states of every rank, kept in
  each checkpoint by `LEDSummarizer`, so dropout continues after a resume exactly as without the interruption.
- `checkpoint_problem(path)`: what is wrong with a truncated or damaged checkpoint file (checked before resuming);
  `checkpoint_mismatch(path, module)`: how a checkpoint's weights do not fit the model (another size, vocabulary).
- `stop_at_once_on_signals()`: after training, SIGTERM or Ctrl+C stop the final validation at once (`StopRequested`).

The position inside the epoch is kept by `led.data.ResumableDataLoader`; Lightning restores model, optimizer,
scheduler and loop counters itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, quota, permissions); the file it would have replaced is
    unchanged. `errno` is that of the underlying error."""


# ---------------------------------------------------------------------------------------------- writing
class AtomicCheckpointIO(TorchCheckpointIO):
    """Local checkpoints written to `.<name>.partial` beside the target, fsynced, then renamed over it.

    Lightning's own save serialises the whole checkpoint into memory, then commits it through an fsspec
    transaction whose temporary file lives in the system temp directory; when that is another filesystem than
    the run directory (a tmpfs /tmp, a node-local disk under a shared run directory) the commit is a copy onto
    the checkpoint, not a rename, and a crash or ENOSPC during that copy truncates it; nothing is fsynced.
    Here the checkpoint streams to disk beside its target. Remote paths (s3://, gs://, ...) still go through
    Lightning.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        save_atomically(Path(path), lambda file: torch.save(checkpoint, file))


def save_atomically(path: Path, write: Callable[[Any], None]) -> None:
    """Call `write(file)` on `.<name>.partial` beside `path`, fsync it, rename it to `path`.

    A leftover `.partial` from a killed save is overwritten by the next one. Raises CheckpointWriteError.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    stage = f"writing {partial}"
    recorder = None
    try:
        with open(partial, "wb") as file:
            recorder = _WriteErrors(file)
            write(recorder)
            file.flush()
            stage = f"flushing {partial} to disk"
            os.fsync(file.fileno())
        stage = f"renaming {partial.name} to {path.name}"
        os.replace(partial, path)
    except BaseException as error:
        partial.unlink(missing_ok=True)
        cause = recorder.error if recorder is not None and recorder.error is not None else error
        if not isinstance(cause, OSError):
            raise
        failure = CheckpointWriteError(
            f"could not save checkpoint {path}: {cause.strerror or cause} while {stage}; the previous {path.name} "
            "(if any) is unchanged. Free space or fix the directory's permissions, then resume with ckpt_path=last")
        failure.errno = cause.errno
        raise failure from cause
    _fsync_directory(path.parent)  # the rename itself survives a power cut


def write_text_atomically(path: Path, text: str) -> None:
    """`text` into `path` through a temporary file beside it and a rename: a reader, or a crash, sees the old file
    or the new one, never half of one. The temporary name carries the process id, so that concurrent writers
    (the jobs of a sweep) never share one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


class _WriteErrors:
    """The file handed to `torch.save`, keeping the OSError of a failed write: torch reports it as a RuntimeError
    ("unexpected pos ...") without the cause."""

    def __init__(self, file: Any) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.file.flush()


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------- checking
def checkpoint_problem(path: Path) -> str | None:
    """What is wrong with the checkpoint file at `path`, or None when it is whole. Nothing is unpickled.

    `torch.save` writes a zip archive whose directory comes last, so a file cut short has none; every record
    carries a CRC-32, which catches damaged bytes inside tensors (torch.load does not check it: they would load
    as garbage weights). Reads the whole file once (about a second per GB).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
            if not any(record.filename.endswith("data.pkl") for record in records):
                return f"no data.pkl among its {len(records)} records: not a file written by torch.save"
            if all(record.CRC == 0 for record in records):  # written with torch's CRC computation turned off
                return None
            bad = archive.testzip()
            if bad is not None:
                return f"record {bad} fails its CRC check"
    except zipfile.BadZipFile as error:
        return (f"{error}, {path.stat().st_size} bytes: cut short, e.g. by a crash or an interrupted copy, "
                "or not a checkpoint at all")
    except (OSError, EOFError, ValueError, zipfile.LargeZipFile) as error:
        return f"{type(error).__name__}: {error}"
    return None


def corrupt_checkpoint_message(path: Path, problem: str) -> str:
    others = sorted(p.name for p in path.parent.glob("*.ckpt") if p != path) if path.parent.is_dir() else []
    earlier = f" (others in {path.parent}: {', '.join(others)})" if others else ""
    return (f"checkpoint {path} is corrupt or truncated ({problem}); resume from an earlier checkpoint"
            f"{earlier} with ckpt_path=PATH, or start over with ckpt_path=null")


def checkpoint_mismatch(path: Path, module: torch.nn.Module) -> str | None:
    """How the weights in the Lightning checkpoint at `path` differ from `module`'s (names and shapes), or None when
    they fit. The tensors are memory-mapped, not read; a checkpoint torch cannot open this way is left to Lightning."""
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        saved = {name: tuple(tensor.shape) for name, tensor in checkpoint["state_dict"].items()}
    except Exception:  # noqa: BLE001 - Lightning loads it next and reports its own error
        return None
    expected = {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}
    missing, unexpected = sorted(expected.keys() - saved.keys()), sorted(saved.keys() - expected.keys())
    reshaped = [f"{name} {saved[name]} vs {expected[name]}" for name in sorted(saved.keys() & expected.keys())
                if saved[name] != expected[name]]
    if not (missing or unexpected or reshaped):
        return None
    parts = [f"{len(reshaped)} weights of another shape (checkpoint vs this model), e.g. {reshaped[0]}" if reshaped
             else "", f"{len(missing)} missing, e.g. {missing[0]}" if missing else "",
             f"{len(unexpected)} not in this model, e.g. {unexpected[0]}" if unexpected else ""]
    config = getattr(getattr(module, "model", None), "config", None)  # an LEDSummarizer's LEDConfig
    saved_config = checkpoint.get("led_config")
    if isinstance(saved_config, dict) and config is not None:
        ours = config.to_dict()
        differing = [key for key in sorted(saved_config) if key in ours and saved_config[key] != ours[key]]
        if differing:
            parts.insert(0, "it was saved with " + ", ".join(f"{key}={saved_config[key]}" for key in differing[:6])
                         + ", this run has " + ", ".join(f"{key}={ours[key]}" for key in differing[:6]))
    return "; ".join(part for part in parts if part)


# ---------------------------------------------------------------------------------------------- last.ckpt
class ResumeCheckpoint(ModelCheckpoint):
    """`<dirpath>/last.ckpt`: every `every_n_train_steps` optimizer steps, at the end of training, and on SIGTERM
    or Ctrl+C. Always the same file, replaced atomically (with `AtomicCheckpointIO`).

    On SIGTERM Lightning (which registers the handler) lets the current step, or validation batch, finish and
    raises `SIGTERMException`; this callback then saves `last.ckpt` unless this step already has one.
    The first Ctrl+C takes the same path (it is turned into a SIGTERM); a second one interrupts at once.
    """

    def __init__(self, dirpath: str, every_n_train_steps: int = 200) -> None:
        if isinstance(every_n_train_steps, bool) or not isinstance(every_n_train_steps, int) \
                or every_n_train_steps < 1:
            raise ValueError(f"callbacks.last_checkpoint.every_n_train_steps={every_n_train_steps!r} must be an "
                             "integer >= 1 (optimizer steps between two saves of last.ckpt)")
        super().__init__(dirpath=dirpath, every_n_train_steps=every_n_train_steps, save_top_k=0, save_last=True,
                         enable_version_counter=False)  # always last.ckpt, never last-v1.ckpt
        self._original_sigint: Any = None
        self._sigint_seen = False

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

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._sigint_seen:
            raise KeyboardInterrupt
        self._sigint_seen = True
        log.warning("Ctrl+C: finishing this step and saving last.ckpt (press Ctrl+C again to stop at once)")
        signal.raise_signal(signal.SIGTERM)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # ModelCheckpoint saves last.ckpt here only if it never saved one; we want the final weights in it.
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            if trainer.is_global_zero:
                log.warning("stopped by a signal at step %d: saved %s", trainer.global_step, self.last_model_path)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._original_sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._original_sigint)
            self._original_sigint = None


@contextlib.contextmanager
def stop_signals_blocked(active: bool = True) -> Iterator[None]:
    """Block SIGINT and SIGTERM while child processes (DataLoader workers) are forked: they inherit the blocked
    mask and never see the signals, which a terminal (Ctrl+C) or a scheduler (SLURM) sends to every process of
    the job. A worker killed by one would otherwise fail the step the main process is finishing before it stops.
    A signal that arrives meanwhile is delivered to the main process when the block ends."""
    if not (active and hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class StopRequested(BaseException):
    """SIGTERM or SIGINT inside `stop_at_once_on_signals()`. A BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way (a data loader, a metric) takes it for an error of its own."""


@contextlib.contextmanager
def stop_at_once_on_signals() -> Iterator[None]:
    """Within the block SIGTERM and SIGINT raise `StopRequested` at once in the main thread.

    For the work after training (the final validation), which saves nothing: training finishes its step on a signal so
    that last.ckpt holds it, but here there is nothing to finish and a scheduler's grace period is better not spent on
    it. Lightning's SIGTERM handler, which `trainer.validate` installs, calls the handler it replaces (this one), so
    the stop also works inside Lightning. Files being written are written whole or not at all: the exception comes
    between two Python instructions, lines are appended by single writes and other files are replaced atomically.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise StopRequested(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# ---------------------------------------------------------------------------------------------- random states
def rng_states() -> list[dict[str, Any]]:
    """The random states of every rank (index = global rank); a collective call under DDP/FSDP."""
    state = _local_rng_state()
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [state]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, state)
    return gathered


def restore_rng_states(states: list[dict[str, Any]], rank: int, world_size: int) -> None:
    """Set this rank's random states from `rng_states()` of a checkpoint."""
    if len(states) != world_size:
        log.warning("the checkpoint holds random states of %d ranks, this run has %d: every rank continues from "
                    "rank 0's (dropout masks differ from an uninterrupted run)", len(states), world_size)
    state = states[rank] if len(states) == world_size else states[0]
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    random.setstate(state["python"])


def _local_rng_state() -> dict[str, Any]:
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        # numpy's key array as a tensor: checkpoints load with torch.load(weights_only=True)
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss),
                  float(cached_gaussian)),
        "python": random.getstate(),
    }
