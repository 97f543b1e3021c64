"""`report.html`: one self-contained page per training run, evaluation or sweep directory, so a run is looked at,
not read (`python -m led.report PATH`; train.py, evaluate.py and a sweep write theirs at the end by themselves).

What kind of directory it is comes from its files: a sweep has summary.csv, a training run config.yaml, an
evaluation metrics.json without config.yaml. led.stats writes the data's page (stats.html) the same way.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from led.errors import UserError
from led.files import write_text_atomically

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"


class ReportError(UserError, ValueError):
    """A directory that is none of a run, an evaluation or a sweep."""


def write_report(directory: str | Path) -> Path:
    """Draw the page of `directory` into `directory/report.html` and return its path."""
    # The page modules import matplotlib on first use: importing led.report costs the recipes nothing.
    from led.report.evaluation import evaluation_page, is_evaluation
    from led.report.run import is_run, run_page
    from led.report.sweep import is_sweep, sweep_page

    directory = Path(directory)
    if not directory.is_dir():
        raise ReportError(f"path={directory} is not a directory: give a training run, evaluation or sweep directory")
    if is_sweep(directory):
        html = sweep_page(directory)
    elif is_run(directory):
        html = run_page(directory)
    elif is_evaluation(directory):
        html = evaluation_page(directory)
    else:
        raise ReportError(f"path={directory} is none of a training run (config.yaml), an evaluation (metrics.json) or "
                          "a sweep (summary.csv)")
    path = directory / REPORT_FILE
    write_text_atomically(path, html, what="report")
    return path


def write_report_safely(directory: str | Path) -> Path | None:
    """`write_report`, for the end of a run: a page that cannot be drawn is a warning, never a failed run (the
    metrics are written already)."""
    started = time.perf_counter()
    try:
        path = write_report(directory)
    except Exception as error:  # any failure to draw: the run's results stand without their page
        log.warning("could not write %s in %s: %s: %s (the run's results are unaffected; retry with "
                    "`python -m led.report %s`)", REPORT_FILE, directory, type(error).__name__, error, directory)
        return None
    log.info("wrote %s in %.1f s", path, time.perf_counter() - started)
    return path
