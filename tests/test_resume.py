"""Fault tolerance (led/training/checkpointing.py, led/training/callbacks.py, led.data.batching.ResumableDataLoader): a run killed with SIGKILL, or stopped by SIGTERM,
and resumed with `ckpt_path=last` ends with the weights of an uninterrupted run; checkpoint writes are atomic; a
damaged checkpoint is reported in one line."""

from __future__ import annotations

import builtins
import csv
import errno
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.trainer.states import TrainerFn
from test_training import FAMILIES, FAMILY_MODELS, ROOT, TINY_CORPUS, make_config
from torch.utils.data import DataLoader

import led.files
from led.data.batching import LengthGroupedBatchSampler, ResumableDataLoader
from led.errors import ConfigError, WriteError
from led.recipes.evaluate import evaluate
from led.recipes.train import build_trainer, resolve_ckpt_path, train
from led.training.callbacks import ResumeCheckpoint
from led.training.checkpointing import (
    AtomicCheckpointIO,
    restore_rng_states,
    rng_states,
)
from led.training.module import NonFiniteLossError

# 12 training records in batches of 2: 6 steps an epoch, so 8 steps cross into a second epoch. Dropout is on
# (the default run has none), so the RNG states must be restored; validation at steps 3 and 6, last.ckpt every 2 steps.
# RESUMABLE[family]: those settings for the tiny model of each family.
COMMON = [*TINY_CORPUS, "model.overrides.dropout=0.1", "trainer.max_steps=8", "trainer.val_check_interval=3",
             "trainer.limit_val_batches=1", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
             "trainer.deterministic=true", "module.val_rouge_examples=1", "generation.num_beams=1",
             "generation.max_new_tokens=4", "callbacks.last_checkpoint.every_n_train_steps=2"]
RESUMABLE = {family: [*COMMON, *FAMILY_MODELS[family]] for family in FAMILIES}


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    # The tiny model is ~20x faster on one thread than on two contended ones (shared CI machines).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def uninterrupted_runs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """uninterrupted_runs(family): the overrides every run of that family shares (corpus, tokenizer) and the final
    checkpoint of an uninterrupted run (trained once, on first use)."""
    runs: dict[str, tuple[list[str], dict[str, Any]]] = {}

    def run(family: str) -> tuple[list[str], dict[str, Any]]:
        if family not in runs:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            tmp = tmp_path_factory.mktemp(f"uninterrupted_{family}")
            overrides = [f"data.synthetic.dir={tmp / 'corpus'}", *RESUMABLE[family]]
            train(make_config(tmp, *overrides))
            torch.set_num_threads(threads)
            # Every run uses the tokenizer this one trained, so all of them tokenise identically.
            overrides.append(f"data.tokenizer={tmp / 'run' / 'tokenizer'}")
            runs[family] = overrides, load(tmp / "run" / "checkpoints" / "last.ckpt")
        return runs[family]

    return run


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_runs: Any) -> tuple[list[str], dict[str, Any]]:
    """The LED run: the tests of what does not depend on the model."""
    return uninterrupted_runs("led")


class PauseAt(L.Callback):
    """For the subprocess runs: at the start of the batch after optimizer step `step` (its last.ckpt, if any, is
    written), create `marker` and wait for the test's signal. After SIGTERM the step runs on."""

    def __init__(self, step: int, marker: str, timeout: float = 120.0) -> None:
        self.step, self.marker, self.timeout = step, Path(marker), timeout

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if trainer.global_step != self.step or self.marker.exists():
            return
        self.marker.write_text(str(trainer.global_step))
        deadline = time.monotonic() + self.timeout
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.05)


class SignalAt(L.Callback):
    """Sends `signum` to this process at the start of the batch after optimizer step `step`."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


# What the run directory held when a test callback acted (signal sent, loss poisoned), by run directory.
FILES_AT_SIGNAL: dict[str, dict[str, bytes]] = {}


def files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


class SignalInFinalValidation(L.Callback):
    """Sends SIGTERM to this process at the first batch of the validation after fit (`trainer.validate`), after
    recording the run directory's files as they are then."""

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            FILES_AT_SIGNAL[trainer.default_root_dir] = files(Path(trainer.default_root_dir))
            os.kill(os.getpid(), signal.SIGTERM)


class NaNLossAt(L.Callback):
    """From optimizer step `step` on, the loss is NaN (a diverged run): the logits bias is set to NaN at the start of
    that step, after recording the run directory's files."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if trainer.global_step == self.step:
            FILES_AT_SIGNAL[trainer.default_root_dir] = files(Path(trainer.default_root_dir))
            pl_module.model.final_logits_bias.fill_(float("nan"))


def training_command(run_dir: Path, overrides: list[str], pause_at: int,
                     env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """`python train.py` pausing (see PauseAt) once `pause_at` steps are done, and its environment (`env` added)."""
    marker = run_dir.parent / "paused"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]), "OMP_NUM_THREADS": "1",
           **(env or {})}
    command = [sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={run_dir}",
               "+callbacks.pause._target_=test_resume.PauseAt", f"+callbacks.pause.step={pause_at}",
               f"+callbacks.pause.marker={marker}"]
    return command, env


def start_training(run_dir: Path, overrides: list[str], pause_at: int,
                   env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python train.py` in a subprocess, paused (see PauseAt) once `pause_at` steps are done."""
    marker = run_dir.parent / "paused"
    command, env = training_command(run_dir, overrides, pause_at, env)
    # Its own process group, which the test can signal whole, as a terminal or a scheduler does.
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 240
    while not marker.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"training never reached step {pause_at}:\n{process.communicate()[1][-3000:]}")
        time.sleep(0.1)
    return process


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_training_state(resumed: dict[str, Any], expected: dict[str, Any]) -> None:
    assert resumed["global_step"] == expected["global_step"]
    different = [name for name, tensor in expected["state_dict"].items()
                 if not torch.equal(resumed["state_dict"][name], tensor)]
    worst = max((float((resumed["state_dict"][n] - expected["state_dict"][n]).abs().max()) for n in different),
                default=0.0)
    assert not different, f"{len(different)} tensors differ (max abs diff {worst:.3g}), e.g. {different[:3]}"
    for state, reference in zip(resumed["optimizer_states"][0]["state"].values(),
                                expected["optimizer_states"][0]["state"].values()):
        assert torch.equal(state["exp_avg"], reference["exp_avg"])
        assert torch.equal(state["exp_avg_sq"], reference["exp_avg_sq"])
    assert resumed["lr_schedulers"] == expected["lr_schedulers"]


# ------------------------------------------------------------------------------------------- whole runs
@pytest.mark.parametrize("family", FAMILIES)
def test_run_killed_mid_epoch_resumes_to_the_same_weights(family: str, tmp_path: Path, uninterrupted_runs: Any) -> None:
    overrides, expected = uninterrupted_runs(family)
    assert expected["model_config"]["model_type"] == family
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    process = start_training(tmp_path / "run", overrides, pause_at=4)
    process.kill()  # SIGKILL: nothing runs after it
    process.communicate()
    assert load(last)["global_step"] == 4  # mid-epoch: 4 of the epoch's 6 batches
    assert not list(last.parent.glob(".*.partial"))

    train(make_config(tmp_path, *overrides, "ckpt_path=last"))
    assert_same_training_state(load(last), expected)


def test_sigterm_saves_a_resumable_checkpoint_after_the_current_step(tmp_path: Path,
                                                                     uninterrupted: tuple[list[str], dict]) -> None:
    overrides, expected = uninterrupted
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    # DataLoader workers too: the signal goes to the whole process group (SLURM, Ctrl+C), workers ignore it.
    process = start_training(tmp_path / "run", [*overrides, "data.num_workers=2"], pause_at=4)
    os.killpg(process.pid, signal.SIGTERM)  # during step 5: it finishes, then last.ckpt is saved
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr[-3000:]
    assert f"training stopped by a signal at step 5; resume it with `python train.py ckpt_path=last " \
           f"hydra.run.dir={tmp_path / 'run'}`" in stderr
    assert load(last)["global_step"] == 5  # not a multiple of every_n_train_steps: saved because of the signal
    assert not (tmp_path / "run" / "metrics.json").exists()  # no final validation after a stop

    train(make_config(tmp_path, *overrides, "ckpt_path=last"))
    assert_same_training_state(load(last), expected)


def test_slurm_time_limit_signal_saves_requeues_and_the_requeued_job_resumes_exactly(
        tmp_path: Path, uninterrupted: tuple[list[str], dict]) -> None:
    overrides, expected = uninterrupted
    run, last = tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.ckpt"
    # A task of an sbatch job started by srun, with a stand-in scontrol that records what it is asked.
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol-calls"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    slurm_env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1",
                 "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NAME": "led-train"}
    job = [*overrides, "data.num_workers=2", "ckpt_path=last"]  # the command of the sbatch script

    # `#SBATCH --signal=USR1@90`: SLURM signals every process of the job step, DataLoader workers included.
    process = start_training(run, job, pause_at=4, env=slurm_env)
    os.killpg(process.pid, signal.SIGUSR1)  # during step 5: it finishes, last.ckpt is saved, then the requeue
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr[-3000:]
    assert calls.read_text().splitlines() == ["requeue 4242"]
    assert "requeued SLURM job 4242" in stdout + stderr  # Hydra's log handler writes to stdout
    assert load(last)["global_step"] == 5 and not list(last.parent.glob(".*.partial"))
    assert not list(run.glob("hpc_ckpt_*.ckpt"))  # Lightning's own SLURM handler did not run

    # SLURM starts the requeued job with the same command (and job id): it resumes from last.ckpt.
    command, env = training_command(run, job, pause_at=4, env=slurm_env)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_training_state(load(last), expected)
    assert calls.read_text().splitlines() == ["requeue 4242"]  # no signal, no second requeue


def test_ctrl_c_stops_after_the_step_with_a_checkpoint(tmp_path: Path, uninterrupted: tuple[list[str], dict]) -> None:
    overrides, _ = uninterrupted
    sigint_handler = signal.getsignal(signal.SIGINT)
    cfg = make_config(tmp_path, *overrides, "+callbacks.interrupt._target_=test_resume.SignalAt",
                      "+callbacks.interrupt.step=2", f"+callbacks.interrupt.signum={int(signal.SIGINT)}")
    with pytest.raises(SystemExit, match="training stopped by a signal at step 3; resume it with"):
        train(cfg)
    assert load(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 3
    assert signal.getsignal(signal.SIGINT) is sigint_handler


def test_sigterm_during_the_final_validation_stops_at_once_and_says_how_to_evaluate(
        tmp_path: Path, uninterrupted: tuple[list[str], dict]) -> None:
    overrides, _ = uninterrupted
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    run, last = tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.ckpt"
    # 4 steps: the loop's own validation runs at step 3, so the final weights need a validation of their own.
    cfg = make_config(tmp_path, *overrides, "trainer.max_steps=4",
                      "+callbacks.stop._target_=test_resume.SignalInFinalValidation")
    with pytest.raises(SystemExit) as stopped:
        train(cfg)
    message = str(stopped.value)
    assert message.startswith(
        "training finished at step 4, but a signal stopped the run before the final validation: metrics.json was not "
        f"written. The weights are in {last}; compute the metrics with `python evaluate.py ckpt_path={last} "
        f"split=validation limit=1 output_dir={run / 'final_validation'}`")
    assert "\n" not in message and load(last)["global_step"] == 4
    assert files(run) == FILES_AT_SIGNAL[str(run)]  # nothing written (or damaged) after the signal
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers

    # The command it prints computes the metrics.
    arguments = shlex.split(message.split("`")[1])
    assert arguments[:2] == ["python", "evaluate.py"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        eval_cfg = compose("eval", overrides=arguments[2:] + ["rouge.bootstrap=10"])
    assert evaluate(eval_cfg)["num_examples"] == 1
    assert (run / "final_validation" / "metrics.json").is_file()


def test_sigterm_in_the_last_step_saves_it_and_skips_the_final_validation(
        tmp_path: Path, uninterrupted: tuple[list[str], dict]) -> None:
    overrides, _ = uninterrupted
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    cfg = make_config(tmp_path, *overrides, "trainer.max_steps=3", "+callbacks.interrupt._target_=test_resume.SignalAt",
                      "+callbacks.interrupt.step=2", f"+callbacks.interrupt.signum={int(signal.SIGTERM)}")
    with pytest.raises(SystemExit, match=r"^training finished at step 3, but a signal stopped the run before the final "
                                         r"validation: .* compute the metrics with `python evaluate.py ckpt_path="):
        train(cfg)
    assert load(last)["global_step"] == 3  # not a multiple of every_n_train_steps: saved because of the signal
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_resumed_run_keeps_the_metrics_logged_before_the_interruption(
        tmp_path: Path, uninterrupted: tuple[list[str], dict]) -> None:
    overrides, _ = uninterrupted
    metrics_csv = tmp_path / "run" / "csv" / "metrics.csv"
    stop = ["+callbacks.interrupt._target_=test_resume.SignalAt", "+callbacks.interrupt.step=4",
            f"+callbacks.interrupt.signum={int(signal.SIGTERM)}"]
    with pytest.raises(SystemExit, match="training stopped by a signal at step 5"):
        train(make_config(tmp_path, *overrides, *stop))
    before = read_rows(metrics_csv)
    assert sorted(int(row["step"]) for row in before if "train/loss" in row) == [0, 1, 2, 3, 4]
    assert any("val/loss" in row for row in before)  # the validation after step 3

    train(make_config(tmp_path, *overrides, "ckpt_path=last"))
    after = read_rows(metrics_csv)
    assert after[: len(before)] == before
    assert sorted(int(row["step"]) for row in after if "train/loss" in row) == list(range(8))
    assert [int(row["step"]) for row in after] == sorted(int(row["step"]) for row in after)


def test_nan_loss_stops_without_touching_the_last_checkpoint(tmp_path: Path,
                                                            uninterrupted: tuple[list[str], dict]) -> None:
    overrides, _ = uninterrupted
    run = tmp_path / "run"
    cfg = make_config(tmp_path, *overrides, "+callbacks.poison._target_=test_resume.NaNLossAt",
                      "+callbacks.poison.step=3")
    with pytest.raises(NonFiniteLossError, match=r"^the training loss is nan at step 3 on the batch with ids \[\d+, "
                                                 r"\d+\]; nothing was saved over the last checkpoint"):
        train(cfg)
    assert load(run / "checkpoints" / "last.ckpt")["global_step"] == 2
    before, after = FILES_AT_SIGNAL[str(run)], files(run)
    assert after.keys() == before.keys()
    for name, data in before.items():  # as before the bad step; metrics.csv only gained rows (the step's lr)
        assert after[name].startswith(data) if name == "csv/metrics.csv" else after[name] == data, name
    assert not (run / "metrics.json").exists()


def read_rows(path: Path) -> list[dict[str, str]]:
    """metrics.csv's rows, each with its non-empty cells only (a resumed run may add columns)."""
    with path.open(newline="") as file:
        return [{key: value for key, value in row.items() if value} for row in csv.DictReader(file)]


# ------------------------------------------------------------------------------------------- the pieces
@pytest.mark.parametrize("workers", [0, 2])
def test_loader_resumes_mid_epoch_after_the_batches_already_trained_on(workers: int) -> None:
    lengths = [(i * 7) % 23 + 1 for i in range(30)]

    def loader() -> ResumableDataLoader:
        # Workers fetch batches ahead of the training loop: the state counts those handed out, not those fetched.
        sampler = LengthGroupedBatchSampler(lengths, 3, seed=5, mega_batch_mult=2)
        return ResumableDataLoader(list(range(30)), batch_sampler=sampler, collate_fn=list, num_workers=workers,
                                   persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))

    def epoch(data: DataLoader, number: int) -> list[list[int]]:
        data.batch_sampler.set_epoch(number)
        return list(data)

    full = loader()
    expected = [epoch(full, 0), epoch(full, 1)]
    first = loader()
    first.batch_sampler.set_epoch(1)
    batches = iter(first)
    seen = [next(batches) for _ in range(4)]
    state = first.state_dict()
    assert state == {"epoch": 1, "batches": 4} and seen == expected[1][:4]

    resumed = loader()
    resumed.load_state_dict(state)
    rest = epoch(resumed, 1)
    assert rest == expected[1][4:] and len(resumed) == len(expected[1])
    assert resumed.state_dict() == {"epoch": 1, "batches": len(expected[1])}
    assert epoch(resumed, 2) == epoch(full, 2)  # the next epoch is whole again

    at_epoch_end = loader()
    at_epoch_end.load_state_dict({"epoch": 0, "batches": len(expected[0])})
    assert epoch(at_epoch_end, 1) == expected[1]  # Lightning moves on to epoch 1: nothing is skipped


def test_random_states_round_trip() -> None:
    states = rng_states()
    expected = (torch.rand(3), np.random.rand(), random.random())
    restore_rng_states(states, rank=0, world_size=1)
    again = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]


def test_trainer_writes_checkpoints_atomically_and_last_ckpt_every_n_steps(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, "callbacks.last_checkpoint.every_n_train_steps=50")
    trainer = build_trainer(cfg, tmp_path / "run")
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    last = [c for c in trainer.callbacks if isinstance(c, ResumeCheckpoint)]
    assert len(last) == 1 and last[0]._every_n_train_steps == 50
    with pytest.raises(ValueError, match="every_n_train_steps=0 must be an integer >= 1"):
        ResumeCheckpoint(str(tmp_path), every_n_train_steps=0)


def test_a_failing_save_leaves_the_previous_checkpoint_intact(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 4, "weights": torch.arange(1000.0)}, path)

    class DiskFull:
        """A file on a disk that fills up after 4 KiB: the first writes land, then ENOSPC."""

        def __init__(self, name: Path, mode: str) -> None:
            self.file, self.written = builtins.open(name, mode), 0

        def write(self, data: Any) -> int:
            self.written += len(data)
            if self.written > 4096:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.file.write(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.file, name)

        def __enter__(self) -> DiskFull:
            return self

        def __exit__(self, *exc: Any) -> None:
            self.file.close()

    monkeypatch.setattr(led.files, "open", DiskFull, raising=False)
    with pytest.raises(WriteError) as failure:
        io.save_checkpoint({"global_step": 6, "weights": torch.zeros(100_000)}, path)
    assert failure.value.errno == errno.ENOSPC
    assert str(failure.value).startswith(f"could not save checkpoint {path}: No space left on device while writing "
                                         f"{path.parent / f'.last.ckpt.{os.getpid()}.partial'}; the previous last.ckpt")
    monkeypatch.undo()
    assert io.load_checkpoint(path)["global_step"] == 4
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_a_truncated_or_damaged_checkpoint_is_reported_in_one_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 4, "weights": torch.arange(10_000.0)}, last)
    AtomicCheckpointIO().save_checkpoint({"global_step": 2}, last.with_name("step2.ckpt"))
    whole = last.read_bytes()

    last.write_bytes(whole[: len(whole) // 2])  # a crash while copying it, a full disk under a plain write
    expected = (rf"checkpoint {re.escape(str(last))} is corrupt or truncated \(File is not a zip file, .*\); resume "
                r"from an earlier checkpoint \(others in .*: step2.ckpt\) with ckpt_path=PATH, or start over with "
                r"ckpt_path=null")
    with pytest.raises(ConfigError, match=expected):
        resolve_ckpt_path("last", run_dir)

    damaged = bytearray(whole)
    offset = whole.index(torch.arange(10_000.0)[5000:5008].numpy().tobytes())
    damaged[offset: offset + 8] = b"\xff" * 8  # torch.load would read these as NaN weights without a word
    last.write_bytes(bytes(damaged))
    with pytest.raises(ConfigError, match=r"is corrupt or truncated \(record archive/data/0 fails its CRC check\)"):
        resolve_ckpt_path(str(last), run_dir)

    last.write_bytes(whole)
    assert resolve_ckpt_path("last", run_dir) == str(last)
