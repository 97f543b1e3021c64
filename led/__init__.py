"""led: long-document summarization with long-input encoder-decoders (LED) on PyTorch Lightning and Hydra.

`led.models` is the model library (plain PyTorch); `led.data`, `led.training` and `led.recipes` the framework
around it; `led.export`, `led.prepare`, `led.memory` and `led.metrics` its tools.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["LEDConfig", "LEDForConditionalGeneration", "LEDOutput", "DecoderCache", "shift_tokens_right",
           "PegasusXConfig", "PegasusXForConditionalGeneration"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # `from led import LEDForConditionalGeneration` loads the model library (and torch) on first use, so that
    # `import led.errors` (the entry points, before Hydra has checked the command line) stays instant.
    if name in __all__:
        return getattr(importlib.import_module("led.models"), name)
    raise AttributeError(f"module 'led' has no attribute {name!r}")
