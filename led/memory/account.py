"""The per-stage account of one training step: what each part of the model keeps for its backward pass and
allocates while that runs, tensor by tensor (see led.memory for the method and what it was checked against)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from led.models.led.config import LEDConfig

if TYPE_CHECKING:
    pass

GIB = 2**30


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
