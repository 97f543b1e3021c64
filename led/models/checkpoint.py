"""Reading and writing Hugging Face LED checkpoints: `config.json` + `model.safetensors` (single or sharded)
or `pytorch_model.bin` (read with `weights_only=True`: no arbitrary unpickling)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import safetensors.torch
import torch
from safetensors.torch import load_file
from torch import Tensor

from led.files import write_atomically
from led.models.generation import load_generation_config
from led.models.led.config import LEDConfig

if TYPE_CHECKING:
    from led.models.led.modeling import LEDForConditionalGeneration

# The four names of the one embedding matrix; files saved by `transformers` keep only some of them.
TIED_KEYS = ("led.shared.weight", "led.encoder.embed_tokens.weight", "led.decoder.embed_tokens.weight",
             "lm_head.weight")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
HUB_FILES = ["config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
             "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def resolve_checkpoint_dir(path_or_hub_id: str | os.PathLike) -> Path:
    """A local directory as it is, otherwise a Hub id downloaded (once, into the Hub cache)."""
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path} is a file: pass the checkpoint directory that holds config.json and the weights")
    name = str(path_or_hub_id)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ValueError(f"Checkpoint directory {name} does not exist")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(name, allow_patterns=HUB_FILES)
        if not any((Path(local) / f).exists() for f in WEIGHT_FILES):
            # Older repositories ship only pytorch_model.bin.
            local = snapshot_download(name, allow_patterns=HUB_FILES + ["pytorch_model.bin*"])
    except Exception as e:  # noqa: BLE001 - any Hub failure becomes one actionable message
        raise ValueError(
            f"{name!r} is not a local directory and could not be downloaded from the Hugging Face Hub "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). On a machine with internet run "
            f"`huggingface-cli download {name} --local-dir DIR` and pass DIR instead"
        ) from None
    return Path(local)


def read_state_dict(directory: Path) -> dict[str, Tensor]:
    """All tensors of the checkpoint in `directory`, from whichever weight file it has."""
    if (directory / "model.safetensors").exists():
        return load_file(directory / "model.safetensors")
    for index_name, loader in (("model.safetensors.index.json", load_file),
                               ("pytorch_model.bin.index.json", _load_bin)):
        if (directory / index_name).exists():
            with open(directory / index_name, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            state: dict[str, Tensor] = {}
            for shard in shards:
                state.update(loader(directory / shard))
            return state
    if (directory / "pytorch_model.bin").exists():
        return _load_bin(directory / "pytorch_model.bin")
    raise ValueError(f"{directory} holds no weights: expected one of {', '.join(WEIGHT_FILES)}")


def _load_bin(path: Path) -> dict[str, Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path} could not be read as a PyTorch weights file (weights_only=True): {e}") from None


def _normalise_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Bring the names of an `LEDModel` (no head) checkpoint to those of the generation model."""
    if any(k.startswith("led.") for k in state):
        return state
    return {(k if k in ("lm_head.weight", "final_logits_bias") else f"led.{k}"): v for k, v in state.items()}


def match_state_dict(model: LEDForConditionalGeneration, state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """Complete the tied copies the file left out and check every name and shape against the model.

    Raises one ValueError listing every missing, unexpected and wrongly-shaped key."""
    state = _normalise_keys(dict(state))
    expected = {k: v.shape for k, v in model.state_dict().items()}
    present_tied = [k for k in TIED_KEYS if k in state]
    for key in TIED_KEYS:
        if key not in state and present_tied:
            state[key] = state[present_tied[0]]
    if "final_logits_bias" not in state:  # optional in `transformers` files: zeros
        state["final_logits_bias"] = torch.zeros(expected["final_logits_bias"])
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k])}"
                   for k in set(state) & set(expected) if state[k].shape != expected[k])
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing: {_listing(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected: {_listing(unexpected)}" if unexpected else "",
                 f"{len(wrong)} with the wrong shape: {_listing(wrong)}" if wrong else ""]
        raise ValueError(f"The weights in {source} do not fit the model its config.json describes — "
                         + " | ".join(p for p in parts if p)
                         + ". Is config.json from the same checkpoint as the weights?")
    return state


def _listing(items: list[str], shown: int = 12) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return "; ".join(items[:shown]) + more


def load_pretrained(cls: type[LEDForConditionalGeneration], path_or_hub_id: str | os.PathLike,
                    dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
                    ) -> LEDForConditionalGeneration:
    directory = resolve_checkpoint_dir(path_or_hub_id)
    if not (directory / "config.json").exists():
        raise ValueError(f"{directory} has no config.json: an LED checkpoint directory needs config.json "
                         f"and one of {', '.join(WEIGHT_FILES)}")
    config = LEDConfig.from_json_file(directory / "config.json")
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


def save_pretrained(model: LEDForConditionalGeneration, directory: str | os.PathLike) -> None:
    """`config.json`, `model.safetensors` (tied copies stored once, written atomically) and, when the model
    has generation defaults (`model.generation_config`), `generation_config.json`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save(directory)
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        generation_config.save(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()
             if k not in TIED_KEYS[1:]}
    # Serialised in memory (the model's size once more), then written whole or not at all.
    data = safetensors.torch.save(state, metadata={"format": "pt"})
    write_atomically(directory / "model.safetensors", lambda file: file.write(data), what="model")
