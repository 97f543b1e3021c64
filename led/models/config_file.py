"""config.json reading and writing, shared by every family's config dataclass (fields named as in `transformers`;
every other key of a file is kept in `extra`, so a config round-trips)."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, ClassVar, Self

from led.files import write_text_atomically


class ConfigFile:
    """Mixed into a family's config dataclass, which defines `model_type`, `from_dict` and `to_dict`."""

    model_type: ClassVar[str]
    extra: dict[str, Any]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:  # pragma: no cover - every family defines it
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - every family defines it
        raise NotImplementedError

    @classmethod
    def _known_and_extra(cls, data: dict[str, Any], aliases: dict[str, str], family: str) -> Self:
        """`cls(**fields, extra=...)` from a config.json dictionary whose `model_type` must be this family's."""
        data = dict(data)
        model_type = data.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ValueError(f"config model_type={model_type!r}: only {family} checkpoints ({cls.model_type!r}) can "
                             "be loaded")
        for alias, name in aliases.items():
            if alias in data:
                data.setdefault(name, data.pop(alias))
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}  # type: ignore[arg-type]
        extra = dict(data.pop("extra", {}))
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            (kwargs if key in names else extra)[key] = value
        # transformers may store eos_token_id as a list; the model needs one id for shifting/generation.
        if isinstance(kwargs.get("eos_token_id"), list):
            extra["eos_token_ids"] = kwargs["eos_token_id"]
            kwargs["eos_token_id"] = kwargs["eos_token_id"][0]
        return cls(**kwargs, extra=extra)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> Self:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None

    def save(self, directory: str | os.PathLike) -> None:
        write_text_atomically(os.path.join(directory, "config.json"),
                              json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
