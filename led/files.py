"""Files written whole or not at all: every file the framework writes (checkpoints, metrics, configs, exported
models, tokenised caches) goes through here.

A file is written to a hidden temporary name beside its target, flushed to disk and renamed over the target, so a
reader, a crash, a SIGKILL or a full disk sees the old file or the new one, never half of one. The temporary name
carries the process id: concurrent writers (the jobs of a sweep, the ranks of a run) never share one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from led.errors import WriteError


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], Any], what: str = "file",
                     advice: str = "free space or fix the directory's permissions") -> None:
    """Call `write(file)` on a binary file beside `path`, fsync it and rename it to `path`.

    An OSError while writing (ENOSPC, EDQUOT, EACCES) becomes one `WriteError` naming `what`, the file, the cause
    and `advice`; the previous file, if any, is unchanged and no temporary file is left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    stage = f"writing {partial}"
    recorder = None
    try:
        with open(partial, "wb") as file:
            recorder = _WriteErrors(file)
            write(recorder)  # type: ignore[arg-type]
            file.flush()
            stage = f"flushing {partial} to disk"
            os.fsync(file.fileno())
        stage = f"renaming {partial.name} to {path.name}"
        os.replace(partial, path)
    except BaseException as error:
        partial.unlink(missing_ok=True)
        cause = recorder.error if recorder is not None and recorder.error is not None else error
        if not isinstance(cause, OSError):
            raise
        failure = WriteError(f"could not save {what} {path}: {cause.strerror or cause} while {stage}; the previous "
                             f"{path.name} (if any) is unchanged. {advice[:1].upper()}{advice[1:]}")
        failure.errno = cause.errno
        raise failure from cause
    _fsync_directory(path.parent)  # the rename itself survives a power cut


def write_text_atomically(path: str | os.PathLike, text: str, what: str = "file") -> None:
    """`text` (UTF-8) into `path`, atomically (see `write_atomically`)."""
    data = text.encode("utf-8")
    write_atomically(path, lambda file: file.write(data), what)


def write_directory_atomically(out: str | os.PathLike, write: Callable[[Path], Any], keep_existing: bool = False,
                               mode: int = 0o755) -> bool:
    """`write(directory)` into a hidden directory beside `out`, then rename it to `out`.

    An existing `out` is replaced (moved aside for the moment of the swap: a directory cannot be renamed over a
    non-empty one), or, with `keep_existing`, kept: for caches that another process may have finished first.
    Returns whether the new directory was put in place.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    staging.chmod(mode)  # mkdtemp-like 0700 would make a shared model directory unreadable to the group
    try:
        write(staging)
        if keep_existing and out.exists():
            shutil.rmtree(staging, ignore_errors=True)
            return False
        if out.is_dir() and any(out.iterdir()):
            previous = out.with_name(f".{out.name}.{os.getpid()}.old")
            os.replace(out, previous)
            os.replace(staging, out)
            shutil.rmtree(previous)
        else:
            if out.is_dir():
                out.rmdir()
            elif out.exists():
                out.unlink()
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return True


class _WriteErrors:
    """The file handed to the writer, keeping the OSError of a failed write: `torch.save` reports it as a
    RuntimeError ("unexpected pos ...") without the cause."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.file.flush()


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)
