"""The peak memory of one training step per device (`estimate_peak_memory`), and whether a setup fits a GPU
(`plan`, `largest_batch_size`)."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from led.errors import ConfigError
from led.memory.account import GIB, Account, trace_training_step
from led.models.families import family

PRECISIONS = ("32", "bf16-mixed", "bf16-true")
STRATEGIES = ("single", "ddp", "fsdp")
# train.py's optimizer options: `optimizer=NAME` means the class conf/optimizer/NAME.yaml names with `_target_`.
OPTIMIZER_OPTIONS = Path(__file__).resolve().parents[2] / "conf" / "optimizer"
DEVICES = ("cuda", "cpu")

# Memory on a GPU that the estimate does not see: the CUDA context (~0.5 GiB on an H100 with PyTorch),
# cuBLAS/cuDNN workspaces and NCCL buffers.
CUDA_RESERVED_GIB = 1.0
# The caching allocator reserves more than it has allocated at the peak (blocks rounded up, free blocks
# split between differently sized activations): typically a few percent; keep this fraction free.
FRAGMENTATION_MARGIN = 0.10



@dataclass
class MemoryEstimate:
    """Peak memory per device of one training step, in bytes. `str()` gives a breakdown in GiB."""

    parameters: int  # weights and buffers held on one device
    gradients: int  # parameter gradients after the backward pass
    optimizer_states: int
    gradient_buckets: int  # DDP's flat copies of the gradients (0 for the other strategies)
    activations: int  # kept for backward at the end of the forward pass
    total: int  # the peak
    peak_phase: str  # where the peak happens
    num_parameters: int
    activation_parts: dict[str, int] = field(default_factory=dict)
    description: str = ""
    kept: int = 0  # of the activations, what autograd keeps for backward (saved tensors, each storage once)

    def __str__(self) -> str:
        gib = lambda n: f"{n / GIB:8.2f} GiB"  # noqa: E731
        lines = [self.description] if self.description else []
        lines += [f"  parameters         {gib(self.parameters)}  ({self.num_parameters / 1e6:.1f}M)",
                  f"  gradients          {gib(self.gradients)}",
                  f"  optimizer states   {gib(self.optimizer_states)}"]
        if self.gradient_buckets:
            lines.append(f"  DDP grad buckets   {gib(self.gradient_buckets)}")
        lines.append(f"  activations        {gib(self.activations)}  (kept for backward at the end of forward)")
        width = max([17, *(len(name) + 1 for name in self.activation_parts)])
        lines += [f"    {name:<{width}}{gib(size)}" for name, size in self.activation_parts.items()]
        lines.append(f"  peak               {gib(self.total)}  ({self.peak_phase})")
        return "\n".join(lines)



def optimizer_class(optimizer: str | type) -> type:
    """A torch optimizer class, or the one train.py's `optimizer=NAME` option builds (conf/optimizer/NAME.yaml)."""
    if isinstance(optimizer, type):
        return optimizer
    options = sorted(path.stem for path in OPTIMIZER_OPTIONS.glob("*.yaml"))
    _check_choice("optimizer", optimizer, tuple(options))
    from hydra.utils import get_object
    from omegaconf import OmegaConf

    return get_object(OmegaConf.load(OPTIMIZER_OPTIONS / f"{optimizer}.yaml")["_target_"])


def _optimizer_memory(shapes: list[tuple[int, ...]], optimizer: type, device: str, param_bytes: int) -> tuple[int, int]:
    """(state bytes, temporary bytes of one step) for parameters of `shapes` (in `model.parameters()` order).

    AdamW keeps two moments per parameter. Adafactor (torch.optim.Adafactor) keeps a row and a column
    second moment per matrix and a full one per vector. The step's temporaries: on CUDA the foreach
    implementation (the default there) builds one parameter-sized list at once (AdamW's sqrt of the second
    moment, Adafactor's variance estimates); on CPU the per-tensor loop holds two temporaries of a tensor
    while the previous tensor's last one is still referenced."""
    sizes = [math.prod(shape) for shape in shapes]
    if issubclass(optimizer, torch.optim.Adam | torch.optim.AdamW):
        states = 2 * sum(sizes)
    elif issubclass(optimizer, torch.optim.Adafactor):
        states = sum(math.prod(s[:-1]) + math.prod(s[:-2]) * s[-1] if len(s) >= 2 else s[0] for s in shapes)
    else:
        raise ConfigError(f"optimizer={optimizer.__name__} is invalid: the estimate knows the states of Adam, AdamW "
                          "and Adafactor")
    if device == "cuda":
        temporary = sum(sizes)
    else:
        temporary = max(2 * size + previous for size, previous in zip(sizes, [0] + sizes))
    return states * param_bytes, temporary * param_bytes


def _check_choice(name: str, value: object, valid: tuple) -> None:
    if value not in valid:
        raise ConfigError(f"{name}={value!r} is invalid: valid values are {', '.join(map(str, valid))}")


def _check_positive(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}={value!r} is invalid: it must be an integer >= {minimum}")


def _validate(model: nn.Module, batch_size: int, input_length: int, target_length: int, precision: str,
              strategy: str, num_devices: int, num_global: int, device: str) -> None:
    _check_choice("precision", precision, PRECISIONS)
    _check_choice("strategy", strategy, STRATEGIES)
    _check_choice("device", device, DEVICES)
    for name, value in (("batch_size", batch_size), ("input_length", input_length),
                        ("target_length", target_length), ("num_devices", num_devices)):
        _check_positive(name, value)
    _check_positive("num_global", num_global, minimum=0)
    if strategy == "single" and num_devices != 1:
        raise ConfigError(f"num_devices={num_devices} needs strategy ddp or fsdp: strategy 'single' is one device")
    if model.max_source_positions is not None and input_length > model.max_source_positions:
        raise ConfigError(f"input_length={input_length} is longer than the model's {model.max_source_positions} "
                          "encoder positions")
    if model.max_target_positions is not None and target_length > model.max_target_positions:
        raise ConfigError(f"target_length={target_length} is longer than the model's {model.max_target_positions} "
                          "decoder positions")
    if num_global > input_length:
        raise ConfigError(f"num_global={num_global} is more than input_length={input_length} tokens")


def build_meta_model(config: Any, precision: str = "32", gradient_checkpointing: bool = False,
                     compute_bf16: bool = False) -> nn.Module:
    """The model of `config` (any family: `config.model_type`) on the meta device, in training mode: its
    modules and parameter shapes, no memory. `compute_bf16`: weights in bf16 as FSDP gathers them."""
    key = (config.model_type, json.dumps(config.to_dict(), sort_keys=True, default=str),
           precision == "bf16-true" or compute_bf16)
    model = _meta_model(*key)
    for p in model.parameters():
        p.grad = None
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    else:
        model.gradient_checkpointing_disable()
    return model


@functools.lru_cache(maxsize=8)
def _meta_model(model_type: str, config_json: str, bf16: bool) -> nn.Module:
    """The meta model of a config, built once per config (a planner's search estimates many batch sizes)."""
    config = family(model_type).config(json.loads(config_json))
    with torch.device("meta"):
        model = family(model_type).model_class(config)
    model.train()
    if bf16:
        model.to(torch.bfloat16)
    return model


def count_parameters(config: Any) -> int:
    """The model's number of parameters (`num_parameters()`), from its modules on the meta device."""
    return build_meta_model(config).num_parameters()


def _planned_batch(model: nn.Module, batch_size: int, input_length: int, target_length: int,
                   num_global: int) -> dict[str, torch.Tensor]:
    """The batch the planner assumes, as real CPU tensors (expanded: they take no memory): every input token real,
    the first `num_global` global (families that take a global_attention_mask), every target scored."""
    def full(value: int, length: int) -> torch.Tensor:
        return torch.full((1, 1), value, dtype=torch.long).expand(batch_size, length)
    token = model.config.pad_token_id + 1  # any token but padding (on the meta device no value is read)
    batch = dict(input_ids=full(token, input_length), attention_mask=full(1, input_length),
                 labels=full(token, target_length))
    if model.takes_global_attention_mask and num_global:
        batch["global_attention_mask"] = (torch.arange(input_length) < num_global).long().expand(batch_size, -1)
    return batch


def estimate_peak_memory(config: Any, batch_size: int, input_length: int, target_length: int,
                         precision: str = "32", gradient_checkpointing: bool = False, strategy: str = "single",
                         num_devices: int = 1, optimizer: str | type = "adamw", num_global: int = 1,
                         device: str = "cuda") -> MemoryEstimate:
    """Peak memory per device of one training step (forward, loss, backward, optimizer step).

    config: a model config of either family (LEDConfig, PegasusXConfig). batch_size is per device;
    input_length/target_length are encoder/decoder tokens per example; num_global is the number of global tokens
    per example for a family that takes a global_attention_mask (LED: the DataModule makes the first token global;
    PEGASUS-X's global tokens are learned and part of its config). strategy: "single", "ddp" (full copies plus
    DDP's gradient buckets) or "fsdp" (parameters, gradients and optimizer states sharded over num_devices; every
    layer is its own unit, the rest of the model the root unit, which stays gathered through forward and
    backward). optimizer: a torch optimizer class (Adam, AdamW, Adafactor) or train.py's option naming it
    (conf/optimizer/: "adamw", "adafactor"). device "cpu" models the CPU kernels (the measurements in
    bench/bench_memory.py); "cuda" the GPU ones.
    """
    fsdp_bf16 = strategy == "fsdp" and precision == "bf16-mixed"
    model = build_meta_model(config, precision, gradient_checkpointing, compute_bf16=fsdp_bf16)
    _validate(model, batch_size, input_length, target_length, precision, strategy, num_devices, num_global, device)
    optimizer = optimizer_class(optimizer)
    param_bytes = 2 if precision == "bf16-true" else 4
    act_bytes = 4 if precision == "32" else 2
    shapes = [tuple(p.shape) for p in model.parameters()]
    num_parameters = sum(math.prod(s) for s in shapes)
    buffers = sum(b.numel() for b in model.buffers()) * param_bytes
    shards = num_devices if strategy == "fsdp" else 1
    weights = num_parameters * param_bytes // shards + buffers
    gradients = num_parameters * param_bytes // shards
    states, step_temporary = _optimizer_memory(shapes, optimizer, device, param_bytes)
    states, step_temporary = states // shards, step_temporary // shards
    buckets = num_parameters * param_bytes if strategy == "ddp" else 0  # DDP's flat gradient buckets

    account = trace_training_step(model, _planned_batch(model, batch_size, input_length, target_length, num_global),
                                  device, autocast=precision == "bf16-mixed", units=model.layers())
    fixed = weights + states + buckets
    if strategy == "fsdp":
        peak, where = _fsdp_peak(account, fixed, shards, act_bytes, param_bytes)
    else:
        peak, where = max((fixed + s.other + sum(s.grads.values()), s.where) for s in account.samples)
    step = weights + gradients + states + buckets + step_temporary
    if step > peak:
        peak, where = step, "optimizer step"

    name = family(config.model_type).name
    description = (f"{name} ({num_parameters / 1e6:.0f}M parameters): batch {batch_size} x ({input_length} + "
                   f"{target_length}) tokens, {precision}, {strategy}" + (f" x{num_devices}" if strategy != "single"
                                                                          else "")
                   + f", {optimizer.__name__}, checkpointing {'on' if gradient_checkpointing else 'off'}, {device}")
    return MemoryEstimate(weights, gradients, states, buckets, account.end_of_forward, peak, where, num_parameters,
                          account.parts, description, sum(account.kept.values()))


def _fsdp_peak(account: Account, fixed: int, shards: int, act_bytes: int, param_bytes: int) -> tuple[int, str]:
    """The peak under FSDP: every layer a unit, gathered (in the compute dtype) while it runs, with the next one
    prefetched, and its gradients (traced in the compute dtype) reduce-scattered right after its backward; the
    root unit (embeddings, head) stays gathered through forward and backward and its gradients whole until the
    end."""
    root = account.unit_parameters.get(-1, 0) * act_bytes
    best = (0, "")
    for s in account.samples:
        sharded = sum(size for unit, size in s.grads.items() if unit >= 0 and unit != s.unit)
        total = fixed + root + s.other + s.grads.get(-1, 0) + sharded * param_bytes // act_bytes // shards
        if s.unit is not None and s.unit >= 0:  # this unit's and the next one's weights; its whole gradients
            total += 2 * account.unit_parameters[s.unit] * act_bytes + s.grads.get(s.unit, 0)
        best = max(best, (total, s.where))
    return best


def _fits(estimate: MemoryEstimate, gpu_memory_gib: float) -> bool:
    return estimate.total * (1 + FRAGMENTATION_MARGIN) <= (gpu_memory_gib - CUDA_RESERVED_GIB) * GIB


def largest_batch_size(config: Any, gpu_memory_gib: float, limit: int = 4096, **kwargs: Any) -> int:
    """The largest batch size per device whose estimate fits in `gpu_memory_gib` (0 if none does).
    kwargs are those of `estimate_peak_memory` other than batch_size.

    Every tensor of a step is of a size affine in the batch size, so the peak, the largest of the memory at every
    point of the step, is convex in it: a chord between two batch sizes lies above it (interpolating on it finds a
    batch size that fits) and its extension beyond them below it (extrapolating finds one that does not). So a
    few estimates find the answer, each checked exactly."""
    budget = (gpu_memory_gib - CUDA_RESERVED_GIB) * GIB / (1 + FRAGMENTATION_MARGIN)
    peak = functools.cache(lambda n: estimate_peak_memory(config, n, **kwargs).total)  # noqa: E731
    if peak(1) > budget:
        return 0
    fitting, high = [1], None  # batch sizes that fit, ascending; high, once known, does not fit
    while high is None or high - fitting[-1] > 1:
        low = fitting[-1]
        if high is None:  # extrapolate from the two largest that fit: at least the answer
            slope = ((peak(low) - peak(fitting[-2])) / (low - fitting[-2])) if len(fitting) > 1 else 0
            guess = low + int((budget - peak(low)) // slope) if slope > 0 else 2 * low
        else:  # interpolate between low and high: at most the answer
            guess = low + int((budget - peak(low)) // ((peak(high) - peak(low)) / (high - low)))
        guess = max(guess, low + 1) if high is None else min(max(guess, low + 1), high - 1)
        if guess > limit:
            guess = limit
            if guess <= low:
                return low
        if peak(guess) <= budget:
            fitting.append(guess)
        else:
            high = guess
    return fitting[-1]


def plan(config: Any, batch_size: int, input_length: int, target_length: int, gpu_memory_gib: float,
         precision: str = "bf16-mixed", strategy: str = "single", num_devices: int = 1, optimizer: str | type = "adamw",
         num_global: int = 1) -> str:
    """Whether one training step fits on GPUs of `gpu_memory_gib`, without or with gradient checkpointing,
    and the largest batch size per device that fits either way. Returns a readable report."""
    if not gpu_memory_gib > CUDA_RESERVED_GIB:
        raise ConfigError(f"gpu_memory_gib={gpu_memory_gib!r} is invalid: it must exceed the "
                         f"{CUDA_RESERVED_GIB} GiB reserved for the CUDA context")
    kwargs = dict(input_length=input_length, target_length=target_length, precision=precision,
                  strategy=strategy, num_devices=num_devices, optimizer=optimizer, num_global=num_global)
    plain = estimate_peak_memory(config, batch_size, **kwargs)
    checkpointed = estimate_peak_memory(config, batch_size, gradient_checkpointing=True, **kwargs)
    usable = gpu_memory_gib - CUDA_RESERVED_GIB
    budget = usable / (1 + FRAGMENTATION_MARGIN)
    lines = [str(plain), "",
             f"with gradient checkpointing: activations {checkpointed.activations / GIB:.2f} GiB, "
             f"peak {checkpointed.total / GIB:.2f} GiB ({checkpointed.peak_phase})",
             f"budget per GPU: {gpu_memory_gib:g} GiB - {CUDA_RESERVED_GIB:g} GiB CUDA context, "
             f"with {FRAGMENTATION_MARGIN:.0%} of the peak kept free for the allocator: peak <= {budget:.2f} GiB"]
    if _fits(plain, gpu_memory_gib):
        verdict = f"fits without gradient checkpointing ({plain.total / GIB:.2f} GiB)"
    elif _fits(checkpointed, gpu_memory_gib):
        verdict = (f"needs gradient checkpointing: {plain.total / GIB:.2f} GiB without it, "
                   f"{checkpointed.total / GIB:.2f} GiB with it")
    else:
        options = ["a shorter input"] + (["bf16-mixed"] if precision == "32" else []) + (
            ["fsdp over more devices"] if strategy == "fsdp" else ["fsdp"])
        verdict = (f"does not fit, even with gradient checkpointing ({checkpointed.total / GIB:.2f} GiB): "
                   f"try {', '.join(options)}")
    lines.append(f"verdict at batch size {batch_size}: {verdict}")
    sizes = [largest_batch_size(config, gpu_memory_gib, gradient_checkpointing=ckpt, **kwargs)
             for ckpt in (False, True)]
    lines.append(f"largest batch size per GPU that fits: {sizes[0]} without gradient checkpointing, "
                 f"{sizes[1]} with it")
    return "\n".join(lines)
