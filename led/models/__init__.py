"""The model library: long-input encoder-decoders in plain PyTorch, equal to `transformers` on Hugging Face
checkpoints, with shared generation (`led.models.generation`) and checkpoint I/O (`led.models.checkpoint`).

It imports torch, safetensors, tokenizers and huggingface_hub only: never Lightning, Hydra or OmegaConf.
"""

from led.models.led import (
    DecoderCache,
    LEDConfig,
    LEDForConditionalGeneration,
    LEDOutput,
    shift_tokens_right,
)

__all__ = ["LEDConfig", "LEDForConditionalGeneration", "LEDOutput", "DecoderCache", "shift_tokens_right"]
