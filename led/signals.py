"""Signals outside the training loop: DataLoader workers that never see Ctrl+C or SIGTERM, and work after training
that stops at once on them (the training loop itself finishes its step and saves last.ckpt:
led.training.callbacks.ResumeCheckpoint).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def stop_signals_blocked(active: bool = True) -> Iterator[None]:
    """Block SIGINT, SIGTERM and SLURM's warning signals (SIGUSR1/SIGUSR2, see led/training/slurm.py) while child
    processes (DataLoader workers) are forked: they inherit the blocked mask and never see the signals, which a
    terminal (Ctrl+C) or a scheduler (SLURM) sends to every process of the job. A worker killed by one (SIGUSR1's
    default action ends a process) would otherwise fail the step the main process is finishing before it stops.
    A signal that arrives meanwhile is delivered to the main process when the block ends."""
    if not (active and hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGUSR1,
                                                         signal.SIGUSR2})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class StopRequested(BaseException):
    """SIGTERM or SIGINT inside `stop_at_once_on_signals()`. A BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way (a data loader, a metric) takes it for an error of its own."""


@contextlib.contextmanager
def stop_at_once_on_signals() -> Iterator[None]:
    """Within the block SIGTERM and SIGINT raise `StopRequested` at once in the main thread.

    For the work after training (the final validation), which saves nothing: training finishes its step on a signal so
    that last.ckpt holds it, but here there is nothing to finish and a scheduler's grace period is better not spent on
    it. Lightning's SIGTERM handler, which `trainer.validate` installs, calls the handler it replaces (this one), so
    the stop also works inside Lightning. Files being written are written whole or not at all: the exception comes
    between two Python instructions, lines are appended by single writes and other files are replaced atomically.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise StopRequested(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
