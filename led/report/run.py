"""The page of a training run: its curves (from the CSV logger's `csv/metrics.csv`), final metrics (metrics.json),
key settings (config.yaml) and the logged validation summaries beside their references (samples.jsonl)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from led.report.page import (
    charts,
    empty_chart,
    figure_html,
    new_figure,
    note,
    page,
    section,
    table,
)

# The settings that tell one run from another, in the order a reader compares them; missing ones are left out.
KEY_SETTINGS = (
    "model.size", "model.pretrained", "model.attention_window", "data.max_input_length", "data.max_target_length",
    "data.batch_size", "data.max_tokens_per_batch", "optimizer._target_", "optimizer.lr", "optimizer.weight_decay",
    "scheduler._target_", "scheduler.warmup_steps", "trainer.max_steps", "trainer.max_epochs",
    "trainer.accumulate_grad_batches", "trainer.precision", "trainer.devices", "generation.num_beams",
    "generation.max_new_tokens", "seed",
)
ROUGE_COLUMNS = ("val/rouge1", "val/rouge2", "val/rougeL", "val/rougeLsum")


def is_run(directory: Path) -> bool:
    return (directory / "config.yaml").is_file() and ((directory / "csv").is_dir() or
                                                     (directory / "metrics.json").is_file())


def run_page(directory: Path) -> str:
    rows = read_metrics_csv(directory / "csv" / "metrics.csv")
    metrics = _read_json(directory / "metrics.json")
    return page(f"Training run {directory.name}", [
        section("Curves", curves(rows)),
        section("Final validation", table(["metric", "value"], metrics.items()) if metrics else
                note("no metrics.json: the run did not finish its final validation")),
        section("Key settings", settings_table(directory / "config.yaml")),
        section("Validation summaries", samples_table(directory / "samples.jsonl")),
    ], subtitle=str(directory.resolve()))


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    """The CSV logger's rows as numbers; empty cells (a metric not logged on that row) are left out."""
    if not path.is_file():
        return []
    with open(path, newline="") as file:
        return [{key: float(value) for key, value in row.items() if key and value not in ("", None)}
                for row in csv.DictReader(file)]


def series(rows: list[dict[str, float]], column: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one column, over the rows that logged it."""
    points = [(row["step"], row[column]) for row in rows if column in row and "step" in row]
    return [p[0] for p in points], [p[1] for p in points]


def smoothed(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average, debiased like TensorBoard's, so the first points are not pulled to zero."""
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight ** i))
    return out


def curves(rows: list[dict[str, float]]) -> str:
    if not rows:
        return note("no csv/metrics.csv: this run logged without the CSV logger (logger=csv draws its curves)")
    return charts(loss_chart(rows), line_chart(rows, ["val/loss"], "validation loss"),
                  line_chart(rows, list(ROUGE_COLUMNS), "validation ROUGE (F1 x100)"),
                  line_chart(rows, sorted({key for row in rows for key in row if key.startswith("lr-")}),
                             "learning rate"))


def loss_chart(rows: list[dict[str, float]]) -> str:
    steps, values = series(rows, "train/loss")
    finite = [(s, v) for s, v in zip(steps, values) if math.isfinite(v)]
    if not finite:
        return empty_chart("train loss", "not logged")
    figure, axes = new_figure()
    steps, values = [p[0] for p in finite], [p[1] for p in finite]
    axes.plot(steps, values, color="#9ecae1", linewidth=1, label="raw")
    axes.plot(steps, smoothed(values), color="#08519c", linewidth=2, label="smoothed (EMA 0.9)")
    axes.set(title="train loss", xlabel="step")
    axes.legend(fontsize=8)
    return figure_html(figure, "train loss against step")


def line_chart(rows: list[dict[str, float]], columns: list[str], title: str) -> str:
    drawn = [(column, *series(rows, column)) for column in columns]
    drawn = [item for item in drawn if item[1]]
    if not drawn:
        return empty_chart(title, "not logged")
    figure, axes = new_figure()
    for column, steps, values in drawn:
        axes.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=column)
    axes.set(title=title, xlabel="step")
    if len(drawn) > 1:
        axes.legend(fontsize=8)
    if title == "learning rate":
        axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    return figure_html(figure, f"{title} against step")


def settings_table(path: Path) -> str:
    if not path.is_file():
        return note("no config.yaml")
    from omegaconf import OmegaConf

    config = OmegaConf.load(path)
    rows = []
    for key in KEY_SETTINGS:
        value = OmegaConf.select(config, key, default=None, throw_on_missing=False)
        if value is not None:
            rows.append((key, value))
    return table(["setting", "value"], rows) + note(f"all settings: {path.name} in the run directory")


def samples_table(path: Path) -> str:
    samples = _read_jsonl(path)
    if not samples:
        return note("no samples.jsonl: the run logged no validation summaries (module.num_logged_samples=0?)")
    rows = [(s.get("id", ""), s.get("prediction", "") or "(empty)", s.get("reference", "")) for s in samples]
    return table(["id", "generated", "reference"], rows, text_columns=(1, 2))


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

