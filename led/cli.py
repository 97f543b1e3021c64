"""The command-line style of `python -m led.export`, `led.prepare` and `led.memory`: `key=value` arguments (as in the
Hydra commands) checked against a dataclass of settings, `--help` listing them with their defaults, and every mistake
a user can fix printed as one line `led.<tool>: error: ...` with exit status 2. Bugs keep their traceback.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from omegaconf import ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, ValidationError

from led.errors import UserError

T = TypeVar("T")
R = TypeVar("R")


def run(program: str, doc: str, schema: type[T], work: Callable[[T], R], argv: Sequence[str] | None = None) -> R:
    """Parse `argv` (default: sys.argv[1:]) into `schema` and call `work` with it.

    `doc` is the tool's module docstring: its first paragraphs are the help text.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("-h", "--help", "help") for arg in args):
        print(help_text(program, doc, schema))
        raise SystemExit(0)
    try:
        settings = parse(schema, args)
        return work(settings)
    except UserError as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def parse(schema: type[T], args: Sequence[str]) -> T:
    """`key=value` strings into an instance of the dataclass `schema`; an unknown key, a value of the wrong type
    or a missing mandatory value is a `UsageError` naming it and the valid keys."""
    keys = [field.name for field in dataclasses.fields(schema)]  # type: ignore[arg-type]
    for arg in args:
        if "=" not in arg:
            raise UsageError(f"argument {arg!r} is not key=value; keys: {', '.join(keys)}")
    given = dict(arg.split("=", 1) for arg in args)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.from_dotlist(list(args)))
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except MissingMandatoryValue as error:
        raise UsageError(f"{error.full_key} is required: give {error.full_key}=...; keys: {', '.join(keys)}") from None
    except ConfigKeyError as error:
        raise UsageError(f"unknown key {error.full_key!r}; keys: {', '.join(keys)}") from None
    except ValidationError as error:
        types = {field.name: field.type for field in dataclasses.fields(schema)}  # type: ignore[arg-type]
        raise UsageError(f"{error.full_key}={given.get(error.full_key)!r} is invalid: it must be "
                         f"{_describe(types.get(error.full_key, ''))}") from None


def help_text(program: str, doc: str, schema: type[Any]) -> str:
    """The docstring's first two paragraphs and every key with its default (??? = required)."""
    defaults = OmegaConf.structured(schema)
    keys = " ".join(f"{name}={'???' if OmegaConf.is_missing(defaults, name) else _typed(defaults[name])}"
                    for name in (field.name for field in dataclasses.fields(schema)))
    return "\n\n".join(doc.strip().split("\n\n")[:2]) + f"\n\nusage: python -m {program} key=value ...\nkeys " \
        f"(defaults): {keys}"


def _typed(value: Any) -> str:
    """A default as it is typed on the command line: null, true, 4096, [train,validation,test]."""
    if isinstance(value, (list, ListConfig)):
        return "[" + ",".join(_typed(item) for item in value) + "]"
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    return str(value)


_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text", "None": "null"}


def _describe(annotation: Any) -> str:
    """`int | None` (a string under `from __future__ import annotations`, or a type) in words."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return " or ".join(_WORDS.get(part.strip(), part.strip()) for part in text.split("|"))


class UsageError(UserError, ValueError):
    """A command-line argument that is not one of the tool's settings, or not of its type."""
