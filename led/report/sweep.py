"""The page of a sweep (`python train.py -m ...`): the objective (validation ROUGE-1) against each swept setting, and
the failed jobs with their error, from `<sweep dir>/summary.csv` (led.training.sweep.SweepSummary)."""

from __future__ import annotations

import csv
from pathlib import Path

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

OBJECTIVE = "rouge1"
# summary.csv's columns that are not swept settings (led.training.sweep writes them around the swept keys).
FIXED_COLUMNS = ("job", "status", "rouge1", "rouge2", "rougeL", "rougeLsum", "loss", "lead_rouge1", "global_step",
                 "train_minutes", "run_dir", "overrides", "error")


def is_sweep(directory: Path) -> bool:
    return (directory / "summary.csv").is_file()


def sweep_page(directory: Path) -> str:
    with open(directory / "summary.csv", newline="") as file:
        jobs = list(csv.DictReader(file))
    swept = [key for key in (jobs[0] if jobs else {}) if key not in FIXED_COLUMNS]
    failed = [job for job in jobs if job["status"] == "failed"]
    done = sum(job["status"] == "completed" for job in jobs)
    return page(f"Sweep {directory.name}", [
        section(f"Validation {OBJECTIVE} against each swept setting",
                charts(*(setting_chart(jobs, key) for key in swept)) if swept else note("no setting was swept")),
        section(f"Failed jobs ({len(failed)})", table(["job", *swept, "error"],
                                                      [[j["job"], *(j[k] for k in swept), j["error"]] for j in failed])
                if failed else note("none")),
        section("All jobs", table(["job", "status", *swept, OBJECTIVE, "loss", "run_dir"],
                                  [[j["job"], j["status"], *(j[k] for k in swept), j[OBJECTIVE], j["loss"],
                                    j["run_dir"]] for j in jobs])),
    ], subtitle=f"{len(jobs)} jobs, {done} completed, {len(failed)} failed — {directory.resolve()}")


def setting_chart(jobs: list[dict[str, str]], key: str) -> str:
    """The objective of each finished job against `key`: numbers on a log axis when they span a decade (learning
    rates), other values (model sizes, names) as categories."""
    points = [(job[key], float(job[OBJECTIVE])) for job in jobs if job.get(OBJECTIVE) not in ("", None)]
    if not points:
        return empty_chart(key, "no job finished")
    figure, axes = new_figure()
    numeric = all(_is_number(value) for value, _ in points)
    if numeric:
        xs = [float(value) for value, _ in points]
        axes.scatter(xs, [y for _, y in points], color="#2171b5")
        if min(xs) > 0 and max(xs) / min(xs) >= 10:
            axes.set_xscale("log")
    else:
        categories = sorted({value for value, _ in points})
        axes.scatter([categories.index(value) for value, _ in points], [y for _, y in points], color="#2171b5")
        axes.set_xticks(range(len(categories)), categories, fontsize=8, rotation=20)
    axes.set(title=f"{OBJECTIVE} against {key}", xlabel=key, ylabel=f"validation {OBJECTIVE}")
    return figure_html(figure, f"{OBJECTIVE} against {key}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
