"""LED (Longformer-Encoder-Decoder) in plain PyTorch, numerically equal to `transformers`' LED.

Encoder: token + learned position embeddings -> LayerNorm -> post-LN layers with windowed+global
self-attention (led.models.led.attention). Decoder: the BART decoder (causal self-attention, cross-attention).
Head: `lm_head` tied to the shared embedding, plus `final_logits_bias`. Parameter names are the
Hugging Face state-dict names, so checkpoints load as they are (led.models.checkpoint); generation and
checkpoint I/O come from `EncoderDecoderModel` (led.models.base).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from led.models.base import EncoderDecoderModel, Seq2SeqOutput, shift_tokens_right
from led.models.led.attention import EncoderMasks, LEDEncoderAttention
from led.models.led.config import LEDConfig

LEDOutput = Seq2SeqOutput  # LED's name for the shared output type (`from led import LEDOutput`)

_ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


def _feed_forward(layer: nn.Module, x: Tensor) -> Tensor:
    """fc1 -> activation -> dropout -> fc2 of an encoder or decoder layer."""
    x = F.dropout(_ACTIVATIONS[layer.activation](layer.fc1(x)), layer.activation_dropout, layer.training)
    return layer.fc2(x)


class LEDEncoderLayer(nn.Module):
    def __init__(self, config: LEDConfig, window: int):
        super().__init__()
        d = config.d_model
        self.self_attn = LEDEncoderAttention(d, config.encoder_attention_heads, window, config.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, config.encoder_ffn_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.activation, self.activation_dropout = config.activation_function, config.activation_dropout
        self.dropout = config.dropout

    def forward(self, x: Tensor, masks: EncoderMasks) -> Tensor:
        x = self.self_attn_layer_norm(x + F.dropout(self.self_attn(x, masks), self.dropout, self.training))
        return self.final_layer_norm(x + F.dropout(_feed_forward(self, x), self.dropout, self.training))


class DecoderAttention(nn.Module):
    """BART multi-head attention, used for decoder self-attention and cross-attention (PEGASUS-X's without
    biases)."""

    def __init__(self, d_model: int, heads: int, dropout: float, bias: bool = True):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, S, d_model) -> keys and values (B, H, S, D)."""
        batch, length, d_model = x.shape
        shape = (batch, length, self.heads, d_model // self.heads)
        return (self.k_proj(x).view(shape).transpose(1, 2), self.v_proj(x).view(shape).transpose(1, 2))

    def forward(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool = False) -> Tensor:
        """x: (B, T, d_model) queries; k, v: (B, H, S, D); mask: bool (B, 1, T|1, S), True = attend."""
        batch, length, d_model = x.shape
        q = self.q_proj(x).view(batch, length, self.heads, d_model // self.heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, d_model))

    def grouped(self, x: Tensor, kv: tuple[Tensor, Tensor], mask: Tensor | None) -> Tensor:
        """Cross-attention. x: (B * n, T, d_model); kv: (B, H, S, D), one row per group of n consecutive rows of x.

        Beam search keeps one cross-attention row for the n beams of an input: its beams become extra
        queries of that row, so each step reads the encoder keys/values once instead of n times."""
        rows = kv[0].shape[0]
        if rows == x.shape[0]:
            return self(x, kv[0], kv[1], mask)
        batch, length, d_model = x.shape
        grouped = x.reshape(rows, (batch // rows) * length, d_model)
        return self(grouped, kv[0], kv[1], mask).reshape(batch, length, d_model)


class DecoderCache:
    """Key/value cache of incremental decoding.

    Self-attention keys/values grow by the new tokens of each step; cross-attention keys/values are
    computed once from the encoder output. Tensors are (B, H, T, D).
    """

    def __init__(self, cross: list[tuple[Tensor, Tensor]]):
        self.cross = cross
        self.self_kv: list[tuple[Tensor, Tensor] | None] = [None] * len(cross)
        self.length = 0

    def reorder(self, index: Tensor, cross: bool = False) -> None:
        """Keep rows `index` (e.g. the parent beam of every new beam). Cross rows only if `cross`:
        beams of one example share the encoder output, so reordering among them leaves it unchanged."""
        self.self_kv = [None if kv is None else (kv[0].index_select(0, index), kv[1].index_select(0, index))
                        for kv in self.self_kv]
        if cross:
            self.cross = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.cross]

    def repeat_interleave(self, n: int) -> None:
        """Every row n times (B -> B * n), e.g. once to start n beams per example."""
        rep = lambda kv: (kv[0].repeat_interleave(n, 0), kv[1].repeat_interleave(n, 0))  # noqa: E731
        self.cross = [rep(kv) for kv in self.cross]
        self.self_kv = [None if kv is None else rep(kv) for kv in self.self_kv]


class LEDDecoderLayer(nn.Module):
    def __init__(self, config: LEDConfig):
        super().__init__()
        d, heads = config.d_model, config.decoder_attention_heads
        self.self_attn = DecoderAttention(d, heads, config.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.encoder_attn = DecoderAttention(d, heads, config.attention_dropout)
        self.encoder_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, config.decoder_ffn_dim)
        self.fc2 = nn.Linear(config.decoder_ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.activation, self.activation_dropout = config.activation_function, config.activation_dropout
        self.dropout = config.dropout

    def forward(self, x: Tensor, self_mask: Tensor | None, cross: Tensor | tuple[Tensor, Tensor],
                cross_mask: Tensor | None, past_kv: tuple[Tensor, Tensor] | None = None,
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x: (B, T, d_model); cross: the encoder output (B, S, d_model), or its cross-attention keys/values
        from a decoding cache. Returns the new hidden states and this layer's self-attention keys/values
        (past ones included), for the cache."""
        # Projected here, inside the layer: FSDP has gathered this layer's weights only while it runs, and
        # gradient checkpointing recomputes the keys/values instead of keeping them.
        cross_kv = self.encoder_attn.project_kv(cross) if isinstance(cross, Tensor) else cross
        k, v = self.self_attn.project_kv(x)
        if past_kv is not None:
            k, v = torch.cat([past_kv[0], k], dim=2), torch.cat([past_kv[1], v], dim=2)
        # Without a padding mask and without a past, the causal fast path of SDPA applies.
        causal = self_mask is None and past_kv is None and x.shape[1] > 1
        h = self.self_attn(x, k, v, self_mask, is_causal=causal)
        x = self.self_attn_layer_norm(x + F.dropout(h, self.dropout, self.training))
        h = self.encoder_attn.grouped(x, cross_kv, cross_mask)
        x = self.encoder_attn_layer_norm(x + F.dropout(h, self.dropout, self.training))
        x = self.final_layer_norm(x + F.dropout(_feed_forward(self, x), self.dropout, self.training))
        return x, (k, v)

    def cross_attention_kv(self, encoder_hidden_states: Tensor) -> tuple[Tensor, Tensor]:
        """(B, S, d_model) encoder output -> this layer's cross-attention keys and values (B, H, S, D), for a
        decoding cache (under FSDP, generation runs with the weights gathered: led.training.distributed)."""
        return self.encoder_attn.project_kv(encoder_hidden_states)


def _run_layer(layer: nn.Module, checkpointed: bool, *args: Any) -> Any:
    """Call a layer, recomputing it in the backward pass when gradient checkpointing is on."""
    if checkpointed and torch.is_grad_enabled():
        return checkpoint(layer, *args, use_reentrant=False)
    return layer(*args)


def _skip_layer(module: nn.Module, layerdrop: float) -> bool:
    return module.training and layerdrop > 0 and bool(torch.rand([]) < layerdrop)


class LEDEncoder(nn.Module):
    def __init__(self, config: LEDConfig, embed_tokens: nn.Embedding):
        super().__init__()
        self.config = config
        self.embed_tokens = embed_tokens
        self.embed_positions = nn.Embedding(config.max_encoder_position_embeddings, config.d_model)
        self.layers = nn.ModuleList(LEDEncoderLayer(config, w) for w in config.attention_windows)
        self.layernorm_embedding = nn.LayerNorm(config.d_model)
        self.gradient_checkpointing = False

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                global_attention_mask: Tensor | None = None) -> Tensor:
        """input_ids: (B, S) -> hidden states (B, S, d_model)."""
        batch, length = input_ids.shape
        limit = self.config.max_encoder_position_embeddings
        if length > limit:
            raise ValueError(f"Input of {length} tokens is longer than the encoder's {limit} positions "
                             f"(max_encoder_position_embeddings): truncate it to at most {limit} tokens")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # Pad to a multiple of the attention blocks (half the largest window) so that no layer pads again;
        # pad tokens are masked everywhere, so this padding cannot change any real token's output.
        pad = (-length) % (self.config.max_window // 2)
        if length + pad > limit:
            pad = 0  # the layers pad their own blocks; positions must stay inside the table
        if pad:
            input_ids = F.pad(input_ids, (0, pad), value=self.config.pad_token_id)
            attention_mask = F.pad(attention_mask, (0, pad), value=0)
            if global_attention_mask is not None:
                global_attention_mask = F.pad(global_attention_mask, (0, pad), value=0)
        masks = EncoderMasks.build(attention_mask, global_attention_mask)
        positions = torch.arange(length + pad, device=input_ids.device)
        x = self.layernorm_embedding(self.embed_tokens(input_ids) + self.embed_positions(positions))
        x = F.dropout(x, self.config.dropout, self.training)
        for layer in self.layers:
            if not _skip_layer(self, self.config.encoder_layerdrop):
                x = _run_layer(layer, self.gradient_checkpointing, x, masks)
        return x[:, :length]


class LEDDecoder(nn.Module):
    def __init__(self, config: LEDConfig, embed_tokens: nn.Embedding):
        super().__init__()
        self.config = config
        self.embed_tokens = embed_tokens
        self.embed_positions = nn.Embedding(config.max_decoder_position_embeddings, config.d_model)
        self.layers = nn.ModuleList(LEDDecoderLayer(config) for _ in range(config.decoder_layers))
        self.layernorm_embedding = nn.LayerNorm(config.d_model)
        self.gradient_checkpointing = False

    def forward(self, input_ids: Tensor, encoder_hidden_states: Tensor | None,
                encoder_attention_mask: Tensor | None = None, decoder_attention_mask: Tensor | None = None,
                cache: DecoderCache | None = None) -> Tensor:
        """input_ids: (B, T) -> hidden states (B, T, d_model). With a cache, positions continue after it
        and it is extended in place."""
        length = input_ids.shape[1]
        past = cache.length if cache is not None else 0
        limit = self.config.max_decoder_position_embeddings
        if past + length > limit:
            raise ValueError(f"Decoder input of {past + length} tokens is longer than the decoder's {limit} "
                             f"positions (max_decoder_position_embeddings): use at most {limit} target tokens")
        positions = torch.arange(past, past + length, device=input_ids.device)
        x = self.layernorm_embedding(self.embed_tokens(input_ids) + self.embed_positions(positions))
        x = F.dropout(x, self.config.dropout, self.training)

        return run_decoder_layers(self, x, encoder_hidden_states, encoder_attention_mask, decoder_attention_mask, cache)


def run_decoder_layers(decoder: nn.Module, x: Tensor, encoder_hidden_states: Tensor | None,
                       encoder_attention_mask: Tensor | None, decoder_attention_mask: Tensor | None,
                       cache: DecoderCache | None) -> Tensor:
    """The decoder layers of every family (LED's and PEGASUS-X's take the same arguments) over the embedded inputs
    x (B, T, d_model): causal and padding masks, cross-attention to the encoder (its keys/values from the cache
    when decoding step by step), LayerDrop and gradient checkpointing in training; a cache is extended in place.
    `decoder` has `layers`, `config.decoder_layerdrop` and `gradient_checkpointing`."""
    batch, length = x.shape[:2]
    past = cache.length if cache is not None else 0
    self_mask = _self_attention_mask(decoder_attention_mask, batch, length, past, x.device)
    cross_mask = None if encoder_attention_mask is None else (encoder_attention_mask != 0)[:, None, None, :]
    cross = cache.cross if cache is not None else [encoder_hidden_states] * len(decoder.layers)
    for i, layer in enumerate(decoder.layers):
        past_kv = cache.self_kv[i] if cache is not None else None
        if cache is None and _skip_layer(decoder, decoder.config.decoder_layerdrop):
            continue
        x, kv = _run_layer(layer, decoder.gradient_checkpointing and cache is None,
                           x, self_mask, cross[i], cross_mask, past_kv)
        if cache is not None:
            cache.self_kv[i] = kv
    if cache is not None:
        cache.length += length
    return x


def _self_attention_mask(padding: Tensor | None, batch: int, length: int, past: int,
                         device: torch.device) -> Tensor | None:
    """Bool (B, 1, T, past + T) causal mask, or None where SDPA's own causal path (or no mask) suffices."""
    if padding is None and (past == 0 or length == 1):
        return None
    query_pos = torch.arange(past, past + length, device=device)[:, None]
    key_pos = torch.arange(past + length, device=device)[None, :]
    mask = (key_pos <= query_pos)[None, None].expand(batch, 1, length, past + length)
    if padding is not None:
        # A query never loses itself, so a fully padded row cannot turn into NaN.
        mask = (mask & (padding[:, None, None, :] != 0)) | (key_pos == query_pos)
    return mask


class LEDModel(nn.Module):
    def __init__(self, config: LEDConfig):
        super().__init__()
        self.shared = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_token_id)
        self.encoder = LEDEncoder(config, self.shared)
        self.decoder = LEDDecoder(config, self.shared)


class SharedEmbeddingEncoderDecoder(EncoderDecoderModel):
    """What LED and PEGASUS-X share around their own encoders: a `backbone` (`.led`, `.model`: the state-dict prefix
    of their checkpoints) with one `shared` embedding serving the encoder, the decoder and `lm_head`, and a decoder
    run by `run_decoder_layers`, whose layers give their cross-attention keys/values once for a `DecoderCache`."""

    lm_head: nn.Linear

    @property
    @abstractmethod
    def backbone(self) -> nn.Module:
        """The module holding `shared`, `encoder` and `decoder`."""

    def tie_weights(self) -> None:
        """One embedding matrix serves the encoder, the decoder and the output projection."""
        self.backbone.encoder.embed_tokens = self.backbone.shared
        self.backbone.decoder.embed_tokens = self.backbone.shared
        self.lm_head.weight = self.backbone.shared.weight

    def new_cache(self, encoder_hidden_states: Tensor) -> DecoderCache:
        """A decoding cache with every layer's cross-attention keys/values computed once."""
        # Contiguous (B, H, S, D) copies: every step reads them whole, and strided ones read ~1.5x slower.
        kv = [layer.cross_attention_kv(encoder_hidden_states) for layer in self.backbone.decoder.layers]
        return DecoderCache([(k.contiguous(), v.contiguous()) for k, v in kv])

    def decode_step(self, tokens: Tensor, cache: DecoderCache, encoder_attention_mask: Tensor | None) -> Tensor:
        """(N,) newest tokens -> the decoder's last hidden state (N, d_model); the cache grows by one."""
        return self.backbone.decoder(tokens[:, None], None, encoder_attention_mask, cache=cache)[:, -1]

    def layers(self) -> list[nn.Module]:
        return [*self.backbone.encoder.layers, *self.backbone.decoder.layers]


class LEDForConditionalGeneration(SharedEmbeddingEncoderDecoder):
    """LED with its language-modelling head; `from_pretrained` loads Hugging Face checkpoints."""

    config_class = LEDConfig
    # The one embedding matrix under its four names; files saved by `transformers` keep only some of them.
    tied_keys = ("led.shared.weight", "led.encoder.embed_tokens.weight", "led.decoder.embed_tokens.weight",
                 "lm_head.weight")

    takes_global_attention_mask = True

    config: LEDConfig

    def __init__(self, config: LEDConfig):
        super().__init__(config)
        self.led = LEDModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.register_buffer("final_logits_bias", torch.zeros(1, config.vocab_size))
        self.reset_parameters()
        self.tie_weights()

    @property
    def backbone(self) -> LEDModel:
        return self.led

    def reset_parameters(self) -> None:
        """`transformers`' LED initialisation (EncoderDecoderModel's), and a zero final_logits_bias."""
        super().reset_parameters()
        self.final_logits_bias.zero_()

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None,
               global_attention_mask: Tensor | None = None) -> Tensor:
        """(B, S) token ids -> encoder hidden states (B, S, d_model)."""
        return self.led.encoder(input_ids, attention_mask, global_attention_mask)

    def decode(self, decoder_input_ids: Tensor, encoder_hidden_states: Tensor | None,
               encoder_attention_mask: Tensor | None = None, cache: DecoderCache | None = None,
               decoder_attention_mask: Tensor | None = None) -> Tensor:
        """(B, T) decoder ids -> logits (B, T, V). With a cache, only the new tokens are given."""
        hidden = self.led.decoder(decoder_input_ids, encoder_hidden_states, encoder_attention_mask,
                                  decoder_attention_mask, cache)
        return self.lm_head(hidden) + self.final_logits_bias.to(hidden.dtype)

    # --- what generation and checkpoint I/O use (led.models.base) -----------------------------------

    def output_layer(self) -> tuple[Tensor, Tensor]:
        """lm_head's weight (V, d_model) and final_logits_bias (1, V)."""
        return self.lm_head.weight, self.final_logits_bias

    @property
    def max_target_positions(self) -> int:
        return self.config.max_decoder_position_embeddings

    @property
    def max_source_positions(self) -> int:
        return self.config.max_encoder_position_embeddings

    @property
    def input_multiple(self) -> int:
        return self.config.max_window

    def adapt_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Names of an `LEDModel` file (no head) get the `led.` prefix; a missing `final_logits_bias` (optional in
        `transformers` files) is zeros."""
        if not any(k.startswith("led.") for k in state):
            state = {(k if k in ("lm_head.weight", "final_logits_bias") else f"led.{k}"): v for k, v in state.items()}
        if "final_logits_bias" not in state:
            state = {**state, "final_logits_bias": torch.zeros(1, self.config.vocab_size)}
        return state


__all__ = ["LEDForConditionalGeneration", "LEDModel", "LEDOutput", "DecoderCache", "shift_tokens_right"]
