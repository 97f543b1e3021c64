"""Training settings checked against the code that receives them, before any work starts.

Each config group goes to one known function or class: `data` to `SummarizationDataModule`, `model` to
`build_model` (and `model.overrides` to `LEDConfig`), `optimizer` to the torch optimizer it names, `scheduler` to
`lr_lambda`, `module` to `LEDSummarizer`, `generation` to `led.models.generation.generate`, and every node with a `_target_`
(`trainer`, callbacks, loggers) to its target. Their parameters and annotations say which keys exist and what each
takes, so a misspelled key (`+optimizer.lrr=1e-3`) or a value of the wrong type (`trainer.max_steps=abc`) is one
line naming the key, the value and what is valid, instead of a TypeError from inside Lightning or torch after the
corpus, the tokenizer and the model were built. Values left at `???` and a from-scratch model that `LEDConfig`
rejects (an odd window, a window list of the wrong length) are reported here too.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import enum
import inspect
import os
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from led.data.datamodule import SummarizationDataModule
from led.data.synthetic import write_corpus
from led.models.generation import generate
from led.models.led.config import LEDConfig
from led.training.module import LEDSummarizer, build_model, lr_lambda

# Keys Hydra's `instantiate` reads itself; they are not arguments of the target.
_HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})
_SEQUENCES = (list, tuple, collections.abc.Sequence, typing.Sequence)
_MAPPINGS = (dict, collections.abc.Mapping, typing.Mapping)
_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "text", type(None): "null"}


@dataclasses.dataclass
class _Receiver:
    """What a config node is handed to: its name in messages, the annotation of each parameter (Any when it has
    none), and whether it takes **kwargs (then any other key is accepted)."""

    name: str
    types: dict[str, Any]
    takes_any_key: bool = False


def setting_problems(cfg: DictConfig) -> list[str]:
    """One message per setting that cannot work (empty when all can), each naming the key, the value and what
    would be valid."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        return [f"{key} has no value (it is ??? in its config file): give one, e.g. {key}=..." for key in missing]
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - an interpolation that cannot resolve fails, with its own message, where it is used
        return []
    if not isinstance(plain, dict):
        return []
    top = {key: plain[key] for key in ("seed", "ckpt_path") if key in plain}
    problems = _check_node(top, _Receiver("the training config", {"seed": int, "ckpt_path": str | None}), "")
    for path, receiver in _group_receivers(plain).items():
        node = _select(plain, path)
        if isinstance(node, dict):
            problems += _check_node(node, receiver, path)
    problems += _check_targets(plain, "")
    return problems or _model_problems(plain.get("model"))


def _group_receivers(plain: dict[str, Any]) -> dict[str, _Receiver]:
    optimizers = {"adamw": torch.optim.AdamW, "adafactor": torch.optim.Adafactor}
    optimizer_class = optimizers.get(str((plain.get("optimizer") or {}).get("name")))
    if optimizer_class is not None:
        optimizer = _receiver(optimizer_class, f"torch.optim.{optimizer_class.__name__}", skip=("params",),
                              extra={"name": str})
    else:  # LEDSummarizer reports the unknown name itself
        optimizer = _Receiver("the optimizer", {"name": str, "lr": float, "weight_decay": float}, takes_any_key=True)
    return {
        # The `data` keys train() uses itself; the rest are DataModule arguments.
        "data": _receiver(SummarizationDataModule, "led.data.SummarizationDataModule",
                          extra={"synthetic": dict | None, "tokenizer_vocab_size": int | None,
                                 "tokenizer_training_docs": int | None}),
        "data.synthetic": _receiver(write_corpus, "led.data.synthetic.write_corpus", skip=("out_dir",), extra={"dir": str}),
        "model": _receiver(build_model, "led.training.module.build_model", extra={"gradient_checkpointing": bool}),
        "model.overrides": _receiver(LEDConfig, "led.LEDConfig", skip=("extra",)),
        "optimizer": optimizer,
        "scheduler": _receiver(lr_lambda, "led.training.module.lr_lambda", skip=("total_steps",)),
        "module": _receiver(LEDSummarizer, "led.training.module.LEDSummarizer",
                            skip=("model", "optimizer", "scheduler", "generation", "tokenizer")),
        "generation": _receiver(generate, "led.models.generation.generate",
                                skip=("model", "input_ids", "attention_mask", "global_attention_mask",
                                      "generation_config")),
    }


def _receiver(target: Callable[..., Any], name: str, skip: Iterable[str] = (),
              extra: dict[str, Any] | None = None) -> _Receiver:
    """The parameters of `target` (a class: those of its __init__) with their annotations evaluated."""
    signature = inspect.signature(target)
    function = target.__init__ if isinstance(target, type) else target  # type: ignore[misc]
    namespace = getattr(function, "__globals__", {})
    types_: dict[str, Any] = {}
    takes_any_key = False
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            takes_any_key = True
        elif parameter.kind is not inspect.Parameter.VAR_POSITIONAL and parameter.name not in skip:
            types_[parameter.name] = _evaluate(parameter.annotation, namespace)
    types_.update(extra or {})
    return _Receiver(name, types_, takes_any_key)


def _evaluate(annotation: Any, namespace: dict[str, Any]) -> Any:
    if annotation is inspect.Parameter.empty:
        return Any
    if isinstance(annotation, str):  # `from __future__ import annotations`
        try:
            return eval(annotation, dict(namespace))  # an annotation of our code or an installed package
        except Exception:  # noqa: BLE001 - a name imported only for type checkers: nothing to check against
            return Any
    return annotation


def _check_targets(node: Any, path: str) -> list[str]:
    """Every `_target_` node under `node`, checked against its target's parameters."""
    problems: list[str] = []
    if isinstance(node, dict):
        target = node.get("_target_")
        if isinstance(target, str):
            try:
                receiver = _receiver(get_object(target), target)
            except Exception:  # noqa: BLE001 - Hydra reports a target it cannot import when it instantiates it
                receiver = None
            if receiver is not None:
                problems += _check_node(node, receiver, path)
        for key, value in node.items():
            problems += _check_targets(value, f"{path}.{key}" if path else str(key))
    return problems


def _check_node(node: dict[str, Any], receiver: _Receiver, path: str) -> list[str]:
    problems = []
    for key, value in node.items():
        if key in _HYDRA_KEYS:
            continue
        full_key = f"{path}.{key}" if path else str(key)
        if key not in receiver.types:
            if not receiver.takes_any_key:
                problems.append(_unknown_key_message(full_key, str(key), path, receiver))
        elif not _accepts(receiver.types[key], value):
            problems.append(f"{full_key}={_show(value)} is not valid: {receiver.name} takes {key} as "
                            f"{_describe(receiver.types[key])}")
    return problems


def _unknown_key_message(full_key: str, key: str, path: str, receiver: _Receiver) -> str:
    message = f"{full_key} is not a setting of {receiver.name}"
    close = difflib.get_close_matches(key, list(receiver.types), n=1, cutoff=0.6)
    if close:
        message += f"; did you mean {path + '.' if path else ''}{close[0]}?"
    if len(receiver.types) <= 16:
        message += f" (its settings: {', '.join(sorted(receiver.types))})"
    return message


def _accepts(hint: Any, value: Any) -> bool:
    """Whether a plain config value (None, bool, int, float, str, list, dict) can be passed where `hint` is asked."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object or isinstance(hint, typing.TypeVar):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(member, value) for member in args)
    if origin is typing.Literal:
        return any(value == choice and type(value) is type(choice) for choice in args)
    if hint in (None, type(None)):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # an int is a fine float
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in _SEQUENCES or origin in _SEQUENCES:
        if not isinstance(value, list):
            return False
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(map(_accepts, args, value))
        return not args or all(_accepts(args[0], item) for item in value)
    if hint in _MAPPINGS or origin in _MAPPINGS:
        return isinstance(value, dict)
    if isinstance(hint, type) and issubclass(hint, (os.PathLike, enum.Enum)):
        return isinstance(value, str)
    # An object a config cannot hold as a plain value (a Tensor, a Strategy, a callable): a `_target_` node builds it.
    return isinstance(value, dict)


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        choices = [choice for member in args if typing.get_origin(member) is typing.Literal
                   for choice in typing.get_args(member)]
        parts = [_describe(member) for member in args
                 if typing.get_origin(member) is not typing.Literal and _is_plain(member)]
        if choices:
            parts.insert(0, _describe(typing.Literal[tuple(choices)]))
        return " or ".join(dict.fromkeys(parts)) or _describe(args[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(choice) for choice in args)
    if hint in _NAMES:
        return _NAMES[hint]
    if hint in _SEQUENCES or origin in _SEQUENCES:
        return "a list"
    if hint in _MAPPINGS or origin in _MAPPINGS:
        return "a mapping"
    if isinstance(hint, type) and issubclass(hint, (os.PathLike, enum.Enum)):
        return "text"
    return f"a {getattr(hint, '__name__', hint)} (a node with _target_)"


def _is_plain(hint: Any) -> bool:
    """A type a config value can be (unlike a Tensor or a Strategy, which only a `_target_` node builds)."""
    origin = typing.get_origin(hint)
    return (hint in _NAMES or hint in _SEQUENCES or hint in _MAPPINGS or origin in _SEQUENCES
            or origin in _MAPPINGS or origin is typing.Literal
            or (isinstance(hint, type) and issubclass(hint, (os.PathLike, enum.Enum))))


def _show(value: Any) -> str:
    """A value as it is written in an override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


def _select(plain: dict[str, Any], path: str) -> Any:
    node: Any = plain
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _model_problems(model: dict[str, Any] | None) -> list[str]:
    """LEDConfig's own checks (windows, head counts, ...) for a model trained from scratch, run on the meta device:
    no memory, no time. A pretrained model's config comes with its checkpoint and is checked when it loads."""
    if not isinstance(model, dict) or model.get("pretrained"):
        return []
    arguments = {key: value for key, value in model.items() if key != "gradient_checkpointing"}
    try:
        with torch.device("meta"):
            build_model(**arguments)
    except (TypeError, ValueError) as error:
        return [str(error)]
    return []
