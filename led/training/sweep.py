"""`SweepSummary`: the Hydra callback (conf/config.yaml, `hydra.callbacks`) that keeps a table of a sweep.

`python train.py -m optimizer.lr=1e-5,3e-5 model.attention_window=32,64` runs each combination in its own
directory under `hydra.sweep.dir`; this callback writes `<sweep dir>/summary.csv` with one row per job: its
number and status, one column per swept key, the final validation metrics from the job's metrics.json, the
job's run directory, all its overrides and, for a failed job, its error. The table is rewritten after every
job, so it is complete even when Hydra stops the sweep with a failed job's error at the end, and it shows what
a sweep killed midway had finished. Plain runs (`python train.py`) are left alone.

Each job also leaves `sweep_job.json` in its directory (its overrides and status: running, completed or
failed); the table is built from those files, so jobs run elsewhere (the SLURM launcher) are summarised too.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from led.files import write_text_atomically
from led.report import write_report_safely

JOB_FILE = "sweep_job.json"
METRIC_COLUMNS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "loss", "lead_rouge1", "global_step", "train_minutes")


class SweepSummary(Callback):
    """Writes `<hydra.sweep.dir>/<filename>` during and after a multirun (see the module docstring)."""

    def __init__(self, filename: str = "summary.csv") -> None:
        self.filename = filename

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _records(config):
            _write_job_file(config, status="running")

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not _records(config):
            return
        error = ""
        if job_return.status == JobStatus.FAILED:
            try:
                job_return.return_value  # re-raises the job's exception
            except Exception as exception:  # whatever the job raised is what the table reports
                error = _one_line(exception)
        _write_job_file(config, status="failed" if error else "completed", error=error)
        self.write_table(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if _is_main_process():
            self.write_table(Path(config.hydra.sweep.dir))

    def write_table(self, sweep_dir: Path) -> Path:
        """Collect every job's `sweep_job.json` and metrics.json under `sweep_dir` into the CSV table."""
        jobs = [json.loads(path.read_text()) for path in sweep_dir.glob(f"**/{JOB_FILE}")]
        jobs.sort(key=lambda job: job["job"])
        keys: list[str] = []  # the swept keys: overrides whose value differs between jobs
        for job in jobs:
            keys += [key for key in job["overrides"] if key not in keys
                     and len({other["overrides"].get(key) for other in jobs}) > 1]
        columns = ["job", "status", *keys, *METRIC_COLUMNS, "run_dir", "overrides", "error"]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for job in jobs:
            metrics_file = Path(job["run_dir"]) / "metrics.json"
            metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
            overrides = job["overrides"]
            writer.writerow({"job": job["job"], "status": job["status"],
                             **{key: overrides.get(key, "") for key in keys},
                             **{name: metrics.get(name, "") for name in METRIC_COLUMNS}, "run_dir": job["run_dir"],
                             "overrides": " ".join(f"{key}={value}" for key, value in overrides.items()),
                             "error": job["error"]})
        path = sweep_dir / self.filename
        write_text_atomically(path, out.getvalue())
        if self.filename == "summary.csv":  # the page reads that name (led.report.sweep)
            write_report_safely(sweep_dir)
        return path


def _records(config: DictConfig) -> bool:
    """Only multirun jobs are recorded, and only by their first process (a job under `srun` with several tasks
    runs this callback in each; the processes Lightning's DDP starts are plain runs)."""
    return config.hydra.mode == RunMode.MULTIRUN and _is_main_process()


def _is_main_process() -> bool:
    return os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0"


def _write_job_file(config: DictConfig, status: str, error: str = "") -> None:
    job_dir = Path(config.hydra.runtime.output_dir)  # under the sweep directory, where write_table looks
    overrides = dict(override.split("=", 1) for override in config.hydra.overrides.task if "=" in override)
    job = {"job": int(config.hydra.job.num), "status": status, "overrides": overrides,
           "run_dir": str(config.get("run_dir") or job_dir), "error": error}
    write_text_atomically(job_dir / JOB_FILE, json.dumps(job, indent=2) + "\n")


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())[:500]
