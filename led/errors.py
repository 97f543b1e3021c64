"""The exceptions that mean "the user can fix this": entry points print them as one line, no traceback."""

from __future__ import annotations

from led.data import DataError
from led.faults import CheckpointWriteError
from led.module import NonFiniteLossError
from led.training import ConfigError

# ValueError covers LEDConfig / DataModule / checkpoint validation (each names the field and what is valid).
USER_ERRORS: tuple[type[Exception], ...] = (CheckpointWriteError, ConfigError, DataError, NonFiniteLossError, ValueError, FileNotFoundError)
