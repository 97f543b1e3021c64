"""The model families, by `model_type`: which config, model and tokenizer classes a checkpoint needs.

A Hugging Face `config.json` names its family (`"model_type": "led"` or `"pegasus_x"`), and so do the model configs
our Lightning checkpoints store; everything that loads "some model" (evaluation, export, the memory planner, the
framework's model builder) goes through here rather than naming a family.

    family = family_of_checkpoint("google/pegasus-x-base")   # reads config.json
    model = family.model_class.from_pretrained("google/pegasus-x-base")
    tokenizer = load_tokenizer(directory)                     # the family its tokenizer.json is
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from led.errors import CheckpointError
from led.models.base import EncoderDecoderModel
from led.models.config_file import ConfigFile, read_config_json
from led.models.hub import resolve_model_dir
from led.models.led.config import LEDConfig
from led.models.led.modeling import LEDForConditionalGeneration
from led.models.pegasus_x.config import PegasusXConfig
from led.models.pegasus_x.modeling import PegasusXForConditionalGeneration
from led.models.pegasus_x.tokenizer import PegasusTokenizer
from led.models.tokenizer import LEDTokenizer
from led.models.tokenizer_base import TokenizerBase


@dataclass(frozen=True)
class Family:
    config_class: type[ConfigFile]
    model_class: type[EncoderDecoderModel]
    tokenizer_class: type[TokenizerBase]
    tokenizer_model: str  # the `tokenizers` model type of its tokenizer.json ("BPE", "Unigram")

    @property
    def model_type(self) -> str:
        """config.json's "model_type"."""
        return self.config_class.model_type

    @property
    def name(self) -> str:
        """For messages: "LED", "PEGASUS-X"."""
        return self.config_class.family_name

    @property
    def named_sizes(self) -> tuple[str, ...]:
        return tuple(self.config_class.named_sizes)

    def config(self, data: dict[str, Any]) -> Any:
        """The family's config from a config.json dictionary (or a config's `to_dict()`)."""
        return self.config_class.from_dict(data)

    def config_of_size(self, size: str, **overrides: Any) -> Any:
        return self.config_class.from_name(size, **overrides)


FAMILIES: dict[str, Family] = {
    "led": Family(LEDConfig, LEDForConditionalGeneration, LEDTokenizer, "BPE"),
    "pegasus_x": Family(PegasusXConfig, PegasusXForConditionalGeneration, PegasusTokenizer, "Unigram"),
}


def family(model_type: str) -> Family:
    """The family of `model_type`; a ValueError listing the valid ones otherwise."""
    if model_type not in FAMILIES:
        raise ValueError(f"model_type={model_type!r} is not a family this library implements: valid values are "
                         f"{', '.join(FAMILIES)}")
    return FAMILIES[model_type]


def family_of_model(model: EncoderDecoderModel) -> Family:
    return family(model.config.model_type)


def family_of_size(size: str) -> Family:
    """The family that has a named size `size` (`tiny` is LED's; PEGASUS-X's is `pegasus-x-tiny`)."""
    key = size.removeprefix("allenai/").removeprefix("google/")
    for candidate in FAMILIES.values():
        if key in candidate.named_sizes:
            return candidate
    names = ", ".join(f"{name} ({f.name})" for f in FAMILIES.values() for name in f.named_sizes)
    raise ValueError(f"unknown model size {size!r}: valid names are {names}")


def config_from_dict(data: dict[str, Any]) -> Any:
    """A config of whichever family `data["model_type"]` names (LED when it names none: the config.json of an LED
    checkpoint may lack the key)."""
    return family(data.get("model_type", "led")).config(data)


def config_of_checkpoint(path_or_hub_id: str | os.PathLike) -> ConfigFile:
    """The config of a Hugging Face checkpoint directory or Hub id, of the family its config.json's model_type names
    (the file read once)."""
    directory = resolve_model_dir(path_or_hub_id, ["config.json"], what="model", contents="config.json")
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"no config.json in {str(directory)!r}: a model directory holds config.json and the "
                              "weights")
    data = read_config_json(config_file)
    try:
        return config_from_dict(data)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{config_file}: {e}") from None


def family_of_checkpoint(path_or_hub_id: str | os.PathLike) -> Family:
    """The family of a Hugging Face checkpoint directory or Hub id, from its config.json's model_type."""
    return family(config_of_checkpoint(path_or_hub_id).model_type)


def load_model(path_or_hub_id: str | os.PathLike, **kwargs: Any) -> EncoderDecoderModel:
    """A Hugging Face checkpoint of any family (`from_pretrained` of the class its config.json names)."""
    return family_of_checkpoint(path_or_hub_id).model_class.from_pretrained(path_or_hub_id, **kwargs)


def tokenizer_family(path: str | os.PathLike) -> Family | None:
    """The family a local tokenizer directory is for: from its tokenizer.json's model type (byte-level BPE: LED,
    Unigram: PEGASUS-X), or LED for BART's vocab.json + merges.txt; None when it holds neither."""
    directory = Path(path)
    tokenizer_file = directory / "tokenizer.json"
    if tokenizer_file.is_file():
        try:
            kind = json.loads(tokenizer_file.read_text()).get("model", {}).get("type")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            return None  # the family's loader says what is wrong with the file
        return next((f for f in FAMILIES.values() if f.tokenizer_model == kind), None)
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        return FAMILIES["led"]
    return None


def load_tokenizer(path_or_hub_id: str | os.PathLike, model_type: str | None = None) -> TokenizerBase:
    """The tokenizer in a directory or Hub id, of the family its files are; with `model_type`, a ValueError when
    they are another family's (ids would mean other tokens to the model)."""
    directory = resolve_model_dir(path_or_hub_id, ["tokenizer.json", "vocab.json", "merges.txt", "*.json"],
                                  what="tokenizer", contents="tokenizer.json")
    found = tokenizer_family(directory)
    if model_type is not None:
        wanted = family(model_type)
        if found is not None and found is not wanted:
            raise ValueError(f"{path_or_hub_id} holds a {found.name} tokenizer ({found.tokenizer_model}), but the "
                             f"model is {wanted.name}: use the model's own tokenizer (its checkpoint directory), or "
                             f"train one for it")
        found = wanted
    return (found or FAMILIES["led"]).tokenizer_class.from_pretrained(directory)


__all__ = ["Family", "FAMILIES", "family", "family_of_model", "family_of_size", "config_of_checkpoint",
           "family_of_checkpoint", "config_from_dict", "load_model", "tokenizer_family", "load_tokenizer"]
