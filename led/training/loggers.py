"""Loggers of the training framework (conf/logger/): the CSV logger a resumed run continues, and the check that an
optional logger's package is installed."""

from __future__ import annotations

import csv
import importlib.util
import io
import logging
from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from led.files import write_text_atomically

log = logging.getLogger(__name__)

# Loggers whose package is an optional extra (pyproject.toml): Lightning imports it only when the logger is built, and
# then fails with a traceback. logger class -> (the modules any one of which it can use, the extra that installs one).
OPTIONAL_LOGGERS = {"WandbLogger": (("wandb",), "wandb"),
                    "TensorBoardLogger": (("tensorboard", "tensorboardX"), "tensorboard")}


def missing_logger_packages(loggers: Mapping[str, Any] | None) -> list[str]:
    """One message per chosen logger (conf/logger/ nodes, by name) whose package is not installed, with the command
    that installs it; checked with the other settings, before any work."""
    problems = []
    for name, node in (loggers or {}).items():
        target = str((node or {}).get("_target_", "")) if isinstance(node, Mapping) else ""
        modules, extra = OPTIONAL_LOGGERS.get(target.rsplit(".", 1)[-1], ((), ""))
        if modules and not any(importlib.util.find_spec(module) for module in modules):
            problems.append(f"logger.{name} ({target}) needs the {modules[0]} package, which is not installed: "
                            f"pip install -e '.[{extra}]' (or pip install {modules[0]}), or choose another logger, "
                            "e.g. logger=csv")
    return problems


class CSVLogger(LightningCSVLogger):
    """Lightning's CSVLogger, except that a run continuing in a directory keeps the rows already in its metrics.csv.

    Lightning's writer deletes metrics.csv when it starts, so `ckpt_path=last` would lose every row logged before
    the interruption. Here the file is kept; at the first write the rows of the steps this run logs again are
    replaced (the steps from its first one on: those after the checkpoint it resumes from, or all of them when a run
    starts over in the directory), so each step is in the file once and the step column continues.
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment


class _ContinuingWriter(ExperimentWriter):
    """Writes metrics.csv (see CSVLogger); every rewrite of the file (new columns) replaces it atomically."""

    def __init__(self, log_dir: str) -> None:
        self._earlier_rows_merged = False
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        pass  # Lightning deletes metrics.csv here; `save` merges it instead

    def save(self) -> None:
        if self.metrics and not self._earlier_rows_merged:
            self._earlier_rows_merged = True
            self._keep_earlier_rows(before_step=min(int(row["step"]) for row in self.metrics))
        super().save()

    def _keep_earlier_rows(self, before_step: int) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            reader = csv.DictReader(file)
            columns, rows = list(reader.fieldnames or []), list(reader)
        kept = [row for row in rows if _step(row) < before_step]
        log.info("%s: kept the %d rows of steps before %d, replacing %d rows of later steps that this run logs "
                 "again", self.metrics_file_path, len(kept), before_step, len(rows) - len(kept))
        if not kept:
            self._fs.rm_file(self.metrics_file_path)
            return
        self.metrics_keys = sorted(columns)
        self._write_rows(self.metrics_keys, kept)

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            rows = list(csv.DictReader(file))
        self._write_rows(fieldnames, rows)

    def _write_rows(self, fieldnames: list[str], rows: list[dict[str, Any]]) -> None:
        # Written whole or not at all: a crash while rewriting cannot cut the earlier rows short.
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomically(self.metrics_file_path, text.getvalue())


def _step(row: dict[str, Any]) -> float:
    try:
        return int(row.get("step") or "")
    except ValueError:  # a row without a step: kept, it cannot be told to belong to a later step
        return float("-inf")
