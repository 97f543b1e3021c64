"""Reading and writing Hugging Face checkpoints of any family (`led.models.base.EncoderDecoderModel`):
`config.json` + `model.safetensors` (single or sharded) or `pytorch_model.bin` (read with `weights_only=True`: no
arbitrary unpickling). The family gives its config class and the names of its tied embedding (`tied_keys`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import safetensors.torch
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from led.errors import CheckpointError, first_line
from led.files import write_atomically
from led.models.config_file import MODEL_ADVICE
from led.models.generation import load_generation_config
from led.models.hub import resolve_model_dir

if TYPE_CHECKING:  # the model imports this module, never the other way round
    from led.models.base import EncoderDecoderModel

    Model = TypeVar("Model", bound=EncoderDecoderModel)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
HUB_FILES = ["config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
             "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def resolve_checkpoint_dir(path_or_hub_id: str | os.PathLike) -> Path:
    """A local directory as it is, otherwise a Hub id downloaded (once, into the Hub cache)."""
    directory = resolve_model_dir(path_or_hub_id, HUB_FILES)
    if not any((directory / name).exists() for name in WEIGHT_FILES):
        # Older repositories ship only pytorch_model.bin (a local directory comes back as it is).
        directory = resolve_model_dir(path_or_hub_id, HUB_FILES + ["pytorch_model.bin*"])
    return directory


def read_state_dict(directory: Path) -> dict[str, Tensor]:
    """All tensors of the checkpoint in `directory`, from whichever weight file it has; a file that cannot be read
    is a CheckpointError naming it."""
    if (directory / "model.safetensors").exists():
        return _load_safetensors(directory / "model.safetensors")
    for index_name, loader in (("model.safetensors.index.json", _load_safetensors),
                               ("pytorch_model.bin.index.json", _load_bin)):
        if (directory / index_name).exists():
            state: dict[str, Tensor] = {}
            for shard in _shards(directory / index_name):
                state.update(loader(directory / shard))
            return state
    if (directory / "pytorch_model.bin").exists():
        return _load_bin(directory / "pytorch_model.bin")
    raise CheckpointError(f"{directory} holds no weights: expected one of {', '.join(WEIGHT_FILES)}")


def _shards(index: Path) -> list[str]:
    """The weight files a sharded checkpoint's index names (its `weight_map`'s values)."""
    try:
        with open(index, encoding="utf-8") as f:
            return sorted(set(json.load(f)["weight_map"].values()))
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # not JSON, not UTF-8, no weight_map
        raise CheckpointError(f"weights index {index} cannot be read ({type(e).__name__}: {first_line(e)}): it must "
                              f"be JSON with a weight_map of tensor names to files; {MODEL_ADVICE}") from None


def _load_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError) as e:  # cut short, damaged, or not a safetensors file
        raise CheckpointError(f"weights {path} cannot be read: it is not a whole safetensors file ({first_line(e)}); "
                              f"{MODEL_ADVICE}") from None


def _load_bin(path: Path) -> dict[str, Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - cut short, damaged, or pickling more than tensors: torch raises many types
        raise CheckpointError(f"weights {path} cannot be read as a PyTorch weights file (weights_only=True: "
                              f"{type(e).__name__}: {first_line(e)}); {MODEL_ADVICE}") from None


def match_state_dict(model: EncoderDecoderModel, state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """The file's tensors under the model's names (`model.adapt_state_dict`), with the tied copies the file left
    out, checked name by name and shape by shape against the model.

    Raises one CheckpointError (a ValueError) listing every missing, unexpected and wrongly-shaped key."""
    state = model.adapt_state_dict(dict(state))
    tied = type(model).tied_keys
    present_tied = [k for k in tied if k in state]
    for key in tied:
        if key not in state and present_tied:
            state[key] = state[present_tied[0]]
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k])}"
                   for k in set(state) & set(expected) if state[k].shape != expected[k])
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing: {_listing(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected: {_listing(unexpected)}" if unexpected else "",
                 f"{len(wrong)} with the wrong shape: {_listing(wrong)}" if wrong else ""]
        raise CheckpointError(f"The weights in {source} do not fit the model its config.json describes — "
                              + " | ".join(p for p in parts if p)
                              + ". Is config.json from the same checkpoint as the weights?")
    return state


def _listing(items: list[str], shown: int = 12) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return "; ".join(items[:shown]) + more


def load_pretrained(cls: type[Model], path_or_hub_id: str | os.PathLike, dtype: torch.dtype | None = None,
                    device: str | torch.device = "cpu") -> Model:
    """A `cls` model from a checkpoint directory or Hub id: fp32 weights unless `dtype` is given, on `device`,
    with `generation_config` set from the directory."""
    directory = resolve_checkpoint_dir(path_or_hub_id)
    if not (directory / "config.json").exists():
        raise CheckpointError(f"{directory} has no config.json: a {cls.__name__} checkpoint directory needs "
                              f"config.json and one of {', '.join(WEIGHT_FILES)}")
    config = cls.config_class.from_json_file(directory / "config.json")
    state = read_state_dict(directory)
    # Build on the meta device: no time spent initialising weights that are overwritten right away.
    with torch.device("meta"):
        model = cls(config)
    state = match_state_dict(model, state, str(directory))
    model.load_state_dict(state, assign=True)
    model.tie_weights()  # assign=True replaced the shared Parameter object in each of its places
    target_dtype = dtype if dtype is not None else torch.float32
    model = model.to(device=device, dtype=target_dtype)
    # generate() defaults: generation_config.json, with config.json filling what it lacks.
    model.generation_config = load_generation_config(directory)
    return model


def save_pretrained(model: EncoderDecoderModel, directory: str | os.PathLike) -> None:
    """`config.json`, `model.safetensors` (the tied embedding stored once, under `tied_keys[0]`; written
    atomically) and, when the model has generation defaults (`model.generation_config`), `generation_config.json`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save(directory)
    if model.generation_config is not None:
        model.generation_config.save(directory)
    copies = set(type(model).tied_keys[1:])
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in copies}
    # Serialised in memory (the model's size once more), then written whole or not at all.
    data = safetensors.torch.save(state, metadata={"format": "pt"})
    write_atomically(directory / "model.safetensors", lambda file: file.write(data), what="model")
