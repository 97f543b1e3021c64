"""led: long-document summarization with long-input encoder-decoders (LED) on PyTorch Lightning and Hydra.

`led.models` is the model library (plain PyTorch); `led.data`, `led.training` and `led.recipes` the framework
around it; `led.export`, `led.prepare`, `led.memory` and `led.metrics` its tools.
"""

from led.models import (
    DecoderCache,
    LEDConfig,
    LEDForConditionalGeneration,
    LEDOutput,
    shift_tokens_right,
)

__all__ = ["LEDConfig", "LEDForConditionalGeneration", "LEDOutput", "DecoderCache", "shift_tokens_right"]
__version__ = "0.1.0"
