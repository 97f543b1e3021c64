"""`python -m led.memory key=value ...`: will a training setup fit a GPU, and with which batch size?

    python -m led.memory model=led-base-16384 input_length=16384 target_length=512 batch_size=1 \\
        precision=bf16-mixed strategy=fsdp devices=8 gpu_memory_gib=80
    python -m led.memory model=pegasus-x-large input_length=16384     # or model=path/to/checkpoint (config.json)

Prints the estimated peak memory per device of one training step (parameters, gradients, optimizer states,
activations by part) and the verdict against `gpu_memory_gib`, with and without gradient checkpointing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from led.cli import run
from led.errors import CheckpointError, ConfigError
from led.memory.estimate import optimizer_class, plan
from led.models.config_file import read_config_json
from led.models.families import FAMILIES, config_from_dict, family_of_size


@dataclass
class MemoryArgs:
    model: str = "led-base-16384"  # a named size of either family, a config.json or a directory holding one, or a .ckpt
    input_length: int = 16384
    target_length: int = 512
    batch_size: int = 1  # per device
    precision: str = "bf16-mixed"  # 32 | bf16-mixed | bf16-true, as in Lightning
    strategy: str = "single"  # single | ddp | fsdp
    devices: int = 1
    gpu_memory_gib: float = 80
    optimizer: str = "adamw"  # a conf/optimizer option
    num_global: int = 1  # global tokens per input (LED; PEGASUS-X's global tokens are in its config)


def load_model_config(value: str) -> Any:
    """A named size of either family (LED's, PEGASUS-X's), the config.json at `value` (or in the directory
    `value`), of the family its `model_type` names, or the model config a training checkpoint stores (a .ckpt
    file or a sharded checkpoint directory: no weights are read)."""
    if value.endswith(".ckpt") or os.path.isfile(os.path.join(value, "meta.pt")):
        return _checkpoint_config(value)
    if value.endswith(".json") or os.path.isdir(value):
        path = os.path.join(value, "config.json") if os.path.isdir(value) else value
        if not os.path.isfile(path):
            raise ConfigError(f"model={value!r} is invalid: {path} does not exist")
        try:
            return config_from_dict(read_config_json(path))
        except CheckpointError as e:  # not JSON, not UTF-8 or not an object: the message names the file
            raise ConfigError(f"model={value!r} is invalid: {e}") from None
        except (ValueError, TypeError) as e:
            raise ConfigError(f"model={value!r} is invalid: {path} is not a model config.json ({e})") from None
    try:
        found = family_of_size(value)
    except ValueError:
        sizes = ", ".join(size for f in FAMILIES.values() for size in f.named_sizes)
        raise ConfigError(f"model={value!r} is invalid: valid values are {sizes} "
                          f"or a config.json (or a directory holding one)") from None
    return found.config_of_size(value.removeprefix("allenai/").removeprefix("google/"))


def _checkpoint_config(value: str) -> Any:
    from pathlib import Path

    from led.training.checkpointing import read_saved_model

    if not os.path.exists(value):
        raise ConfigError(f"model={value!r} is invalid: {value} does not exist")
    saved = read_saved_model(Path(value))
    if saved is None:
        raise ConfigError(f"model={value!r} is invalid: it is not a checkpoint written by train.py that stores its "
                          "model config; give a named size or the config.json of an exported model")
    try:
        return config_from_dict(saved["config"])
    except (ValueError, TypeError) as e:
        raise ConfigError(f"model={value!r} is invalid: its stored model config ({e})") from None


def report(args: MemoryArgs) -> str:
    if args.strategy == "single" and args.devices != 1:
        raise ConfigError(f"devices={args.devices} needs strategy=ddp or strategy=fsdp (strategy=single is one device)")
    text = plan(load_model_config(args.model), args.batch_size, args.input_length, args.target_length,
                args.gpu_memory_gib, precision=args.precision, strategy=args.strategy, num_devices=args.devices,
                optimizer=optimizer_class(args.optimizer), num_global=args.num_global)
    print(text)
    return text


def main(argv: list[str] | None = None) -> str:
    return run("led.memory", __doc__ or "", MemoryArgs, report, argv)


if __name__ == "__main__":
    main()
