"""LED model configuration: the fields users know from `transformers`' `LEDConfig`, validated on creation.

Reads and writes Hugging Face `config.json` files (`model_type: "led"`); keys this class does not model
(generation settings of older checkpoints, `architectures`, ...) are kept in `extra` and written back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from led.models.config_file import ConfigFile

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "silu", "swish", "tanh")

# Keys of `transformers`' config.json that are aliases of ours (the attribute_map of LEDConfig).
_ALIASES = {
    "hidden_size": "d_model",
    "num_attention_heads": "encoder_attention_heads",
    "attention_probs_dropout_prob": "attention_dropout",
    "initializer_range": "init_std",
    "num_hidden_layers": "encoder_layers",
}

NAMED_SIZES: dict[str, dict[str, Any]] = {
    # For tests and CPU runs: a few seconds per step at a few thousand tokens.
    "tiny": dict(d_model=128, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                 decoder_attention_heads=4, encoder_ffn_dim=256, decoder_ffn_dim=256, attention_window=64,
                 max_encoder_position_embeddings=4096, max_decoder_position_embeddings=512),
    "led-base-16384": dict(d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                           decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072,
                           attention_window=1024, max_encoder_position_embeddings=16384,
                           max_decoder_position_embeddings=1024),
    "led-large-16384": dict(d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
                            decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096,
                            attention_window=1024, max_encoder_position_embeddings=16384,
                            max_decoder_position_embeddings=1024),
}


@dataclass
class LEDConfig(ConfigFile):
    """Hyper-parameters of an LED model. Defaults are those of `transformers.LEDConfig` (led-large shape)."""

    model_type: ClassVar[str] = "led"
    family_name: ClassVar[str] = "LED"
    architecture: ClassVar[str] = "LEDForConditionalGeneration"
    hub_owner: ClassVar[str] = "allenai"
    aliases: ClassVar[dict[str, str]] = _ALIASES
    named_sizes: ClassVar[dict[str, dict[str, Any]]] = NAMED_SIZES

    vocab_size: int = 50265
    d_model: int = 1024
    encoder_layers: int = 12
    decoder_layers: int = 12
    encoder_attention_heads: int = 16
    decoder_attention_heads: int = 16
    encoder_ffn_dim: int = 4096
    decoder_ffn_dim: int = 4096
    activation_function: str = "gelu"
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    # Probability of skipping a whole layer per training step (LayerDrop); 0 in every released LED.
    encoder_layerdrop: float = 0.0
    decoder_layerdrop: float = 0.0
    max_encoder_position_embeddings: int = 16384
    max_decoder_position_embeddings: int = 1024
    # Full window (both sides): each token sees attention_window // 2 tokens on each side plus itself.
    # One even value for all encoder layers, or one per layer.
    attention_window: int | list[int] = 512
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    decoder_start_token_id: int = 2
    init_std: float = 0.02
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.attention_window, tuple):
            self.attention_window = list(self.attention_window)
        for name in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                     "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim",
                     "max_encoder_position_embeddings", "max_decoder_position_embeddings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"LEDConfig.{name}={value!r} is invalid: it must be a positive integer")
        for name in ("dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop", "decoder_layerdrop"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"LEDConfig.{name}={value!r} is invalid: it must be a probability in [0, 1)")
        for name in ("encoder_attention_heads", "decoder_attention_heads"):
            if self.d_model % getattr(self, name):
                raise ValueError(
                    f"LEDConfig.{name}={getattr(self, name)} does not divide d_model={self.d_model}: "
                    f"choose a head count that divides it"
                )
        if self.activation_function not in ACTIVATIONS:
            raise ValueError(
                f"LEDConfig.activation_function={self.activation_function!r} is not supported: "
                f"valid values are {', '.join(ACTIVATIONS)}"
            )
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < self.vocab_size:
                raise ValueError(
                    f"LEDConfig.{name}={value!r} is invalid: it must be a token id in [0, {self.vocab_size})"
                )
        self._validate_window()

    def _validate_window(self) -> None:
        windows = self.attention_window
        if isinstance(windows, list):
            if len(windows) != self.encoder_layers:
                raise ValueError(
                    f"LEDConfig.attention_window has {len(windows)} values {windows} but the encoder has "
                    f"{self.encoder_layers} layers: give one value per encoder layer, or a single int"
                )
        else:
            windows = [windows]
        for w in windows:
            if isinstance(w, bool) or not isinstance(w, int) or w <= 0 or w % 2:
                raise ValueError(
                    f"LEDConfig.attention_window={self.attention_window!r} is invalid: every window must be a "
                    f"positive even integer (e.g. 512 or 1024)"
                )

    @property
    def attention_windows(self) -> list[int]:
        """One full window per encoder layer."""
        if isinstance(self.attention_window, int):
            return [self.attention_window] * self.encoder_layers
        return list(self.attention_window)

    @property
    def max_window(self) -> int:
        """Inputs are padded to a multiple of this (as `transformers` does)."""
        return max(self.attention_windows)

    def _complete_config_json(self, data: dict[str, Any]) -> dict[str, Any]:
        data["attention_window"] = self.attention_windows  # one per layer, as transformers writes it
        data["num_hidden_layers"] = self.encoder_layers
        return data
