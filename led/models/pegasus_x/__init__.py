"""PEGASUS-X: config, block-local + global-token attention, the encoder-decoder modules and the tokenizer."""

from led.models.pegasus_x.config import PegasusXConfig
from led.models.pegasus_x.modeling import (
    PegasusXForConditionalGeneration,
    PegasusXOutput,
)
from led.models.pegasus_x.tokenizer import PegasusTokenizer

__all__ = ["PegasusTokenizer", "PegasusXConfig", "PegasusXForConditionalGeneration", "PegasusXOutput"]
