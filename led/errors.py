"""The errors a user can fix. Entry points (train.py, evaluate.py, `python -m led.…`) print these as one line and
exit with status 1; every other exception is a bug and keeps its traceback.

This module imports nothing, so that any module (the model library included) can raise these.
"""


class UserError(Exception):
    """A setting, file or input that cannot work; the message names it, its value and what would be valid."""


class ConfigError(UserError, ValueError):
    """A setting that cannot work, found before any work starts."""


class DataError(UserError, ValueError):
    """A data setting or record that cannot be used: names the setting, file, line, field or value."""


class CheckpointError(UserError, ValueError):
    """A checkpoint or model directory that cannot be read, or that holds another model than the one asked for."""


class WriteError(UserError, OSError):
    """A file could not be written (disk full, quota, permissions); the file it would have replaced is unchanged.
    `errno` is that of the underlying error."""


def first_line(error: BaseException) -> str:
    """An error's message as one line, for a message of ours that quotes it: its first line (another library's
    message may go on for lines), or the error's type when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
