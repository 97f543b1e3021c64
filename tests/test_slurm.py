"""led.training.slurm: which signal a SLURM job gets before its time limit, which job `scontrol requeue` names, and a
refused requeue. The whole path (signal, last.ckpt, requeue, exact resume) is in tests/test_resume.py."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import pytest

from led.errors import ConfigError
from led.training import slurm
from led.training.callbacks import ResumeCheckpoint


def test_the_signal_is_the_configured_one_or_submitits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert slurm.requeue_signal("USR1") is signal.SIGUSR1
    assert slurm.requeue_signal("SIGUSR2") is signal.SIGUSR2
    # hydra/launcher=slurm: submitit wrote `#SBATCH --signal=USR2@<signal_delay_s>` (or its override) itself.
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert slurm.requeue_signal("USR1") is signal.SIGUSR2
    monkeypatch.setenv(slurm.SUBMITIT_SIGNAL, "USR1")
    assert slurm.requeue_signal("USR2") is signal.SIGUSR1


def test_a_bad_signal_name_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"callbacks.last_checkpoint.requeue_signal='USR3' is not a signal; give "
                                          r"one as sbatch --signal names it, e.g. USR1"):
        ResumeCheckpoint(str(tmp_path), requeue_signal="USR3")


def test_job_id_names_the_array_task_of_a_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    assert slurm.job_id() is None
    monkeypatch.setenv("SLURM_JOB_ID", "4243")
    assert slurm.job_id() == "4243"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4242")  # the submitit launcher submits a sweep as a job array
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert slurm.job_id() == "4242_1"


@pytest.mark.parametrize("scontrol", [None, "#!/bin/sh\necho 'Requested operation is presently disabled' >&2\nexit 1\n"])
def test_a_refused_or_impossible_requeue_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture, scontrol: str | None) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol at all, or one that refuses
    if scontrol is not None:
        (tmp_path / "scontrol").write_text(scontrol)
        (tmp_path / "scontrol").chmod(0o755)
    with caplog.at_level(logging.WARNING, logger=slurm.__name__):
        assert slurm.requeue("4242") is False
    (message,) = [record.getMessage() for record in caplog.records]
    assert "requeue SLURM job 4242 (`scontrol requeue 4242`" in message
    assert message.endswith("submit it again with the same command and ckpt_path=last")
    if scontrol is not None:
        assert "exited with 1: Requested operation is presently disabled" in message
