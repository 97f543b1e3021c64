"""LED (Longformer-Encoder-Decoder): config, windowed+global attention and the encoder-decoder modules."""

from led.models.led.config import LEDConfig
from led.models.led.modeling import (
    DecoderCache,
    LEDForConditionalGeneration,
    LEDOutput,
    shift_tokens_right,
)

__all__ = ["LEDConfig", "LEDForConditionalGeneration", "LEDOutput", "DecoderCache", "shift_tokens_right"]
