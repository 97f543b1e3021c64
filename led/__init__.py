"""led: long-document summarization with LED (Longformer-Encoder-Decoder) in plain PyTorch."""

from led.config import LEDConfig
from led.model import DecoderCache, LEDForConditionalGeneration, LEDOutput, shift_tokens_right

__all__ = ["LEDConfig", "LEDForConditionalGeneration", "LEDOutput", "DecoderCache", "shift_tokens_right"]
__version__ = "0.1.0"
