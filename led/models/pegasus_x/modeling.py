"""PEGASUS-X in plain PyTorch, numerically equal to `transformers`' PegasusXForConditionalGeneration.

Encoder: token embeddings x sqrt(d_model) + sinusoidal positions, then pre-LN layers in which the tokens and
`num_global_tokens` learned global tokens attend block-locally / globally (led.models.pegasus_x.attention); a
final LayerNorm on the tokens. Decoder: the Pegasus pre-LN decoder (attention without biases) with sinusoidal
positions. Head: a bias-free `lm_head` tied to the shared embedding. Parameter names are the Hugging Face
state-dict names; generation and checkpoint I/O come from `EncoderDecoderModel` (led.models.base), and the
decoder attention, its cache and the beam grouping of cross-attention are LED's (led.models.led.modeling).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from led.models.base import Seq2SeqOutput
from led.models.led.modeling import (
    DecoderAttention,
    DecoderCache,
    SharedEmbeddingEncoderDecoder,
    _feed_forward,
    _run_layer,
    _skip_layer,
    run_decoder_layers,
)
from led.models.pegasus_x.attention import PegasusXGlobalLocalAttention
from led.models.pegasus_x.config import PegasusXConfig

GLOBAL_ATTENTION_MASK_ERROR = (
    "PEGASUS-X takes no global_attention_mask: its global tokens are learned (num_global_tokens of them, "
    "attending to every input token), not chosen among the inputs. Drop global_attention_mask from the inputs "
    "(it is an LED input)")


PegasusXOutput = Seq2SeqOutput


def sinusoidal_positions(start: int, length: int, d_model: int, like: Tensor) -> Tensor:
    """(length, d_model) position embeddings of positions start..start+length-1, in `like`'s dtype and device:
    sines in the first half, cosines in the second (as `transformers` computes them, in that dtype)."""
    half = d_model // 2
    positions = torch.arange(start, start + length, device=like.device)[:, None]  # (T, 1) long
    frequencies = torch.exp(torch.arange(half, device=like.device).to(like.dtype)
                            * -(math.log(10000.0) / (half - 1)))  # (half,)
    angles = positions * frequencies  # (T, half), in like.dtype
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class PegasusXEncoderLayer(nn.Module):
    def __init__(self, config: PegasusXConfig, staggered: bool):
        super().__init__()
        d = config.d_model
        self.self_attn = PegasusXGlobalLocalAttention(d, config.encoder_attention_heads, config.block_size,
                                                      config.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.global_self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, config.encoder_ffn_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.activation, self.activation_dropout = config.activation_function, config.activation_dropout
        self.dropout = config.dropout
        # Blocks shifted by half a block in this layer (odd layers, with stagger_local_blocks).
        self.staggered = staggered

    def forward(self, tokens: Tensor, globals_: Tensor, key_ok: Tensor) -> tuple[Tensor, Tensor]:
        """tokens: (B, L, d_model), L a multiple of block_size; globals_: (B, G, d_model); key_ok: (B, L) bool
        (False: pad). Returns both streams, updated."""
        h = self.self_attn_layer_norm(tokens)
        g = self.global_self_attn_layer_norm(globals_)
        # Staggered layers: half a block of pad on both sides shifts every block border by half a block.
        h, g = self.self_attn(h, g, key_ok, shift=self.self_attn.block_size // 2 if self.staggered else 0)
        tokens = tokens + F.dropout(h, self.dropout, self.training)
        globals_ = globals_ + F.dropout(g, self.dropout, self.training)
        # The feed-forward is per row and shared by both streams: one call over [globals; tokens].
        x = torch.cat([globals_, tokens], dim=1)
        x = x + F.dropout(_feed_forward(self, self.final_layer_norm(x)), self.dropout, self.training)
        # split, not two slices: in backward one concatenation instead of two zero-filled (G + L) gradients.
        globals_, tokens = x.split([globals_.shape[1], tokens.shape[1]], dim=1)
        return tokens, globals_


class PegasusXEncoder(nn.Module):
    def __init__(self, config: PegasusXConfig, embed_tokens: nn.Embedding):
        super().__init__()
        self.config = config
        self.embed_tokens = embed_tokens
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.embed_global = nn.Embedding(config.num_global_tokens, config.d_model)
        self.layers = nn.ModuleList(PegasusXEncoderLayer(config, staggered=i % 2 == 1 and config.stagger_local_blocks)
                                    for i in range(config.encoder_layers))
        self.layer_norm = nn.LayerNorm(config.d_model)
        self.gradient_checkpointing = False

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """input_ids: (B, S), attention_mask: (B, S) 1 token / 0 pad -> hidden states (B, S, d_model)."""
        batch, length = input_ids.shape
        x = self.embed_tokens(input_ids) * self.embed_scale
        x = x + sinusoidal_positions(0, length, self.config.d_model, x)
        x = F.dropout(x, self.config.dropout, self.training)
        key_ok = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask != 0
        # Pad to whole blocks with zero states (as transformers does); pad keys are masked everywhere, so this
        # cannot change a real token's output, and the padded rows are cut off at the end.
        pad = (-length) % self.config.block_size
        if pad:
            x, key_ok = F.pad(x, (0, 0, 0, pad)), F.pad(key_ok, (0, pad), value=False)
        # The global tokens: no scaling, positions or dropout.
        slots = torch.arange(self.config.num_global_tokens, device=input_ids.device)
        globals_ = self.embed_global(slots)[None].expand(batch, -1, -1)  # (B, G, d_model)
        for layer in self.layers:
            if not _skip_layer(self, self.config.encoder_layerdrop):
                x, globals_ = _run_layer(layer, self.gradient_checkpointing, x, globals_, key_ok)
        return self.layer_norm(x[:, :length])


class PegasusXDecoderLayer(nn.Module):
    def __init__(self, config: PegasusXConfig):
        super().__init__()
        d, heads = config.d_model, config.decoder_attention_heads
        self.self_attn = DecoderAttention(d, heads, config.attention_dropout, bias=False)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.encoder_attn = DecoderAttention(d, heads, config.attention_dropout, bias=False)
        self.encoder_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, config.decoder_ffn_dim)
        self.fc2 = nn.Linear(config.decoder_ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.activation, self.activation_dropout = config.activation_function, config.activation_dropout
        self.dropout = config.dropout

    def cross_attention_kv(self, encoder_hidden_states: Tensor) -> tuple[Tensor, Tensor]:
        """(B, S, d_model) encoder output -> this layer's cross-attention keys and values (B, H, S, D)."""
        return self.encoder_attn.project_kv(encoder_hidden_states)

    def forward(self, x: Tensor, self_mask: Tensor | None, cross: Tensor | tuple[Tensor, Tensor],
                cross_mask: Tensor | None, past_kv: tuple[Tensor, Tensor] | None = None,
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x: (B, T, d_model); cross: the encoder output (B, S, d_model), or its cross-attention keys/values
        from a decoding cache. Returns the new hidden states and this layer's self-attention keys/values
        (past ones included), for the cache. Pre-LN: each block normalises its input, the residual does not."""
        cross_kv = self.encoder_attn.project_kv(cross) if isinstance(cross, Tensor) else cross
        h = self.self_attn_layer_norm(x)
        k, v = self.self_attn.project_kv(h)
        if past_kv is not None:
            k, v = torch.cat([past_kv[0], k], dim=2), torch.cat([past_kv[1], v], dim=2)
        causal = self_mask is None and past_kv is None and x.shape[1] > 1
        x = x + F.dropout(self.self_attn(h, k, v, self_mask, is_causal=causal), self.dropout, self.training)
        h = self.encoder_attn.grouped(self.encoder_attn_layer_norm(x), cross_kv, cross_mask)
        x = x + F.dropout(h, self.dropout, self.training)
        h = _feed_forward(self, self.final_layer_norm(x))
        return x + F.dropout(h, self.dropout, self.training), (k, v)


class PegasusXDecoder(nn.Module):
    def __init__(self, config: PegasusXConfig, embed_tokens: nn.Embedding):
        super().__init__()
        self.config = config
        self.embed_tokens = embed_tokens
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.layers = nn.ModuleList(PegasusXDecoderLayer(config) for _ in range(config.decoder_layers))
        self.layer_norm = nn.LayerNorm(config.d_model)
        self.gradient_checkpointing = False

    def forward(self, input_ids: Tensor, encoder_hidden_states: Tensor | None,
                encoder_attention_mask: Tensor | None = None, decoder_attention_mask: Tensor | None = None,
                cache: DecoderCache | None = None) -> Tensor:
        """input_ids: (B, T) -> hidden states (B, T, d_model). With a cache, positions continue after it
        and it is extended in place."""
        length = input_ids.shape[1]
        past = cache.length if cache is not None else 0
        x = self.embed_tokens(input_ids) * self.embed_scale
        x = F.dropout(x + sinusoidal_positions(past, length, self.config.d_model, x), self.config.dropout,
                      self.training)
        x = run_decoder_layers(self, x, encoder_hidden_states, encoder_attention_mask, decoder_attention_mask, cache)
        return self.layer_norm(x)


class PegasusXModel(nn.Module):
    def __init__(self, config: PegasusXConfig):
        super().__init__()
        self.shared = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_token_id)
        self.encoder = PegasusXEncoder(config, self.shared)
        self.decoder = PegasusXDecoder(config, self.shared)


class PegasusXForConditionalGeneration(SharedEmbeddingEncoderDecoder):
    """PEGASUS-X with its language-modelling head; `from_pretrained` loads Hugging Face checkpoints."""

    config_class = PegasusXConfig
    # The one embedding matrix under its four names; files saved by `transformers` keep only some of them.
    tied_keys = ("model.shared.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight",
                 "lm_head.weight")

    config: PegasusXConfig

    def __init__(self, config: PegasusXConfig):
        super().__init__(config)
        self.model = PegasusXModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.reset_parameters()
        self.tie_weights()

    @property
    def backbone(self) -> PegasusXModel:
        return self.model

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None,
               global_attention_mask: Tensor | None = None) -> Tensor:
        """(B, S) token ids -> encoder hidden states (B, S, d_model). `global_attention_mask` must be None."""
        if global_attention_mask is not None:
            raise ValueError(GLOBAL_ATTENTION_MASK_ERROR)
        return self.model.encoder(input_ids, attention_mask)

    def decode(self, decoder_input_ids: Tensor, encoder_hidden_states: Tensor | None,
               encoder_attention_mask: Tensor | None = None, cache: DecoderCache | None = None,
               decoder_attention_mask: Tensor | None = None) -> Tensor:
        """(B, T) decoder ids -> logits (B, T, V). With a cache, only the new tokens are given."""
        hidden = self.model.decoder(decoder_input_ids, encoder_hidden_states, encoder_attention_mask,
                                    decoder_attention_mask, cache)
        return self.lm_head(hidden)

    # --- what generation and checkpoint I/O use (led.models.base) -----------------------------------

    def output_layer(self) -> tuple[Tensor, None]:
        """lm_head's weight (V, d_model); PEGASUS-X has no logits bias."""
        return self.lm_head.weight, None

    @property
    def max_target_positions(self) -> None:
        # Sinusoidal positions: the decoder takes any length (transformers checks none either).
        return None

    @property
    def max_source_positions(self) -> None:
        return None  # sinusoidal positions, as the decoder's

    @property
    def input_multiple(self) -> int:
        return self.config.block_size

    def adapt_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Names of a `PegasusXModel` file (no head) get the `model.` prefix."""
        if not any(k.startswith("model.") for k in state):
            state = {(k if k == "lm_head.weight" else f"model.{k}"): v for k, v in state.items()}
        return state


__all__ = ["PegasusXForConditionalGeneration", "PegasusXModel", "PegasusXOutput", "sinusoidal_positions"]
