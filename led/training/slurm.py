"""SLURM time limits and preemption: the signal SLURM sends shortly before it stops a job, and the requeue.

sbatch `--signal=USR1@90` makes SLURM send SIGUSR1 to every task of the job 90 s before its time limit (or before a
preemption); `led.training.callbacks.ResumeCheckpoint` then lets the current step finish, saves last.ckpt and asks
SLURM to requeue the job (`scontrol requeue`). The requeued job runs the same command, keeps its job id (so
`hydra.run.dir=outputs/train/$SLURM_JOB_ID` is the same directory) and with `ckpt_path=last` resumes exactly.

Lightning's own `SLURMEnvironment(auto_requeue=True)` also handles SIGUSR1, but saves `hpc_ckpt_N.ckpt` from inside
the signal handler, i.e. between any two Python instructions of a step (a half-applied update, the data position of
another step; under FSDP a collective that ranks reach at different points): that is not a checkpoint a run can
resume from exactly. Here the signal only asks the training loop to stop after the step, as SIGTERM does, so the
save is the one every other stop uses.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess

from lightning.fabric.plugins.environments import SLURMEnvironment

from led.errors import ConfigError

log = logging.getLogger(__name__)

# The Hydra submitit launcher (hydra/launcher=slurm) asks sbatch for its own signal, `--signal=USR2@signal_delay_s`
# (USR2 unless SUBMITIT_PREEMPT_SIGNAL names another), and marks its jobs with SUBMITIT_EXECUTOR=slurm.
SUBMITIT_SIGNAL = "SUBMITIT_PREEMPT_SIGNAL"


def parse_signal(name: str, setting: str) -> signal.Signals:
    """`USR1`, `SIGUSR1` or `10` -> signal.SIGUSR1; anything else is a ConfigError naming `setting`."""
    text = str(name).strip().upper()
    try:
        return signal.Signals(int(text)) if text.isdigit() else signal.Signals[text if text.startswith("SIG")
                                                                                else f"SIG{text}"]
    except (KeyError, ValueError):
        raise ConfigError(f"{setting}={name!r} is not a signal; give one as sbatch --signal names it, e.g. USR1 or "
                          "USR2") from None


def in_slurm_job() -> bool:
    """Whether this process is a task of a SLURM job started by srun (Lightning's rule: SLURM_NTASKS set and a job
    name other than 'bash'/'interactive', which mark an interactive allocation used with another launcher)."""
    return SLURMEnvironment.detect()


def requeue_signal(configured: str) -> signal.Signals:
    """The signal SLURM will send before the time limit: under the Hydra submitit launcher the one it put in the
    sbatch script, else `configured` (what the user's `#SBATCH --signal=` names)."""
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
        return parse_signal(os.environ.get(SUBMITIT_SIGNAL, "USR2"), SUBMITIT_SIGNAL)
    return parse_signal(configured, "callbacks.last_checkpoint.requeue_signal")


def job_id() -> str | None:
    """The id `scontrol requeue` takes: `<array job>_<task>` for a task of a job array (a sweep's jobs), else the
    job id; None outside SLURM."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def requeue(job: str) -> bool:
    """`scontrol requeue JOB`: SLURM ends this job and queues it again under the same id. Returns whether SLURM
    accepted; a refusal (a job submitted with --no-requeue, a cluster with JobRequeue=0) is logged, not raised: the
    checkpoint is saved either way and the run can be resubmitted by hand."""
    command = ["scontrol", "requeue", job]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        log.warning("could not requeue SLURM job %s (`%s`: %s); submit it again with the same command and "
                    "ckpt_path=last", job, " ".join(command), error)
        return False
    if result.returncode != 0:
        log.warning("could not requeue SLURM job %s (`%s` exited with %d: %s); submit it again with the same "
                    "command and ckpt_path=last", job, " ".join(command), result.returncode,
                    (result.stderr or result.stdout).strip())
        return False
    log.warning("requeued SLURM job %s: it starts again with the same command and, with ckpt_path=last, resumes "
                "from last.ckpt", job)
    return True
