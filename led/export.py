"""Export a training checkpoint as a Hugging Face model directory.

    python -m led.export ckpt_path=outputs/train/RUN/checkpoints/last.ckpt out=outputs/my-led
    python -m led.export ckpt_path=outputs/train/RUN/checkpoints/last.ckpt out=outputs/my-led overwrite=true

Arguments are `key=value` pairs, the fields of `ExportConfig` below. `ckpt_path` is a `.ckpt` file written by
`train.py` (`led.training.module.LEDSummarizer`), or the directory of a sharded FSDP checkpoint (`trainer=fsdp`).

`out` receives `config.json`, `model.safetensors`, `generation_config.json` (the run's validation generation
settings, e.g. num_beams, plus the model's special token ids) and the tokenizer files of the model's family (LED or
PEGASUS-X, as the checkpoint's model config says), so that `transformers.AutoModelForSeq2SeqLM.from_pretrained(out)`
(`LEDForConditionalGeneration` / `PegasusXForConditionalGeneration`), `transformers.AutoTokenizer.from_pretrained(out)`,
`led.models.load_model(out)` and `python evaluate.py ckpt_path=out` all load it.
Everything is written into a temporary directory beside `out` and renamed into place: `out` is never half-written.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import MISSING

from led.cli import run
from led.errors import UserError
from led.files import write_directory_atomically
from led.models.base import EncoderDecoderModel, ModelConfig
from led.models.checkpoint import match_state_dict
from led.models.families import load_tokenizer
from led.models.generation import GenerationConfig
from led.training.checkpointing import (
    checkpoint_problem,
    corrupt_checkpoint_message,
    run_tokenizer,
    saved_model_config,
)

log = logging.getLogger(__name__)

VALID_CKPT = ("a .ckpt file written by train.py (e.g. outputs/train/RUN/checkpoints/last.ckpt) or the directory "
              "of a sharded FSDP checkpoint")


@dataclass
class ExportConfig:
    ckpt_path: str = MISSING  # a .ckpt of led.training.module.LEDSummarizer, or a sharded FSDP checkpoint directory
    out: str = MISSING  # the Hugging Face-format directory to write
    overwrite: bool = False  # replace an existing, non-empty `out`
    tokenizer: str | None = None  # the tokenizer to ship; default: the one the checkpoint names


class ExportError(UserError, ValueError):
    """A problem with the export's inputs that the user can fix; `main` prints it as one line."""


def export(ckpt_path: str | Path, out: str | Path, overwrite: bool = False, tokenizer: str | None = None) -> Path:
    """Write the model of a LEDSummarizer checkpoint, its generation settings and its tokenizer to `out`."""
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ExportError(f"out={out} exists and is not an empty directory; give overwrite=true to replace it, "
                          "or another out=")
    checkpoint = read_checkpoint(Path(ckpt_path).expanduser())
    hparams = dict(checkpoint["hyper_parameters"])
    model = rebuild_model(checkpoint, str(ckpt_path))
    # The run's `generation` node: generate's keywords beside Hydra's `_target_` and `_partial_`.
    settings = {key: value for key, value in (hparams.get("generation") or {}).items() if not key.startswith("_")}
    generation = generation_config(settings, model.config, checkpoint.get("generation_config"))
    # The run's tokenizer/ (trained for it, or copied there from the model it was fine-tuned from).
    tokenizer_source = tokenizer or run_tokenizer(Path(ckpt_path), hparams.get("tokenizer")) \
        or (hparams.get("model") or {}).get("pretrained")
    if not tokenizer_source:
        raise ExportError(f"{ckpt_path} does not name its tokenizer; give tokenizer=DIR (or a Hub id)")
    try:
        text_tokenizer = load_tokenizer(tokenizer_source, model.config.model_type)
    except (OSError, ValueError) as error:
        raise ExportError(f"cannot load the tokenizer {tokenizer_source!r} the checkpoint names ({error}); "
                          "give tokenizer=DIR (e.g. the run directory's tokenizer/)") from error

    def write(directory: Path) -> None:
        model.save_pretrained(directory)
        generation.save(directory)
        text_tokenizer.save_pretrained(directory)

    write_directory_atomically(out, write)
    log.info("exported %s (step %s) to %s", ckpt_path, checkpoint.get("global_step"), out)
    return out


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at `path` as a dict with `state_dict` and `hyper_parameters` (ExportError otherwise)."""
    if path.is_dir():
        if not (path / "meta.pt").is_file():
            raise ExportError(f"ckpt_path={path} is a directory without meta.pt; give {VALID_CKPT}")
        from lightning.fabric.utilities.load import _load_distributed_checkpoint

        checkpoint = _load_distributed_checkpoint(path)  # the full state dict, gathered in CPU memory
        checkpoint["state_dict"] = checkpoint.pop("model", checkpoint.get("state_dict"))
    elif not path.is_file():
        raise ExportError(f"ckpt_path={path} does not exist; give {VALID_CKPT}")
    else:
        problem = checkpoint_problem(path)
        if problem is not None:
            raise ExportError(corrupt_checkpoint_message(path, problem, resuming=False))
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:  # noqa: BLE001 - whatever torch raises, say which file and what is valid
            raise ExportError(f"ckpt_path={path} could not be read ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''}); give {VALID_CKPT}") from None
    if not isinstance(checkpoint, dict) or "model" not in (checkpoint.get("hyper_parameters") or {}) \
            or "state_dict" not in checkpoint:
        raise ExportError(f"ckpt_path={path} is not a checkpoint of led.training.module.LEDSummarizer (no state_dict or no "
                          f"'model' hyper-parameters); give {VALID_CKPT}")
    return checkpoint


def rebuild_model(checkpoint: dict[str, Any], source: str) -> EncoderDecoderModel:
    """The model of a checkpoint, of the family its stored config names, built from that config (no pretrained
    files needed), with the checkpoint's weights."""
    from led.training.module import build_model, model_of_checkpoint

    node = {key: value for key, value in checkpoint["hyper_parameters"]["model"].items()
            if key != "gradient_checkpointing"}
    saved = saved_model_config(checkpoint)
    # A checkpoint written before LEDSummarizer stored its config is rebuilt as training built it (reading
    # `pretrained`, if it names one).
    model = model_of_checkpoint(node, saved) if saved is not None else build_model(**node)
    state = {name.removeprefix("model."): tensor for name, tensor in checkpoint["state_dict"].items()
             if name.startswith("model.")}
    model.load_state_dict(match_state_dict(model, state, source))
    return model.float().eval()  # fp32 parameters, as `transformers` loads them by default


def generation_config(settings: dict[str, Any], config: ModelConfig,
                      defaults: dict[str, Any] | None = None) -> GenerationConfig:
    """The run's generation settings (`generate` keyword arguments, named as in transformers' GenerationConfig)
    over the model's generation defaults that validation ran with (`defaults`: a pretrained model's
    generation_config.json, stored in the checkpoint), or else the model config's special token ids and generation
    keys."""
    known = {field.name for field in dataclasses.fields(GenerationConfig)}
    if set(settings) - known:
        log.warning("generation settings %s are not GenerationConfig fields; generation_config.json leaves them out",
                    sorted(set(settings) - known))
    base = GenerationConfig.from_dict(defaults) if defaults else GenerationConfig.from_model_config(config)
    return base.update(GenerationConfig.from_dict({k: v for k, v in settings.items() if k in known}))


def main(argv: Sequence[str] | None = None) -> Path:
    def work(cfg: ExportConfig) -> Path:
        out = export(cfg.ckpt_path, cfg.out, overwrite=cfg.overwrite, tokenizer=cfg.tokenizer)
        print(f"wrote {out}: transformers' AutoModelForSeq2SeqLM.from_pretrained({str(out)!r}) and "
              f"`python evaluate.py ckpt_path={out}` load it")
        return out

    return run("led.export", __doc__ or "", ExportConfig, work, argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
