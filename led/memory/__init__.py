r"""Memory planning: the peak memory of one training step per device, derived from the model's structure.

    python -m led.memory model=led-base-16384 input_length=16384 target_length=512 batch_size=1 \
        precision=bf16-mixed strategy=fsdp devices=8 gpu_memory_gib=80

One training step is forward + loss + backward + optimizer step, with gradients freed before the next
forward (`zero_grad(set_to_none=True)`, Lightning's default). The estimate adds up, tensor by tensor, what
autograd keeps for the backward pass of every stage of the model (embeddings, each encoder and decoder
layer, the head and the loss), then walks the backward pass stage by stage, from the loss down: each stage
frees what it kept, allocates the gradients of its parameters and, while it runs, a working set of
activation gradients. The peak is the largest of

  * any point of that walk: parameters + optimizer states + the gradients produced so far + what the
    stages not yet run still keep + the working set of the running stage (with gradient checkpointing,
    a stage keeps only its inputs and re-creates the rest when its backward starts);
  * the optimizer step: parameters + gradients + optimizer states + the step's temporaries.

What a stage keeps follows the code in led/model.py and led/attention.py and what PyTorch's kernels save:
the fused attention kernels (CPU flash, CUDA memory-efficient) keep their inputs, output, log-sum-exp and
the additive mask in the query dtype (built from a boolean one by SDPA, or, in the encoder, once per window
size and shared by the layers); with attention dropout on CPU, SDPA
falls back to its math path, which keeps the probability matrices. Dropout keeps a bool mask on CUDA and
a noise tensor of the input's dtype on CPU. Under bf16 autocast, LayerNorm runs in fp32 (so the residual
stream is fp32) and every matmul casts its fp32 input on its own, so the projections of one input keep
one bf16 copy each, and each matmul keeps the bf16 copy of its weight (Lightning's autocast caches none,
and under FSDP the gathered weights are bf16 already). Precisions and strategies mean what they mean in
Lightning: "bf16-mixed" keeps fp32 weights, gradients and optimizer states.

On CPU, what autograd keeps matches this accounting to within 1% (tests/test_memory.py), and the peaks
measured by bench/bench_memory.py match the estimate to within a few percent. The CUDA kernels' choices
(memory-efficient attention for masked blocks, flash for the causal decoder, fused dropout, foreach AdamW)
follow PyTorch's dispatch rules but have not been measured here.

Not counted: the CUDA context and library workspaces (`plan` reserves `CUDA_RESERVED_GIB` for them), the
caching allocator's fragmentation (`plan` keeps `FRAGMENTATION_MARGIN` free), communication buffers.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from led.models.led.config import LEDConfig

if TYPE_CHECKING:
    from torch import Tensor

PRECISIONS = ("32", "bf16-mixed", "bf16-true")
STRATEGIES = ("single", "ddp", "fsdp")
OPTIMIZERS = ("adamw", "adafactor")
DEVICES = ("cuda", "cpu")
GIB = 2**30

# Memory on a GPU that the estimate does not see: the CUDA context (~0.5 GiB on an H100 with PyTorch),
# cuBLAS/cuDNN workspaces and NCCL buffers.
CUDA_RESERVED_GIB = 1.0
# The caching allocator reserves more than it has allocated at the peak (blocks rounded up, free blocks
# split between differently sized activations): typically a few percent; keep this fraction free.
FRAGMENTATION_MARGIN = 0.10


@dataclass(frozen=True)
class _Bytes:
    """Bytes per element of each kind of tensor, for one precision on one device."""

    param: int  # stored weights, their gradients and optimizer states
    act: int  # outputs of matmuls and attention; FSDP's gathered weights and unsharded gradients
    norm: int  # LayerNorm inputs and the residual stream (fp32 under autocast, which runs LayerNorm in fp32)
    autocast: bool  # matmuls cast their fp32 inputs to bf16, each on its own
    weight_copy: int  # per weight: autocast's bf16 copy, kept for backward (not under FSDP, which gathers
    # the weights in bf16 already: Lightning's FSDP precision plugin sets param_dtype=bf16 for bf16-mixed)
    device: str

    @classmethod
    def of(cls, precision: str, device: str, strategy: str) -> _Bytes:
        param = 2 if precision == "bf16-true" else 4
        act = 4 if precision == "32" else 2
        autocast = precision == "bf16-mixed"
        return cls(param, act, 4 if autocast else act, autocast, 2 if autocast and strategy != "fsdp" else 0,
                   device)

    def dropout(self, elements: int, dtype_bytes: int, p: float) -> int:
        """What dropout keeps: a bool mask (CUDA's fused kernel) or the scaled noise tensor (CPU)."""
        if p == 0.0:
            return 0
        return elements * (1 if self.device == "cuda" else dtype_bytes)

    def attention_mask(self, rows: int, keys: int) -> int:
        """The additive mask SDPA builds from a boolean one and keeps for backward: (rows, keys) in the
        query dtype; CUDA's memory-efficient kernel pads the key dimension to a multiple of 16."""
        if self.device == "cuda":
            keys = -(-keys // 16) * 16
        return rows * keys * self.act


@dataclass
class _Stage:
    """A piece of the forward pass, as the backward pass sees it."""

    name: str
    part: str  # the line of the breakdown it adds to
    saved: int  # bytes kept from the forward until this stage's backward
    work: int  # bytes allocated while this stage's backward runs (activation gradients)
    params: int = 0  # parameters whose gradients this stage's backward produces
    layer: str | None = None  # the checkpointed layer it belongs to
    inputs: int = 0  # bytes still kept when its layer is checkpointed
    grads: int = 0  # parameter-gradient bytes its backward leaves on the device (set by the strategy)


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


def parameter_shapes(config: LEDConfig) -> dict[str, list[tuple[int, ...]]]:
    """Parameter shapes in `model.parameters()` order, grouped: `embeddings` (shared table, positions and
    embedding LayerNorms; lm_head is tied to the table), `encoder_layer`, `decoder_layer` (one layer each)."""
    d = config.d_model
    linear = lambda n_in, n_out: [(n_out, n_in), (n_out,)]  # noqa: E731
    norm = [(d,), (d,)]
    ffn = lambda f: linear(d, f) + linear(f, d)  # noqa: E731
    return {
        "embeddings": [(config.vocab_size, d), (config.max_encoder_position_embeddings, d), *norm,
                       (config.max_decoder_position_embeddings, d), *norm],
        # query, key, value, their global twins, output; LayerNorm; fc1, fc2; LayerNorm
        "encoder_layer": 7 * linear(d, d) + norm + ffn(config.encoder_ffn_dim) + norm,
        # self-attention q, k, v, out; LayerNorm; cross-attention q, k, v, out; LayerNorm; fc1, fc2; LayerNorm
        "decoder_layer": 4 * linear(d, d) + norm + 4 * linear(d, d) + norm + ffn(config.decoder_ffn_dim) + norm,
    }


def _ordered_parameter_sizes(config: LEDConfig) -> list[int]:
    shapes = parameter_shapes(config)
    embeddings = [math.prod(s) for s in shapes["embeddings"]]
    encoder = [math.prod(s) for s in shapes["encoder_layer"]]
    decoder = [math.prod(s) for s in shapes["decoder_layer"]]
    return (embeddings[:2] + encoder * config.encoder_layers + embeddings[2:5]
            + decoder * config.decoder_layers + embeddings[5:])


def count_parameters(config: LEDConfig) -> int:
    """The model's number of parameters (`LEDForConditionalGeneration.num_parameters()`)."""
    return sum(_ordered_parameter_sizes(config))


def _attention(b: _Bytes, config: LEDConfig, batch_heads: int, queries: int, keys: int, mask_rows: int) -> int:
    """What SDPA keeps beyond q, k, v and its output (which the callers count: whether they are copies
    depends on the layer): the fused kernels keep the fp32 log-sum-exp and the additive mask; the math
    path (CPU with attention dropout) keeps the probabilities, the dropout noise and the dropped
    probabilities, and neither output nor mask."""
    if b.device == "cpu" and config.attention_dropout > 0:
        return 3 * batch_heads * queries * keys * b.act
    return batch_heads * queries * 4 + (b.attention_mask(mask_rows, keys) if mask_rows else 0)


def _residual(b: _Bytes, config: LEDConfig, tokens: int) -> int:
    """dropout(sublayer) + residual -> LayerNorm: the dropout mask, the LayerNorm input and its statistics."""
    x = tokens * config.d_model
    return b.dropout(x, b.act, config.dropout) + x * b.norm + 8 * tokens


def _feed_forward(b: _Bytes, config: LEDConfig, name: str, tokens: int, ffn: int, params: int) -> _Stage:
    """fc1 -> activation -> dropout -> fc2, then the residual: fc1's input, fc1's output (kept by the
    activation), fc2's input (the activation's or the dropout's output) and the dropout mask.
    Backward, at its largest (the activation's backward), holds the residual-stream gradient and the
    gradients of fc2's input and of fc1's output, but has already freed fc2's input and the mask."""
    x, hidden = tokens * config.d_model, tokens * ffn
    saved = (x * b.act + 2 * hidden * b.act + b.dropout(hidden, b.act, config.activation_dropout)
             + _residual(b, config, tokens))
    work = x * b.norm + hidden * b.act
    return _Stage(f"{name} feed-forward", name.split(" layer")[0] + " layers", saved, work, params, name)


def _encoder_layer(b: _Bytes, config: LEDConfig, name: str, batch: int, length: int, window: int,
                   num_global: int, builds_mask: bool) -> list[_Stage]:
    """Windowed + global self-attention (led/attention.py) and the feed-forward block of one encoder layer:
    the attention itself, its output projection + residual, the feed-forward block.

    The additive window mask is built by the first layer with its window (`builds_mask`) and shared by the
    others: the layers' SDPA nodes (fused kernels) and, under gradient checkpointing, the layers' saved
    inputs keep it until that first layer's backward, so it is counted there."""
    d, heads = config.d_model, config.encoder_attention_heads
    block = window // 2
    length = -(-length // block) * block  # a layer with a smaller window than the largest pads its blocks
    tokens = batch * length
    x = tokens * d
    blocks = tokens // block  # query blocks over the batch
    keys = 3 * block + num_global  # key blocks k-1, k, k+1 of each query block, then the global keys
    has_global = 1 if num_global else 0
    if num_global or batch > 1:  # keys (or values) copied into per-block windows, global keys appended
        windows = blocks * keys * d * b.act
    else:  # the windows stay a strided view of the keys padded by one block at each end
        windows = (length + 2 * block) * d * b.act
    fused = not (b.device == "cpu" and config.attention_dropout > 0)
    if b.autocast:
        # Each projection casts the fp32 input on its own; the gather of the global rows keeps it in fp32.
        inputs = (3 + 2 * has_global) * x * b.act + has_global * x * b.norm
    else:
        inputs = x * b.act  # one tensor, kept by all projections
    shapes = parameter_shapes(config)["encoder_layer"]
    saved = (inputs
             + (1 + 2 * has_global) * x * b.act  # q (kept by SDPA), k and v (kept by the global-key gathers)
             + 2 * windows
             # The window mask is shared by the layers (`builds_mask`), but CUDA's memory-efficient kernel
             # keeps its own copy, padded to 16 keys, unless the keys are a multiple of 16 already.
             + _attention(b, config, blocks * heads, block, keys,
                          mask_rows=blocks * block if b.device == "cuda" and keys % 16 else 0)
             + (x * b.act if fused else 0))  # SDPA's output; the layer goes on with a re-laid-out copy
    if num_global:
        # key_global/value_global over every token, attended by the global queries
        saved += 2 * x * b.act + _attention(b, config, batch * heads, num_global, length,
                                            mask_rows=batch * num_global)
    # Backward, at its largest (the local SDPA's backward, after the global rows' backward has freed
    # key_global/value_global): the residual-stream gradient, the gradient of the attention output, and
    # SDPA's gradients of q and of both windows.
    work = x * b.norm + 2 * x * b.act + 2 * windows - 2 * has_global * x * b.act
    part = "encoder layers"
    mask = blocks * block * keys * b.act if builds_mask else 0
    attention = _Stage(f"{name} attention", part, saved + (mask if fused else 0), work,
                       sum(math.prod(s) for s in shapes[:12]), name, inputs=x * b.norm + mask)
    # The output projection's input, then dropout + residual + LayerNorm; backward: the residual-stream
    # gradient and the two gradients of the global-row merge (torch.where), once LayerNorm's input is freed.
    output = _Stage(f"{name} attention output", part, x * b.act + _residual(b, config, tokens),
                    x * b.norm + x * b.act, sum(math.prod(s) for s in shapes[12:16]), name)
    ffn_params = sum(math.prod(s) for s in shapes[16:])
    return [attention, output, _feed_forward(b, config, name, tokens, config.encoder_ffn_dim, ffn_params)]


def _decoder_layer(b: _Bytes, config: LEDConfig, name: str, batch: int, target_length: int,
                   source_length: int) -> list[_Stage]:
    """Causal self-attention, cross-attention over the encoder output, feed-forward: one decoder layer.

    The cross-attention keys/values are computed inside the layer, so gradient checkpointing drops them (it keeps
    only the encoder output, once for all layers: see `_stages`). The gradient of the encoder output, which every layer's
    cross-attention adds to, stays allocated from the first decoder layer's backward to the encoder's."""
    d, heads = config.d_model, config.decoder_attention_heads
    tokens = batch * target_length
    t, s = tokens * d, batch * source_length * d
    shapes = parameter_shapes(config)["decoder_layer"]
    attention_params = sum(math.prod(p) for p in shapes[:10])  # four projections and a LayerNorm
    part = "decoder layers"
    self_attention = (
        (3 if b.autocast else 1) * t * b.act  # the projections' input (or one bf16 copy each)
        + 3 * t * b.act  # q, k, v
        + _attention(b, config, batch * heads, target_length, target_length, mask_rows=0)  # causal: no mask
        + t * b.act  # the output projection's input (SDPA's output, viewed)
        + _residual(b, config, tokens))
    # Cross k_proj/v_proj outputs over the source; under autocast each also keeps its own bf16 cast of
    # the encoder output.
    cross_kv = 2 * s * b.act * (2 if b.autocast else 1)
    cross_attention = (
        2 * t * b.act  # q_proj's input and q
        + _attention(b, config, batch * heads, target_length, source_length, mask_rows=batch)
        + t * b.act  # out_proj's input
        + _residual(b, config, tokens) + cross_kv)
    encoder_grad = s * b.norm
    stages = [
        _Stage(f"{name} self-attention", part, self_attention, 2 * t * b.norm + 3 * t * b.act + encoder_grad,
               attention_params, name, inputs=t * b.norm),
        # backward: grads of q and of the source keys and values, summed into the encoder output's
        _Stage(f"{name} cross-attention", part, cross_attention, 2 * t * b.norm + 2 * t * b.act + 2 * s * b.act
               + encoder_grad, attention_params, name),
        _feed_forward(b, config, name, tokens, config.decoder_ffn_dim, sum(math.prod(p) for p in shapes[20:])),
    ]
    stages[-1].work += encoder_grad
    return stages


def _embedding(b: _Bytes, config: LEDConfig, name: str, tokens: int, positions: int, extra_work: int) -> _Stage:
    """Token + position embeddings -> LayerNorm -> dropout. The backward builds a dense gradient of the
    whole shared table, and autograd adds it to the one accumulated so far out of place: two more tables."""
    x, d = tokens * config.d_model, config.d_model
    saved = x * b.norm + 8 * tokens + b.dropout(x, b.norm, config.dropout) + 2 * 8 * tokens  # + token ids
    work = 2 * config.vocab_size * d * b.norm + 2 * x * b.norm + extra_work
    return _Stage(name, name, saved, work, positions * d + 2 * d)


def _head(b: _Bytes, config: LEDConfig, batch: int, target_length: int) -> list[_Stage]:
    """lm_head (tied to the shared table) + final_logits_bias, then the fp32 cross-entropy.

    The loss keeps the fp32 log-probabilities (B*T, V); its backward holds two more such tensors (the grads
    of the log-probabilities and of the logits). lm_head's backward produces the shared table's gradient."""
    tokens = batch * target_length
    vocab, d = config.vocab_size, config.d_model
    logits = tokens * vocab
    weight_copy = vocab * d * b.weight_copy
    # incoming fp32 grad (+ its bf16 cast for the bf16 matmul output, and the weight copy's gradient)
    work = logits * 4 + (logits * b.act if b.autocast else 0) + weight_copy
    return [_Stage("lm_head", "head + loss", tokens * d * b.act + weight_copy, work, vocab * d),
            _Stage("loss", "head + loss", logits * 4 + 8 * tokens, 2 * logits * 4)]


def _stages(config: LEDConfig, b: _Bytes, batch: int, input_length: int, target_length: int,
            num_global: int) -> list[_Stage]:
    """The stages of one forward pass, in order."""
    # The encoder pads its input to a multiple of half the largest window (led/model.py).
    block = config.max_window // 2
    padded = -(-input_length // block) * block
    if padded > config.max_encoder_position_embeddings:
        padded = input_length
    encoder_grad = batch * input_length * config.d_model * b.norm
    stages = [_embedding(b, config, "encoder embeddings", batch * padded,
                         config.max_encoder_position_embeddings, 0)]
    for i, window in enumerate(config.attention_windows):
        builds_mask = window not in config.attention_windows[:i]  # the first layer with this window
        stages += _encoder_layer(b, config, f"encoder layer {i}", batch, padded, window, num_global, builds_mask)
    stages.append(_embedding(b, config, "decoder embeddings", batch * target_length,
                             config.max_decoder_position_embeddings, encoder_grad))
    decoder = []
    for i in range(config.decoder_layers):
        decoder += _decoder_layer(b, config, f"decoder layer {i}", batch, target_length, input_length)
    if not b.autocast:
        # The encoder output is kept by every decoder layer's k_proj/v_proj. Cut from a padded batch of several
        # rows it is not contiguous, and each projection keeps its own copy; otherwise they share the (padded)
        # storage. Checkpointed layers keep only the encoder output itself, once.
        decoder[1].inputs += batch * padded * config.d_model * b.act
        if batch > 1 and padded != input_length:
            for cross in decoder[1::3]:
                cross.saved += 2 * batch * input_length * config.d_model * b.act
        else:
            decoder[1].saved += batch * padded * config.d_model * b.act
    return stages + decoder + _head(b, config, batch, target_length)


def _optimizer_memory(config: LEDConfig, optimizer: str, b: _Bytes) -> tuple[int, int]:
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
    if optimizer == "adamw":
        states = 2 * sum(sizes)
    else:
        states = sum(sum(s) if len(s) == 2 else s[0] for s in matrices)
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
        raise ValueError(f"{name}={value!r} is invalid: valid values are {', '.join(map(str, valid))}")


def _check_positive(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} is invalid: it must be an integer >= {minimum}")


def _validate(config: LEDConfig, batch_size: int, input_length: int, target_length: int, precision: str,
              strategy: str, num_devices: int, optimizer: str, num_global: int, device: str) -> None:
    _check_choice("precision", precision, PRECISIONS)
    _check_choice("strategy", strategy, STRATEGIES)
    _check_choice("optimizer", optimizer, OPTIMIZERS)
    _check_choice("device", device, DEVICES)
    for name, value in (("batch_size", batch_size), ("input_length", input_length),
                        ("target_length", target_length), ("num_devices", num_devices)):
        _check_positive(name, value)
    _check_positive("num_global", num_global, minimum=0)
    if strategy == "single" and num_devices != 1:
        raise ValueError(f"num_devices={num_devices} needs strategy ddp or fsdp: strategy 'single' is one device")
    if input_length > config.max_encoder_position_embeddings:
        raise ValueError(f"input_length={input_length} is longer than the model's "
                         f"{config.max_encoder_position_embeddings} encoder positions")
    if target_length > config.max_decoder_position_embeddings:
        raise ValueError(f"target_length={target_length} is longer than the model's "
                         f"{config.max_decoder_position_embeddings} decoder positions")
    if num_global > input_length:
        raise ValueError(f"num_global={num_global} is more than input_length={input_length} tokens")


def estimate_peak_memory(config: LEDConfig, batch_size: int, input_length: int, target_length: int,
                         precision: str = "32", gradient_checkpointing: bool = False, strategy: str = "single",
                         num_devices: int = 1, optimizer: str = "adamw", num_global: int = 1,
                         device: str = "cuda") -> MemoryEstimate:
    """Peak memory per device of one training step (forward, loss, backward, optimizer step).

    batch_size is per device; input_length/target_length are encoder/decoder tokens per example;
    num_global is the number of global tokens per example (the DataModule makes the first token global).
    strategy: "single", "ddp" (full copies plus DDP's gradient buckets) or "fsdp" (parameters, gradients
    and optimizer states sharded over num_devices; every layer is its own unit, the embeddings and head
    the root unit, which stays gathered through forward and backward). device "cpu" models the CPU
    kernels (the measurements in bench/bench_memory.py); "cuda" the GPU ones.
    """
    _validate(config, batch_size, input_length, target_length, precision, strategy, num_devices, optimizer,
              num_global, device)
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
                   + f", {optimizer}, checkpointing {'on' if gradient_checkpointing else 'off'}, {device}")
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
         precision: str = "bf16-mixed", strategy: str = "single", num_devices: int = 1, optimizer: str = "adamw",
         num_global: int = 1) -> str:
    """Whether one training step fits on GPUs of `gpu_memory_gib`, without or with gradient checkpointing,
    and the largest batch size per device that fits either way. Returns a readable report."""
    if not gpu_memory_gib > CUDA_RESERVED_GIB:
        raise ValueError(f"gpu_memory_gib={gpu_memory_gib!r} is invalid: it must exceed the "
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


# --- command line -------------------------------------------------------------------------------------

_CLI_DEFAULTS = dict(model="led-base-16384", input_length="16384", target_length="512", batch_size="1",
                     precision="bf16-mixed", strategy="single", devices="1", gpu_memory_gib="80",
                     optimizer="adamw", num_global="1")
_CHOICES = dict(precision=PRECISIONS, strategy=STRATEGIES, optimizer=OPTIMIZERS)


def _load_model_config(value: str) -> LEDConfig:
    if value.endswith(".json") or os.path.isdir(value):
        path = os.path.join(value, "config.json") if os.path.isdir(value) else value
        if not os.path.isfile(path):
            raise ValueError(f"model={value!r} is invalid: {path} does not exist")
        return LEDConfig.from_json_file(path)
    try:
        return LEDConfig.from_name(value)
    except ValueError:
        from led.models.led.config import NAMED_SIZES

        raise ValueError(f"model={value!r} is invalid: valid values are {', '.join(NAMED_SIZES)} "
                         f"or a config.json (or a directory holding one)") from None


def _parse_args(argv: list[str]) -> dict[str, object]:
    raw = dict(_CLI_DEFAULTS)
    for arg in argv:
        key, sep, value = arg.removeprefix("--").partition("=")
        if not sep:
            raise ValueError(f"argument {arg!r} is not key=value: valid keys are {', '.join(_CLI_DEFAULTS)}")
        if key not in raw:
            raise ValueError(f"unknown key {key!r}: valid keys are {', '.join(_CLI_DEFAULTS)}")
        raw[key] = value
    args: dict[str, object] = {}
    for key, value in raw.items():
        if key in _CHOICES:
            _check_choice(key, value, _CHOICES[key])
            args[key] = value
        elif key == "gpu_memory_gib":
            try:
                args[key] = float(value)
            except ValueError:
                raise ValueError(f"gpu_memory_gib={value!r} is invalid: it must be a number of GiB") from None
        elif key != "model":
            minimum = 0 if key == "num_global" else 1
            if not value.isdigit() or int(value) < minimum:
                raise ValueError(f"{key}={value!r} is invalid: it must be an integer >= {minimum}")
            args[key] = int(value)
    args["model"] = _load_model_config(raw["model"])
    if args["strategy"] == "single" and args["devices"] != 1:
        raise ValueError(f"devices={args['devices']} needs strategy=ddp or strategy=fsdp "
                         f"(strategy=single is one device)")
    return args


def main(argv: list[str] | None = None) -> int:
    """`python -m led.memory key=value ...`: print the estimate and the verdict. Exit code 2 on bad input."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help", "help") for a in argv):
        print("\n\n".join(__doc__.split("\n\n")[:2]) + "\n\nkeys (defaults): "
              + " ".join(f"{k}={v}" for k, v in _CLI_DEFAULTS.items()))
        return 0
    try:
        args = _parse_args(argv)
        report = plan(args["model"], args["batch_size"], args["input_length"], args["target_length"],
                      args["gpu_memory_gib"], precision=args["precision"], strategy=args["strategy"],
                      num_devices=args["devices"], optimizer=args["optimizer"], num_global=args["num_global"])
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def autograd_saved_bytes(output: Tensor, exclude: Iterable[Tensor] = ()) -> dict[str, int]:
    """What autograd keeps for the backward of `output`, by backward-node type: the bytes of every distinct
    storage saved in its graph, each counted once (at the first node found to hold it), leaving out the
    storages of `exclude` (pass the model's parameters). Sums to the activations of a real forward pass,
    to check `estimate_peak_memory` against (tests/test_memory.py, bench/bench_memory.py)."""
    import torch

    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: set[int] = set()
    by_node: dict[str, int] = {}
    stack, visited = [output.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in visited:
            continue
        visited.add(node)
        for name in dir(node):
            if not name.startswith("_saved_"):
                continue
            value = getattr(node, name)
            for tensor in value if isinstance(value, (tuple, list)) else (value,):
                if not isinstance(tensor, torch.Tensor):
                    continue
                storage = tensor.untyped_storage()
                if storage.data_ptr() in skip or storage.data_ptr() in seen:
                    continue
                seen.add(storage.data_ptr())
                by_node[node.name()] = by_node.get(node.name(), 0) + storage.nbytes()
        stack.extend(next_node for next_node, _ in node.next_functions)
    return by_node
