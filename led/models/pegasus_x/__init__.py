"""PEGASUS-X: config, block-local + global-token attention and the encoder-decoder modules."""

from led.models.pegasus_x.config import PegasusXConfig
from led.models.pegasus_x.modeling import (
    PegasusXForConditionalGeneration,
    PegasusXOutput,
)

__all__ = ["PegasusXConfig", "PegasusXForConditionalGeneration", "PegasusXOutput"]
