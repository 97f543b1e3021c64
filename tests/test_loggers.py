"""led.training.loggers: a run continuing in a directory keeps the metrics.csv rows of the steps before its own
(CSVLogger); a chosen logger whose optional package is missing is one line naming the install command."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

from led.training.loggers import CSVLogger, missing_logger_packages


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_rows_of_steps_logged_again_are_replaced_and_earlier_ones_kept(tmp_path: Path) -> None:
    metrics = tmp_path / "csv" / "metrics.csv"
    metrics.parent.mkdir()
    # An interrupted run logged steps 0-3, but its last checkpoint is at step 2: the run resuming from it logs
    # steps 2 and 3 again, with a new column.
    metrics.write_text("epoch,step,train/loss\n0,0,5.0\n0,1,4.0\n0,2,3.0\n0,3,2.5\n")
    logger = CSVLogger(save_dir=tmp_path, name="csv", version="")
    logger.log_metrics({"train/loss": 2.9, "val/loss": 3.1}, step=2)
    logger.save()
    logger.log_metrics({"train/loss": 2.4}, step=3)
    logger.save()
    saved = rows(metrics)
    assert [(row["step"], row["train/loss"]) for row in saved] == [("0", "5.0"), ("1", "4.0"), ("2", "2.9"),
                                                                   ("3", "2.4")]
    assert [row["val/loss"] for row in saved] == ["", "", "3.1", ""]
    assert sorted(p.name for p in metrics.parent.iterdir()) == ["metrics.csv"]  # no partial file left


def test_a_run_starting_over_replaces_every_row(tmp_path: Path) -> None:
    metrics = tmp_path / "csv" / "metrics.csv"
    metrics.parent.mkdir()
    metrics.write_text("step,train/loss\n0,5.0\n1,4.0\n")
    logger = CSVLogger(save_dir=tmp_path, name="csv", version="")
    logger.log_metrics({"train/loss": 7.0}, step=0)
    logger.save()
    assert [(row["step"], row["train/loss"]) for row in rows(metrics)] == [("0", "7.0")]


def test_a_chosen_logger_without_its_package_is_one_line_with_the_install_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = {"wandb": {"_target_": "lightning.pytorch.loggers.WandbLogger"},
              "tensorboard": {"_target_": "lightning.pytorch.loggers.TensorBoardLogger"},
              "csv": {"_target_": "led.training.loggers.CSVLogger"}}
    installed = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name in ("wandb", "tensorboardX") else installed(name, *args))
    # TensorBoard is there (Lightning would take tensorboardX too); wandb is not.
    assert missing_logger_packages(chosen) == [
        "logger.wandb (lightning.pytorch.loggers.WandbLogger) needs the wandb package, which is not installed: "
        "pip install -e '.[wandb]' (or pip install wandb), or choose another logger, e.g. logger=csv"]
    monkeypatch.setattr(importlib.util, "find_spec", installed)
    assert missing_logger_packages(None) == []
