"""config.json reading and writing, shared by every family's config dataclass (fields named as in `transformers`;
every other key of a file is kept in `extra`, so a config round-trips)."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, ClassVar, Self

from led.errors import CheckpointError
from led.files import write_text_atomically

MODEL_ADVICE = "give a model directory written by `python -m led.export` or transformers' save_pretrained"


class ConfigFile:
    """Mixed into a family's config dataclass, which names its family and its config.json conventions below."""

    model_type: ClassVar[str]  # config.json's "model_type"
    family_name: ClassVar[str]  # for messages: "LED", "PEGASUS-X"
    architecture: ClassVar[str]  # config.json's "architectures" entry: transformers' class
    hub_owner: ClassVar[str]  # a named size may be given as its Hub id: "<owner>/<size>"
    aliases: ClassVar[dict[str, str]]  # keys of transformers' config.json that are aliases of ours (its attribute_map)
    named_sizes: ClassVar[dict[str, dict[str, Any]]]  # from_name's sizes: their fields
    size_aliases: ClassVar[dict[str, str]] = {}
    extra: dict[str, Any]

    # --- named sizes -------------------------------------------------------------------------------

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> Self:
        """A named size (a key of `named_sizes`, or its Hub id) with optional field overrides."""
        key = name.removeprefix(f"{cls.hub_owner}/")
        key = cls.size_aliases.get(key, key)
        if key not in cls.named_sizes:
            raise ValueError(f"Unknown {cls.family_name} size {name!r}: valid names are "
                             f"{', '.join(cls.named_sizes)}")
        return cls(**{**cls.named_sizes[key], **overrides})

    # --- Hugging Face config.json ------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build from a Hugging Face `config.json` dictionary (or our own `to_dict()`), whose `model_type` must be
        this family's: `cls(**fields, extra=...)`, every other key kept in `extra`."""
        data = dict(data)
        model_type = data.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ValueError(f"config model_type={model_type!r}: only {cls.family_name} checkpoints "
                             f"({cls.model_type!r}) can be loaded")
        for alias, name in cls.aliases.items():
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

    def to_dict(self) -> dict[str, Any]:
        """The `config.json` dictionary `transformers`' config class of this family reads."""
        data = {k: v for k, v in dataclasses.asdict(self).items() if k != "extra"}  # type: ignore[call-overload]
        data = {**self.extra, **data}
        data.pop("eos_token_ids", None)
        data.update(model_type=self.model_type, architectures=[self.architecture], is_encoder_decoder=True,
                    tie_word_embeddings=True)
        return self._complete_config_json(data)

    def _complete_config_json(self, data: dict[str, Any]) -> dict[str, Any]:
        """A family's additions to `to_dict` (keys transformers reads under another form)."""
        return data

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> Self:
        data = read_config_json(path)
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: {e}") from None

    def save(self, directory: str | os.PathLike) -> None:
        write_text_atomically(os.path.join(directory, "config.json"),
                              json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")


def read_config_json(path: str | os.PathLike) -> dict[str, Any]:
    """A config.json's dictionary; a CheckpointError naming the file and what is wrong when it is not valid JSON,
    not UTF-8 text, or not a JSON object."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        problem = f"it is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
    except UnicodeDecodeError as e:
        problem = f"it is not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} at offset {e.start})"
    else:
        if isinstance(data, dict):
            return data
        problem = f"it holds a JSON {type(data).__name__}, not an object of settings"
    raise CheckpointError(f"model config {path} cannot be read: {problem}; {MODEL_ADVICE}")
