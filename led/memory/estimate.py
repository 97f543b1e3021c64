"""The peak memory of one training step per device (`estimate_peak_memory`), and whether a setup fits a GPU
(`plan`, `largest_batch_size`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from led.errors import ConfigError
from led.memory.account import (
    GIB,
    _Bytes,
    _ordered_parameter_sizes,
    _Stage,
    _stages,
    count_parameters,
    parameter_shapes,
)
from led.models.led.config import LEDConfig

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

    def __str__(self) -> str:
        gib = lambda n: f"{n / GIB:8.2f} GiB"  # noqa: E731
        lines = [self.description] if self.description else []
        lines += [f"  parameters         {gib(self.parameters)}  ({self.num_parameters / 1e6:.1f}M)",
                  f"  gradients          {gib(self.gradients)}",
                  f"  optimizer states   {gib(self.optimizer_states)}"]
        if self.gradient_buckets:
            lines.append(f"  DDP grad buckets   {gib(self.gradient_buckets)}")
        lines.append(f"  activations        {gib(self.activations)}  (kept for backward at the end of forward)")
        lines += [f"    {name:<17}{gib(size)}" for name, size in self.activation_parts.items()]
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


def _optimizer_memory(config: LEDConfig, optimizer: type, b: _Bytes) -> tuple[int, int]:
    """(state bytes, temporary bytes of one step) for all parameters.

    AdamW keeps two moments per parameter. Adafactor (torch.optim.Adafactor) keeps a row and a column
    second moment per matrix and a full one per vector. The step's temporaries: on CUDA the foreach
    implementation (the default there) builds one parameter-sized list at once (AdamW's sqrt of the second
    moment, Adafactor's variance estimates); on CPU the per-tensor loop holds two temporaries of a tensor
    while the previous tensor's last one is still referenced."""
    shapes = parameter_shapes(config)
    matrices = (shapes["embeddings"] + shapes["encoder_layer"] * config.encoder_layers
                + shapes["decoder_layer"] * config.decoder_layers)
    sizes = _ordered_parameter_sizes(config)
    import torch

    if issubclass(optimizer, torch.optim.Adam | torch.optim.AdamW):
        states = 2 * sum(sizes)
    elif issubclass(optimizer, torch.optim.Adafactor):
        states = sum(sum(s) if len(s) == 2 else s[0] for s in matrices)
    else:
        raise ConfigError(f"optimizer={optimizer.__name__} is invalid: the estimate knows the states of Adam, AdamW "
                         "and Adafactor")
    if b.device == "cuda":
        temporary = sum(sizes)
    else:
        temporary = max(2 * size + previous for size, previous in zip(sizes, [0] + sizes))
    return states * b.param, temporary * b.param


def _walk(stages: list[_Stage], fixed: int, checkpointing: bool, end_of_forward: int) -> tuple[int, str, int]:
    """Walk the backward pass from the last stage down. Returns (peak bytes, where, activation bytes kept
    at the end of the forward pass). `fixed` stays on the device throughout (weights, optimizer states);
    `end_of_forward` is held only as the forward pass ends."""
    kept = [s.inputs if checkpointing and s.layer else s.saved for s in stages]
    live = fixed + sum(kept)
    peak, where = live + end_of_forward, "end of forward"
    recomputed: set[str] = set()
    for stage in reversed(stages):
        if checkpointing and stage.layer and stage.layer not in recomputed:
            # The first backward step inside a checkpointed layer re-runs its forward, keeping everything.
            recomputed.add(stage.layer)
            live += sum(s.saved - s.inputs for s in stages if s.layer == stage.layer)
        during = live + stage.work + stage.grads
        if during > peak:
            peak, where = during, f"backward of the {stage.name}"
        live += stage.grads - stage.saved
    return peak, where, sum(kept)


def _check_choice(name: str, value: object, valid: tuple) -> None:
    if value not in valid:
        raise ConfigError(f"{name}={value!r} is invalid: valid values are {', '.join(map(str, valid))}")


def _check_positive(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}={value!r} is invalid: it must be an integer >= {minimum}")


def _validate(config: LEDConfig, batch_size: int, input_length: int, target_length: int, precision: str,
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
    if input_length > config.max_encoder_position_embeddings:
        raise ConfigError(f"input_length={input_length} is longer than the model's "
                         f"{config.max_encoder_position_embeddings} encoder positions")
    if target_length > config.max_decoder_position_embeddings:
        raise ConfigError(f"target_length={target_length} is longer than the model's "
                         f"{config.max_decoder_position_embeddings} decoder positions")
    if num_global > input_length:
        raise ConfigError(f"num_global={num_global} is more than input_length={input_length} tokens")


def estimate_peak_memory(config: LEDConfig, batch_size: int, input_length: int, target_length: int,
                         precision: str = "32", gradient_checkpointing: bool = False, strategy: str = "single",
                         num_devices: int = 1, optimizer: str | type = "adamw", num_global: int = 1,
                         device: str = "cuda") -> MemoryEstimate:
    """Peak memory per device of one training step (forward, loss, backward, optimizer step).

    batch_size is per device; input_length/target_length are encoder/decoder tokens per example;
    num_global is the number of global tokens per example (the DataModule makes the first token global).
    strategy: "single", "ddp" (full copies plus DDP's gradient buckets) or "fsdp" (parameters, gradients
    and optimizer states sharded over num_devices; every layer is its own unit, the embeddings and head
    the root unit, which stays gathered through forward and backward). optimizer: a torch optimizer class
    (Adam, AdamW, Adafactor) or train.py's option naming it (conf/optimizer/: "adamw", "adafactor"). device "cpu"
    models the CPU kernels (the measurements in bench/bench_memory.py); "cuda" the GPU ones.
    """
    _validate(config, batch_size, input_length, target_length, precision, strategy, num_devices, num_global, device)
    optimizer = optimizer_class(optimizer)
    b = _Bytes.of(precision, device, strategy)
    num_parameters = count_parameters(config)
    shards = num_devices if strategy == "fsdp" else 1
    weights = num_parameters * b.param // shards + config.vocab_size * b.param  # + final_logits_bias
    gradients = num_parameters * b.param // shards
    states, step_temporary = _optimizer_memory(config, optimizer, b)
    states, step_temporary = states // shards, step_temporary // shards
    buckets = num_parameters * b.param if strategy == "ddp" else 0  # DDP's flat gradient buckets

    stages = _stages(config, b, batch_size, input_length, target_length, num_global)
    fixed = weights + states + buckets + _apply_strategy(config, stages, b, strategy, shards)
    # As the forward pass ends, the logits still exist beside the loss's fp32 log-probabilities: fp32 under
    # autocast (the bf16 matmul output plus the fp32 final_logits_bias), else in the compute dtype and, if
    # that is bf16, with an fp32 copy for the loss. (Lightning's autocast does not cache weight copies, so
    # none outlive their matmul unless autograd keeps them.)
    logits = batch_size * target_length * config.vocab_size
    end_of_forward = logits * 4 if b.autocast else logits * b.act + (logits * 4 if b.act == 2 else 0)
    peak, where, activations = _walk(stages, fixed, gradient_checkpointing, end_of_forward)
    step = weights + gradients + states + buckets + step_temporary
    if step > peak:
        peak, where = step, "optimizer step"

    parts: dict[str, int] = {}
    for stage in stages:
        parts[stage.part] = parts.get(stage.part, 0) + (stage.inputs if gradient_checkpointing and stage.layer
                                                         else stage.saved)
    description = (f"LED d_model={config.d_model}, {config.encoder_layers}+{config.decoder_layers} layers: "
                   f"batch {batch_size} x ({input_length} + {target_length}) tokens, {precision}, "
                   f"{strategy}" + (f" x{num_devices}" if strategy != "single" else "")
                   + f", {optimizer.__name__}, checkpointing {'on' if gradient_checkpointing else 'off'}, {device}")
    return MemoryEstimate(weights, gradients, states, buckets, activations, peak, where, num_parameters,
                          parts, description)


def _apply_strategy(config: LEDConfig, stages: list[_Stage], b: _Bytes, strategy: str, shards: int) -> int:
    """Set each stage's gradient bytes and the layers' weight copies and FSDP working sets; returns the
    bytes held through forward and backward beyond the (sharded) weights and optimizer states.

    FSDP: every layer is a unit, gathered (in the compute dtype) while it runs, with the next one
    prefetched, and its gradient reduce-scattered right after its backward; the root unit (embeddings and
    the tied head) stays gathered through forward and backward and its gradients whole until the end."""
    layer_params: dict[str, int] = {}
    for stage in stages:
        if stage.layer:
            layer_params[stage.layer] = layer_params.get(stage.layer, 0) + stage.params
    for stage in stages:
        stage.grads = stage.params * b.param
        if stage.layer:
            stage.saved += stage.params * b.weight_copy
        if strategy == "fsdp":
            if stage.layer:  # two gathered units and this one's unsharded gradients
                stage.work += 3 * layer_params[stage.layer] * b.act
                stage.grads //= shards
            else:  # the root's unsharded gradients, in the reduce dtype
                stage.grads = stage.params * b.act
    if strategy == "fsdp":
        return sum(math.prod(s) for s in parameter_shapes(config)["embeddings"]) * b.act
    return 0


def _fits(estimate: MemoryEstimate, gpu_memory_gib: float) -> bool:
    return estimate.total * (1 + FRAGMENTATION_MARGIN) <= (gpu_memory_gib - CUDA_RESERVED_GIB) * GIB


def largest_batch_size(config: LEDConfig, gpu_memory_gib: float, limit: int = 4096, **kwargs: object) -> int:
    """The largest batch size per device whose estimate fits in `gpu_memory_gib` (0 if none does).
    kwargs are those of `estimate_peak_memory` other than batch_size."""
    fits = lambda n: _fits(estimate_peak_memory(config, n, **kwargs), gpu_memory_gib)  # noqa: E731
    if not fits(1):
        return 0
    low, high = 1, 2
    while high <= limit and fits(high):
        low, high = high, 2 * high
    high = min(high, limit + 1)
    while high - low > 1:  # fits(low), not fits(high)
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def plan(config: LEDConfig, batch_size: int, input_length: int, target_length: int, gpu_memory_gib: float,
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
