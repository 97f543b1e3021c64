"""The one way the recipes build what a config node names with `_target_` (`build`), and call what a `_partial_` node
built (`receiving`): a value the receiver refuses is one `ConfigError` line naming the setting, not a traceback.

Hydra's `instantiate` wraps whatever the target raises in an `InstantiationException`. Here a `UserError` inside it
(a missing `model.pretrained` directory) comes out as itself. A `ValueError`, `TypeError` or Lightning
`MisconfigurationException` raised by code outside this package (torch.optim, the Trainer, a callback, a logger)
refusing a value the user gave becomes `optimizer.lr=-1 is not valid: torch.optim.AdamW says "Invalid learning rate:
-1"`. Raised from our own code, the same exception is a bug and keeps its traceback, as does every other exception.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException

from led.config_check import show_value
from led.errors import ConfigError, UserError, first_line

# What a receiver raises for a value it refuses (MisconfigurationException is an Exception, not a ValueError).
REFUSALS = (ValueError, TypeError, MisconfigurationException)
_PACKAGE = Path(__file__).resolve().parent
_SHOWN_SETTINGS = 6  # of a node named whole, in a message: enough to recognise it, short enough for one line


def build(path: str, node: Any, *args: Any, **kwargs: Any) -> Any:
    """`instantiate(node, *args, **kwargs)`, the node being the config's `path` (`trainer`, `callbacks.checkpoint`):
    a value its target refuses is one ConfigError naming the setting (see the module docstring)."""
    with receiving(path, node):
        return instantiate(node, *args, **kwargs)


@contextmanager
def receiving(path: str, node: Any) -> Iterator[None]:
    """Run the body (a call of what the node at `path` built, e.g. the optimizer `_partial_` with the parameters)
    with the receiver's refusals of the node's values turned into one ConfigError, as `build` does."""
    try:
        yield
    except InstantiationException as error:
        cause = _innermost_cause(error)
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, REFUSALS) and not _raised_by_us(cause.__traceback__):
            raise refusal(path, node, cause) from cause
        raise
    except REFUSALS as error:
        if isinstance(error, UserError) or _raised_by_us(error.__traceback__):
            raise
        raise refusal(path, node, error) from error


def refusal(path: str, node: Any, error: BaseException) -> ConfigError:
    """`path.key=value is not valid: <target> says "<first line of the error>"`, naming the one setting whose value
    the message quotes, else the node with its settings."""
    settings = {str(key): value for key, value in _items(node) if not str(key).startswith("_")}
    target = str(dict(_items(node)).get("_target_", path))
    words = first_line(error)
    key = _quoted_setting(settings, words)
    if key is not None:
        subject = f"{path}.{key}={show_value(settings[key])}"
    else:
        shown = ", ".join(f"{name}={show_value(value)}" for name, value in list(settings.items())[:_SHOWN_SETTINGS])
        more = ", ..." if len(settings) > _SHOWN_SETTINGS else ""
        subject = f"{path} ({target} with {shown}{more})" if shown else f"{path} ({target})"
    return ConfigError(f'{subject} is not valid: {target} says "{words}"')


def _quoted_setting(settings: dict[str, Any], words: str) -> str | None:
    """The setting whose value the message quotes; among several, the one the message also names; else None."""
    quoted = [key for key, value in settings.items() if _appears(value, words)]
    if len(quoted) > 1:
        quoted = [key for key in quoted if re.search(rf"\b({re.escape(key)}|{re.escape(key.replace('_', ' '))})\b",
                                                     words, re.IGNORECASE)]
    return quoted[0] if len(quoted) == 1 else None


def _appears(value: Any, words: str) -> bool:
    """Whether a plain value is written in `words` as a whole token (`-1` in "rate: -1", not `1` in "16-true")."""
    if isinstance(value, (dict, list, tuple)) or value is None or value == "":
        return False
    forms = {str(value), str(value).lower()} if isinstance(value, bool) else {str(value)}
    # Not inside a longer number or name: neither after a letter, digit, `-` or `<digit>.`, nor before `.<digit>`.
    return any(re.search(rf"(?<![\w\-])(?<!\d\.){re.escape(form)}(?![\w]|\.\d)", words) for form in forms)


def _items(node: Any) -> list[tuple[Any, Any]]:
    """The node's keys and values (a DictConfig or a dict); nothing for a node that is none (null)."""
    return list(node.items()) if isinstance(node, Mapping) else []


def _innermost_cause(error: BaseException) -> BaseException:
    """What the target raised, beneath Hydra's InstantiationException(s) (one per nested node)."""
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error


def _raised_by_us(traceback: TracebackType | None) -> bool:
    """Whether the innermost frame of `traceback` (where the exception was raised) is code of this package."""
    if traceback is None:
        return False
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    frame = traceback.tb_frame
    if str(frame.f_globals.get("__name__", "")).split(".")[0] == "led":
        return True
    return Path(frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE)
