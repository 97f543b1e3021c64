"""Checkpoints of training runs: whole files, checked before a resume, exact random streams.

`last.ckpt` itself is written by `led.training.callbacks.ResumeCheckpoint`.

- `AtomicCheckpointIO` (the Trainer's checkpoint writer, see `led.recipes.train.build_trainer`): each checkpoint is
  written to a hidden file beside its final name, flushed to disk and renamed over it, so a crash, a SIGKILL or
  a full disk while saving leaves the previous file whole. A failed write raises `led.errors.WriteError` naming
  the file and the cause.
- `rng_states()` / `restore_rng_states()`: the torch, CUDA, numpy and Python random states of every rank, kept in
  each checkpoint by `LEDSummarizer`, so dropout continues after a resume exactly as without the interruption.
- `checkpoint_problem(path)`: what is wrong with a truncated or damaged checkpoint file (checked before resuming);
  `checkpoint_mismatch(path, module)`: how a checkpoint's weights do not fit the model (another size, vocabulary).

The position inside the epoch is kept by `led.data.batching.ResumableDataLoader`; Lightning restores model,
optimizer, scheduler and loop counters itself.
"""

from __future__ import annotations

import logging
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from led.files import write_atomically
from led.models.hub import looks_like_local_path
from led.training.distributed import gather_objects

log = logging.getLogger(__name__)


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
        write_atomically(path, lambda file: torch.save(checkpoint, file), what="checkpoint",
                         advice="free space or fix the directory's permissions, then resume with ckpt_path=last")


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


def corrupt_checkpoint_message(path: Path, problem: str, resuming: bool = True) -> str:
    """One line for a damaged checkpoint, naming the others beside it; `resuming`: the advice of a resumed run
    (start over with ckpt_path=null), else that of a tool reading it (give another)."""
    others = sorted(p.name for p in path.parent.glob("*.ckpt") if p != path) if path.parent.is_dir() else []
    earlier = f" (others in {path.parent}: {', '.join(others)})" if others else ""
    if not resuming:
        return (f"checkpoint {path} is corrupt or truncated ({problem}); give another checkpoint written by "
                f"train.py{earlier} with ckpt_path=PATH")
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
    config = getattr(getattr(module, "model", None), "config", None)  # an LEDSummarizer's model config
    saved_config = saved_model_config(checkpoint)
    if isinstance(saved_config, dict) and config is not None:
        ours = config.to_dict()
        # The family first (another family's checkpoint differs in most keys), then the rest by name.
        differing = [key for key in sorted(saved_config, key=lambda k: (k != "model_type", k))
                     if key in ours and saved_config[key] != ours[key]]
        if differing:
            parts.insert(0, "it was saved with " + ", ".join(f"{key}={saved_config[key]}" for key in differing[:6])
                         + ", this run has " + ", ".join(f"{key}={ours[key]}" for key in differing[:6]))
    return "; ".join(part for part in parts if part)


def saved_model_config(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The model's config.json dictionary an LEDSummarizer checkpoint stores (model_type included); None in one
    that stores none. An LED checkpoint may hold it under `led_config` instead."""
    saved = checkpoint.get("model_config", checkpoint.get("led_config"))
    return saved if isinstance(saved, dict) else None


def saved_model(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """What an LEDSummarizer checkpoint stores of its model, as `LEDSummarizer(saved_model=...)` takes it: its
    config.json dictionary (`config`) and generate()'s defaults (`generation_config`, None when it had none); None
    for a checkpoint written before it stored a config."""
    config = saved_model_config(checkpoint) if isinstance(checkpoint, dict) else None
    return None if config is None else {"config": config, "generation_config": checkpoint.get("generation_config")}


def read_saved_model(path: Path) -> dict[str, Any] | None:
    """`saved_model` of the checkpoint file, or sharded (FSDP) checkpoint directory, at `path`: its tensors are
    memory-mapped, not read. None when torch cannot open it this way (the loader that follows reports why)."""
    file = path / "meta.pt" if path.is_dir() else path  # a sharded checkpoint keeps all but the tensors in meta.pt
    try:
        checkpoint = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
    except Exception:  # noqa: BLE001 - Lightning loads it next and reports its own error
        return None
    return saved_model(checkpoint)


def run_tokenizer(ckpt_path: Path, named: str | None) -> str | None:
    """The tokenizer of the run a checkpoint comes from: the one it names, unless that is a local path that is gone
    (the run directory was moved, or copied to another node) while the run directory the checkpoint sits in
    (RUN/checkpoints/NAME.ckpt) holds tokenizer/: then that one."""
    if named and (Path(named).expanduser().exists() or not looks_like_local_path(named)):
        return named
    beside = ckpt_path.expanduser().resolve().parent.parent / "tokenizer"
    return str(beside) if beside.is_dir() else named


# ---------------------------------------------------------------------------------------------- random states
def rng_states() -> list[dict[str, Any]]:
    """The random states of every rank (index = global rank); a collective call under DDP/FSDP."""
    return gather_objects(_local_rng_state())


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
