"""The model library: long-input encoder-decoders in plain PyTorch, equal to `transformers` on Hugging Face
checkpoints. Every family subclasses `led.models.base.EncoderDecoderModel` and so shares generation
(`led.models.generation`), checkpoint I/O (`led.models.checkpoint`) and the Hub-or-directory rule (`led.models.hub`).

It imports torch, safetensors, tokenizers and huggingface_hub only: never Lightning, Hydra or OmegaConf.
"""

from led.models.base import EncoderDecoderModel
from led.models.families import FAMILIES, Family, family, load_model, load_tokenizer
from led.models.led import (
    DecoderCache,
    LEDConfig,
    LEDForConditionalGeneration,
    LEDOutput,
    shift_tokens_right,
)
from led.models.pegasus_x import (
    PegasusXConfig,
    PegasusXForConditionalGeneration,
    PegasusXOutput,
)

__all__ = ["EncoderDecoderModel", "FAMILIES", "Family", "family", "load_model", "load_tokenizer", "LEDConfig", "LEDForConditionalGeneration", "LEDOutput", "DecoderCache",
           "shift_tokens_right", "PegasusXConfig", "PegasusXForConditionalGeneration", "PegasusXOutput"]
