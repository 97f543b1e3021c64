"""Lightning strategies configured for LED (see conf/trainer/)."""

from __future__ import annotations

from lightning.pytorch.strategies import FSDPStrategy

from led.model import LEDDecoderLayer, LEDEncoderLayer

LAYER_TYPES = {LEDEncoderLayer, LEDDecoderLayer}


def fsdp_strategy(sharding_strategy: str = "FULL_SHARD", activation_checkpointing: bool = True,
                  state_dict_type: str = "sharded", cpu_offload: bool = False) -> FSDPStrategy:
    """FSDP with every encoder and decoder layer as one wrapping (and activation-checkpointing) unit.

    The embeddings, shared by encoder, decoder and LM head, stay in the root unit, so the tie holds.
    Under FSDP the model's own `gradient_checkpointing` should stay off: this wraps the same layers.
    """
    return FSDPStrategy(
        auto_wrap_policy=LAYER_TYPES,
        activation_checkpointing_policy=LAYER_TYPES if activation_checkpointing else None,
        sharding_strategy=sharding_strategy,
        state_dict_type=state_dict_type,
        cpu_offload=cpu_offload,
    )
