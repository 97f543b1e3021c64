"""PEGASUS-X model configuration: the fields of `transformers`' `PegasusXConfig`, validated on creation.

Reads and writes Hugging Face `config.json` files (`model_type: "pegasus_x"`); keys this class does not model
(`architectures`, generation settings such as `forced_eos_token_id`, ...) are kept in `extra` and written back.

The class defaults are `transformers.PegasusXConfig`'s (so that a config.json lacking a key means what it means
there), and those are *not* the released checkpoints' values (32 global tokens and gelu, where google/pegasus-x-*
use 128 and relu): build from a checkpoint's config.json, or from `from_name`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from led.models.config_file import ConfigFile
from led.models.led.config import ACTIVATIONS

# Keys of `transformers`' config.json that are aliases of ours (the attribute_map of PegasusXConfig).
_ALIASES = {"hidden_size": "d_model", "num_attention_heads": "encoder_attention_heads",
            "num_hidden_layers": "encoder_layers", "initializer_range": "init_std"}

# The released google/pegasus-x-* checkpoints share everything but the size.
_RELEASED = dict(vocab_size=96103, activation_function="relu", scale_embedding=True, num_global_tokens=128,
                 block_size=512, stagger_local_blocks=True, max_position_embeddings=16384)

NAMED_SIZES: dict[str, dict[str, Any]] = {
    # For tests and CPU runs: a few seconds per step at a few thousand tokens.
    "pegasus-x-tiny": dict(_RELEASED, d_model=128, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                 decoder_attention_heads=4, encoder_ffn_dim=256, decoder_ffn_dim=256, num_global_tokens=16,
                 block_size=64),
    "pegasus-x-base": dict(_RELEASED, d_model=768, encoder_layers=12, decoder_layers=12, encoder_attention_heads=12,
                           decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072),
    "pegasus-x-large": dict(_RELEASED, d_model=1024, encoder_layers=16, decoder_layers=16,
                            encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096,
                            decoder_ffn_dim=4096),
}


@dataclass
class PegasusXConfig(ConfigFile):
    """Hyper-parameters of a PEGASUS-X model. Defaults are those of `transformers.PegasusXConfig`."""

    model_type: ClassVar[str] = "pegasus_x"
    family_name: ClassVar[str] = "PEGASUS-X"
    architecture: ClassVar[str] = "PegasusXForConditionalGeneration"
    hub_owner: ClassVar[str] = "google"
    aliases: ClassVar[dict[str, str]] = _ALIASES
    named_sizes: ClassVar[dict[str, dict[str, Any]]] = NAMED_SIZES
    # The named sizes of every family are distinct (led.models.families): `tiny` here is `pegasus-x-tiny`.
    size_aliases: ClassVar[dict[str, str]] = {"tiny": "pegasus-x-tiny"}

    vocab_size: int = 96103
    d_model: int = 1024  # even: the sinusoidal positions are half sines, half cosines
    encoder_layers: int = 16
    decoder_layers: int = 16
    encoder_attention_heads: int = 16
    decoder_attention_heads: int = 16
    encoder_ffn_dim: int = 4096
    decoder_ffn_dim: int = 4096
    activation_function: str = "gelu"
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    # Probability of skipping a whole layer per training step (LayerDrop); 0 in every released PEGASUS-X.
    encoder_layerdrop: float = 0.0
    decoder_layerdrop: float = 0.0
    # Informative only: positions are sinusoidal, computed for any length (transformers enforces no limit).
    max_position_embeddings: int = 16384
    scale_embedding: bool = True  # token embeddings x sqrt(d_model)
    # Learned encoder tokens that every token attends to and that attend to every token (>= 1).
    num_global_tokens: int = 32
    # Tokens attend within their block of block_size tokens (plus the global tokens); inputs are padded to a
    # multiple of it inside the encoder.
    block_size: int = 512
    # Odd layers shift their blocks by block_size // 2, so information crosses block borders.
    stagger_local_blocks: bool = True
    pad_token_id: int = 0
    bos_token_id: int | None = None  # PEGASUS has none: decoding starts with decoder_start_token_id
    eos_token_id: int = 1
    decoder_start_token_id: int = 0
    init_std: float = 0.02
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                     "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "max_position_embeddings",
                     "num_global_tokens", "block_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"PegasusXConfig.{name}={value!r} is invalid: it must be a positive integer")
        for name in ("dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop", "decoder_layerdrop"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"PegasusXConfig.{name}={value!r} is invalid: it must be a probability in [0, 1)")
        for name in ("scale_embedding", "stagger_local_blocks"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"PegasusXConfig.{name}={getattr(self, name)!r} is invalid: use true or false")
        if self.d_model % 2:
            raise ValueError(f"PegasusXConfig.d_model={self.d_model} is invalid: it must be even (the sinusoidal "
                             f"positions are half sines, half cosines)")
        for name in ("encoder_attention_heads", "decoder_attention_heads"):
            if self.d_model % getattr(self, name):
                raise ValueError(f"PegasusXConfig.{name}={getattr(self, name)} does not divide "
                                 f"d_model={self.d_model}: choose a head count that divides it")
        if self.stagger_local_blocks and self.block_size % 2:
            raise ValueError(f"PegasusXConfig.block_size={self.block_size} is invalid with stagger_local_blocks="
                             f"true: staggering shifts blocks by half a block, so block_size must be even")
        if self.activation_function not in ACTIVATIONS:
            raise ValueError(f"PegasusXConfig.activation_function={self.activation_function!r} is not supported: "
                             f"valid values are {', '.join(ACTIVATIONS)}")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if name == "bos_token_id" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self.vocab_size:
                raise ValueError(f"PegasusXConfig.{name}={value!r} is invalid: it must be a token id in "
                                 f"[0, {self.vocab_size})")
        # transformers' class default, which its generate() applies (EOS forced at max_length); a config.json
        # that sets it (or null) keeps its own value.
        self.extra.setdefault("forced_eos_token_id", 1)
