"""Sweeps: `python train.py -m ...` leaves a summary table (led/training/sweep.py) that survives failed jobs, the Optuna
search (conf/hparams_search/) runs trials, and the SLURM launcher (conf/hydra/launcher/slurm.yaml) asks for
what the trainer config says. The plugin tests need the `sweep` and `cluster` extras (.ci/run installs them) and are
skipped without them."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]

TINY = ["data.synthetic.train=8", "data.synthetic.short_train=0", "data.synthetic.validation=2", "data.synthetic.test=2",
        "data.synthetic.min_sentences=15", "data.synthetic.max_sentences=20", "data.tokenizer_vocab_size=400",
        "data.max_input_length=512", "data.batch_size=4", "+model.overrides.max_encoder_position_embeddings=1024",
        "+model.overrides.max_decoder_position_embeddings=128", "trainer.max_steps=2", "trainer.val_check_interval=2",
        "trainer.enable_progress_bar=false", "module.val_rouge_examples=2", "generation.num_beams=1",
        "generation.max_new_tokens=4", "callbacks=none", "logger=none"]


def run_sweep(tmp_path: Path, *overrides: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "train.py"), *overrides, f"data.synthetic.dir={tmp_path / 'corpus'}",
               f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}  # one torch thread
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def summary(tmp_path: Path) -> list[dict[str, str]]:
    with (tmp_path / "sweep" / "summary.csv").open() as rows:
        return list(csv.DictReader(rows))


def test_sweep_summary_has_a_row_per_job_and_survives_a_failed_job(tmp_path: Path) -> None:
    # The first job's odd window is refused; the second one still runs, and the table holds both.
    result = run_sweep(tmp_path, "-m", "model.attention_window=33,32", *TINY)
    assert result.returncode == 1  # Hydra reports the failed job once the sweep is done
    failed, completed = summary(tmp_path)
    assert (failed["job"], failed["status"], failed["model.attention_window"]) == ("0", "failed", "33")
    assert "attention_window=33 is invalid" in failed["error"] and failed["rouge1"] == ""
    assert (completed["job"], completed["status"], completed["model.attention_window"]) == ("1", "completed", "32")
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum", "loss"):
        assert math.isfinite(float(completed[name])), name
    assert completed["global_step"] == "2" and completed["error"] == ""
    assert Path(completed["run_dir"]) == tmp_path / "sweep" / "1"
    assert (tmp_path / "sweep" / "1" / "metrics.json").is_file()
    assert "data.batch_size=4" in completed["overrides"] and "data.batch_size" not in completed  # not swept


def test_optuna_search_runs_trials_and_records_the_best(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    result = run_sweep(tmp_path, "hparams_search=rouge_optuna", "hydra.sweeper.n_trials=2", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = summary(tmp_path)
    assert [row["status"] for row in rows] == ["completed", "completed"]
    for row in rows:  # each trial drew every searched value from its range
        assert 3e-4 <= float(row["optimizer.lr"]) <= 1e-2 and row["scheduler.warmup_steps"] in {"0", "25", "50", "100"}
        assert row["model.attention_window"] in {"32", "64", "128"} and 0 <= float(row["module.label_smoothing"]) <= 0.2
    results = (tmp_path / "sweep" / "optimization_results.yaml").read_text()
    assert f"best_value: {max(float(row['rouge1']) for row in rows)}" in results


def test_slurm_launcher_follows_the_trainer_config(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    overrides = ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (2, 4, 4)

    # What sbatch would get, from a stand-in sbatch that keeps the script and refuses the job.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\nfor a in "$@"; do [ -f "$a" ] && cp "$a" {tmp_path}/job.sh; done\n'
                                    "exit 1\n")
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    run_sweep(tmp_path, "-m", *overrides, "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=90",
              "optimizer.lr=1e-5,3e-5", env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    script = (tmp_path / "job.sh").read_text()
    # USR2 before the time limit: what led.training.slurm expects under this launcher (SUBMITIT_EXECUTOR=slurm).
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu", "--time=90",
                 "--array=0-1", f"--signal=USR2@{launcher.signal_delay_s}"):
        assert f"#SBATCH {line}" in script, line
    assert "export SUBMITIT_EXECUTOR=slurm" in script and "\nsrun " in script
