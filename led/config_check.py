"""Training settings checked against the code that receives them, before any work starts.

Every config node that builds something names it with `_target_` (the model builder, the DataModule, the optimizer,
the schedule, the LightningModule, `generate`, the Trainer, callbacks, loggers), so one generic pass checks each node
against its target's signature: the parameters say which keys exist and their annotations what each takes. A key
the target does not take (`+optimizer.lrr=1e-3`) or a value of the wrong type (`trainer.max_steps=abc`) is one line
naming the key, the value and what is valid, instead of a TypeError from inside Lightning or torch after the corpus,
the tokenizer and the model were built. A `_partial_` node is called later with the arguments its caller supplies:
those are the target's parameters without a default that the node leaves out. A mapping argument whose annotation
is `Annotated[..., receiver]` (`model.overrides` -> LEDConfig, `data.synthetic` -> write_corpus) is checked against
that receiver the same way. Values left at `???`, a from-scratch model that LEDConfig rejects (an odd window, a
window list of the wrong length) and generation settings that GenerationConfig rejects (`generation.num_beams=0`) are
reported here too. What only the receiver itself can refuse (`optimizer.lr=-1`) is reported as it refuses it
(led/instantiate.py).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import enum
import inspect
import logging
import os
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from led.errors import first_line

# Keys Hydra's `instantiate` reads itself; they are not arguments of the target.
_HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})
_SEQUENCES = (list, tuple, collections.abc.Sequence, typing.Sequence)
_MAPPINGS = (dict, collections.abc.Mapping, typing.Mapping)
_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "text", type(None): "null"}


@dataclasses.dataclass
class _Receiver:
    """What a config node is handed to: its name in messages, the annotation of each parameter the node may set
    (Any when it has none), whether it takes **kwargs (then any other key is accepted), and the parameters it
    needs that nobody gives."""

    name: str
    types: dict[str, Any]
    takes_any_key: bool = False
    required: tuple[str, ...] = ()


def setting_problems(cfg: DictConfig) -> list[str]:
    """One message per setting that cannot work (empty when all can), each naming the key, the value and what
    would be valid."""
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            return [f"{key} has no value (it is ??? in its config file): give one, e.g. {key}=..." for key in missing]
        plain = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:  # an interpolation that cannot resolve: `${nope}`, a resolver's error
        if not HydraConfig.initialized() and "HydraConfig was not set" in str(error):
            return []  # `${hydra:...}` outside a Hydra app (a test's config): it fails, if at all, where it is used
        return [f"{error.full_key or 'a setting'} cannot be resolved ({first_line(error)}): give a value, or an "
                "interpolation of a key that exists, e.g. ${data.max_input_length}"]
    except Exception:  # noqa: BLE001 - a resolver that fails otherwise fails, with its own message, where it is used
        return []
    if not isinstance(plain, dict):
        return []
    from led.training.loggers import missing_logger_packages

    return (_check_targets(plain, "") or _model_problems(plain.get("model"))
            or _generation_problems(plain.get("generation"))
            or missing_logger_packages(plain.get("logger")))


def unknown_key_message(config: DictConfig, full_key: str) -> str | None:
    """The message `setting_problems` gives for `full_key` were it added to `config` (a config being composed, which
    Hydra refuses `optimizer.lrr=1e-3` for), e.g. "optimizer.lrr is not a setting of torch.optim.AdamW; did you mean
    optimizer.lr?"; None when no `_target_` node receives it (then Hydra's own message says it)."""
    plain = OmegaConf.to_container(config, resolve=False)  # interpolations as text: only keys and targets matter
    if not isinstance(plain, dict):
        return None
    plain.pop("hydra", None)
    *parents, key = full_key.split(".")
    node: Any = plain
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return None
    node[key] = None
    prefix = f"{full_key} is not a setting of "
    return next((problem for problem in _check_targets(plain, "") if problem.startswith(prefix)), None)


def _locate(target: str) -> Any:
    """`hydra.utils.get_object(target)` without the error it logs for a target that is not there: the config check
    says that in its one line."""
    hydra_log = logging.getLogger("hydra.utils")
    level = hydra_log.level
    hydra_log.setLevel(logging.CRITICAL)
    try:
        return get_object(target)
    finally:
        hydra_log.setLevel(level)


def _unimportable(target: str, path: str) -> str:
    """`optimizer._target_=torch.optim.AdamX cannot be imported: torch.optim has no AdamX; did you mean AdamW?`"""
    module_name, _, name = target.rpartition(".")
    where = _join(path, "_target_")
    try:
        module = _locate(module_name) if module_name else None
    except Exception:  # noqa: BLE001 - the module part is not there either
        module = None
    if module is None:
        return f"{where}={target} cannot be imported: there is no module {module_name or target!r}"
    close = difflib.get_close_matches(name, [n for n in dir(module) if not n.startswith("_")], n=1, cutoff=0.6)
    hint = f"; did you mean {module_name}.{close[0]}?" if close else ""
    return f"{where}={target} cannot be imported: {module_name} has no {name}{hint}"


def _check_targets(node: Any, path: str) -> list[str]:
    """Every `_target_` node under `node`, checked against its target's parameters."""
    problems: list[str] = []
    if isinstance(node, dict):
        target = node.get("_target_")
        if isinstance(target, str):
            try:
                found = _locate(target)
            except Exception:  # noqa: BLE001 - whatever importing it raised: the target is not there
                return [_unimportable(target, path)]
            try:
                receiver = _receiver(found, target, given=node, partial=node.get("_partial_") is True)
            except Exception:  # noqa: BLE001 - a receiver without a signature: nothing to check against
                receiver = None
            if receiver is not None:
                problems += _check_node(node, receiver, path)
        for key, value in node.items():
            problems += _check_targets(value, _join(path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            problems += _check_targets(value, _join(path, index))
    return problems


def _receiver(target: Callable[..., Any], name: str, given: collections.abc.Container[str] = (),
              partial: bool = False) -> _Receiver:
    """The parameters of `target` (a class: those of its __init__) with their annotations evaluated. Those without
    a default that `given` leaves out are the caller's to supply for a `partial` node, else missing."""
    signature = inspect.signature(target)
    function = target.__init__ if isinstance(target, type) else target  # type: ignore[misc]
    namespace = getattr(function, "__globals__", {})
    types_: dict[str, Any] = {}
    takes_any_key = False
    required = []
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            takes_any_key = True
        elif parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        elif parameter.default is inspect.Parameter.empty and parameter.name not in given:
            if not partial:
                required.append(parameter.name)
        else:
            types_[parameter.name] = _evaluate(parameter.annotation, namespace)
    return _Receiver(name, types_, takes_any_key, tuple(required))


def _evaluate(annotation: Any, namespace: dict[str, Any]) -> Any:
    if annotation is inspect.Parameter.empty:
        return Any
    if isinstance(annotation, str):  # `from __future__ import annotations`
        try:
            return eval(annotation, dict(namespace))  # an annotation of our code or an installed package
        except Exception:  # noqa: BLE001 - a name imported only for type checkers: nothing to check against
            return Any
    return annotation


def _check_node(node: dict[str, Any], receiver: _Receiver, path: str) -> list[str]:
    problems = [f"{_join(path, name)} has no value: {receiver.name} needs it; give {_join(path, name)}=..."
                for name in receiver.required]
    for key, value in node.items():
        if key in _HYDRA_KEYS:
            continue
        full_key = _join(path, key)
        if key not in receiver.types:
            if not receiver.takes_any_key:
                problems.append(_unknown_key_message(full_key, str(key), path, receiver))
        elif not _accepts(receiver.types[key], value):
            problems.append(f"{full_key}={show_value(value)} is not valid: {receiver.name} takes {key} as "
                            f"{_describe(receiver.types[key])}")
        elif isinstance(value, dict) and _settings_receivers(receiver.types[key]):
            problems += _check_node(value, _merged_receiver(_settings_receivers(receiver.types[key]), value),
                                    full_key)
    return problems


def _settings_receivers(hint: Any) -> list[Callable[..., Any]]:
    """X (and Y ...) of `Annotated[<a mapping>, X, Y]`: the mapping's keys are parameters of X (or of Y, ...)."""
    if typing.get_origin(hint) is typing.Annotated:
        return [meta for meta in hint.__metadata__ if callable(meta)]
    return []


def _merged_receiver(targets: list[Callable[..., Any]], given: dict[str, Any]) -> _Receiver:
    """One receiver taking every key any of `targets` takes (each key typed as the first that has it): e.g. the
    model overrides, a field of whichever family's config the model is; the family's own config then says which."""
    receivers = [_receiver(target, _public_name(target), given=given) for target in targets]
    types_: dict[str, Any] = {}
    for receiver in receivers:
        types_ = {**receiver.types, **types_}
    return _Receiver(" or ".join(r.name for r in receivers), types_, any(r.takes_any_key for r in receivers))


def _public_name(target: Any) -> str:
    """`led.LEDConfig` rather than `led.models.led.config.LEDConfig` when the package exports it."""
    package = sys.modules.get(target.__module__.split(".")[0])
    if getattr(package, target.__name__, None) is target:
        return f"{package.__name__}.{target.__name__}"  # type: ignore[union-attr]
    return f"{target.__module__}.{target.__qualname__}"


def _unknown_key_message(full_key: str, key: str, path: str, receiver: _Receiver) -> str:
    message = f"{full_key} is not a setting of {receiver.name}"
    close = difflib.get_close_matches(key, list(receiver.types), n=1, cutoff=0.6)
    if close:
        message += f"; did you mean {_join(path, close[0])}?"
    if len(receiver.types) <= 16:
        message += f" (its settings: {', '.join(sorted(receiver.types))})"
    return message


def _accepts(hint: Any, value: Any) -> bool:
    """Whether a plain config value (None, bool, int, float, str, list, dict) can be passed where `hint` is asked."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object or isinstance(hint, typing.TypeVar):
        return True
    if origin is typing.Annotated:
        return _accepts(args[0], value)
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
    if origin is typing.Annotated:
        return _describe(args[0])
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


def show_value(value: Any) -> str:
    """A value as it is written in an override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _model_problems(model: dict[str, Any] | None) -> list[str]:
    """LEDConfig's own checks (windows, head counts, ...) for a model trained from scratch, built on the meta
    device: no memory, no time. A pretrained model's config comes with its checkpoint and is checked when it loads."""
    if not isinstance(model, dict) or model.get("pretrained") or not isinstance(model.get("_target_"), str):
        return []
    arguments = {key: value for key, value in model.items() if key not in _HYDRA_KEYS}
    try:
        with torch.device("meta"):
            get_object(model["_target_"])(**arguments)
    except (TypeError, ValueError) as error:
        return [str(error)]
    return []


def _generation_problems(generation: dict[str, Any] | None) -> list[str]:
    """GenerationConfig's own checks of the validation summaries' settings (`generation.num_beams=0`), which
    `generate` would otherwise make at the run's first validation, after its first training steps."""
    if not isinstance(generation, dict):
        return []
    from led.models.generation import GenerationConfig

    try:
        GenerationConfig.from_dict({key: value for key, value in generation.items() if key not in _HYDRA_KEYS})
    except (TypeError, ValueError) as error:
        return [str(error).replace("GenerationConfig.", "generation.")]
    return []
