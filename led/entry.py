"""What train.py and evaluate.py share around their Hydra main: a mistake the user can fix is one line on stderr
(exit status 1), a bug keeps its traceback, and `HYDRA_FULL_ERROR=1` shows the traceback of either.

Imports only Hydra and OmegaConf: a mistyped override is answered in a second, before torch and Lightning load.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
)

from led.errors import UserError

T = TypeVar("T")

# Raised inside Lightning 2.6 on every fit (lightning/pytorch/utilities/_pytree.py still tests `isinstance(spec,
# LeafSpec)`, which torch >= 2.9 deprecates): nothing a user or this code can change.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def run_job(work: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """`work(cfg)`; a `UserError` is printed as one line and exits with status 1. In a sweep (-m) it goes to Hydra,
    which records the job as failed (led/training/sweep.py's table) and runs the next one."""
    try:
        return work(cfg)
    except UserError as error:
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        _discard_untouched_job_dir()
        if _full_error():
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


def _discard_untouched_job_dir() -> None:
    """Hydra makes the job's directory (`.hydra/`, the job's log) before the job runs; a job refused before any
    work removes it again, so that a mistyped command leaves no run directory behind. A directory with anything
    else in it (an earlier run's checkpoints) stays."""
    if not HydraConfig.initialized():
        return
    directory = Path(HydraConfig.get().runtime.output_dir)
    log_file = f"{HydraConfig.get().job.name}.log"
    if not directory.is_dir() or not {path.name for path in directory.iterdir()} <= {".hydra", log_file}:
        return
    for handler in logging.getLogger().handlers:  # the job's log file, open in the directory
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == directory:
            handler.close()
            logging.getLogger().removeHandler(handler)
    shutil.rmtree(directory, ignore_errors=True)


def run_main(main: Callable[[], Any]) -> None:
    """Call a `@hydra.main` function, answering a key that a node's `_target_` does not take (`optimizer.lrr=1e-3`,
    which Hydra refuses while composing) as the config check answers `+optimizer.lrr=1e-3`: one line with the
    closest setting of what the node builds. Every other composition error is printed as Hydra prints it."""
    user_choice = os.environ.get("HYDRA_FULL_ERROR")
    # Hydra prints composition errors itself and exits, unless HYDRA_FULL_ERROR=1: then it raises them to us.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    os.environ["LED_HYDRA_FULL_ERROR"] = user_choice or ""  # what `_full_error` reads inside the job
    try:
        main()
    except CompactHydraException as error:
        if user_choice == "1":
            raise
        message = _unknown_key_message(error)
        if message is not None:
            print(f"error: {message}", file=sys.stderr)
        else:  # as Hydra prints it
            print(error, file=sys.stderr)
            if isinstance(error.__cause__, OmegaConfBaseException):
                print(error.__cause__, file=sys.stderr)
            print("\nSet the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.", file=sys.stderr)
        sys.exit(1)
    finally:
        _restore(user_choice)


def _full_error() -> bool:
    """Whether the user asked for tracebacks (HYDRA_FULL_ERROR=1), also while `run_main` has set it for Hydra."""
    return os.environ.get("LED_HYDRA_FULL_ERROR", os.environ.get("HYDRA_FULL_ERROR")) == "1"


def _restore(user_choice: str | None) -> None:
    os.environ.pop("LED_HYDRA_FULL_ERROR", None)
    if user_choice is None:
        os.environ.pop("HYDRA_FULL_ERROR", None)
    else:
        os.environ["HYDRA_FULL_ERROR"] = user_choice


def _unknown_key_message(error: CompactHydraException) -> str | None:
    cause = error.__cause__
    node = getattr(cause, "parent_node", None)
    # A top-level key (`foo=1`) belongs to no `_target_` node: Hydra's message says it, without importing torch.
    if not isinstance(cause, (ConfigAttributeError, ConfigKeyError)) or node is None or "." not in cause.full_key:
        return None
    from led.config_check import unknown_key_message

    return unknown_key_message(node._get_root(), cause.full_key)
