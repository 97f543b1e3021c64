"""Lightning strategies configured for the encoder-decoder models of both families (see conf/trainer/).

`trainer=ddp` is Lightning's own DDP. `trainer=fsdp` is FSDP2 (`torch.distributed.fsdp.fully_shard`) through
Lightning's `ModelParallelStrategy`: Lightning's FSDP1 `FSDPStrategy` refuses CPU accelerators, FSDP2 runs on
GPUs (NCCL) and on CPU processes (gloo) alike, so the sharded path is tested on CPU (tests/test_distributed.py).
"""

from __future__ import annotations

from typing import Any, TypeVar

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from torch import Tensor

from led.errors import ConfigError
from led.models.base import EncoderDecoderModel

STATE_DICT_TYPES = ("sharded", "full")
T = TypeVar("T")


class LayerShardedStrategy(ModelParallelStrategy):
    """FSDP2 over every process: each encoder and decoder layer is one `fully_shard` unit, the root unit holds
    the embeddings (shared by encoder, decoder and LM head, so the tie holds) and the LayerNorms.

    `LEDSummarizer.configure_model` calls `shard_model`, and validation runs between `gather_weights` and
    `release_weights`. With `bf16-mixed` the gathered weights are bf16 and gradients are reduced in fp32 (the
    sharded weights and the optimizer stay fp32).

    Args:
        activation_checkpointing: recompute each layer in the backward pass (the model's own gradient
            checkpointing, turned on here; `model.gradient_checkpointing` need not be set).
        reshard_after_forward: free the gathered layer after its forward (FSDP1's FULL_SHARD); false keeps it
            until its backward (SHARD_GRAD_OP: less communication, more memory).
        state_dict_type: "sharded" (a checkpoint directory, one file per rank; `python -m led.export` turns it
            into a Hugging Face model) or "full" (one file gathered on rank 0).
        cpu_offload: keep the sharded weights, gradients and optimizer states in CPU memory.
    """

    def __init__(self, activation_checkpointing: bool = True, reshard_after_forward: bool = True,
                 state_dict_type: str = "sharded", cpu_offload: bool = False) -> None:
        if state_dict_type not in STATE_DICT_TYPES:
            raise ConfigError(f"trainer.strategy.state_dict_type={state_dict_type!r} is not one of "
                             f"{', '.join(STATE_DICT_TYPES)} (sharded: one file per rank; full: one file from rank 0)")
        super().__init__(save_distributed_checkpoint=state_dict_type == "sharded")
        self.activation_checkpointing = activation_checkpointing
        self.reshard_after_forward = reshard_after_forward
        self.cpu_offload = cpu_offload

    def setup_environment(self) -> None:
        # Pure data parallelism: one mesh dimension over all processes (ModelParallelStrategy's "auto" would
        # make the devices of a node a tensor-parallel group, which this model does not implement).
        self._data_parallel_size = self.num_nodes * self.num_processes
        self._tensor_parallel_size = 1
        super().setup_environment()

    def shard_model(self, model: EncoderDecoderModel) -> None:
        """Apply `fully_shard` to every layer, then to the whole model (once; later calls do nothing)."""
        from torch.distributed.fsdp import (
            CPUOffloadPolicy,
            FSDPModule,
            MixedPrecisionPolicy,
            OffloadPolicy,
            fully_shard,
        )

        if isinstance(model, FSDPModule):  # configure_model runs again for trainer.validate after fit
            return
        if self.activation_checkpointing:  # the model's own checkpointing: FSDP2 gathers again in the recompute
            model.gradient_checkpointing_enable()
        bf16 = self.precision_plugin.precision == "bf16-mixed"
        settings = dict(
            mesh=self.device_mesh["data_parallel"],
            mp_policy=MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16
            else MixedPrecisionPolicy(),
            offload_policy=CPUOffloadPolicy() if self.cpu_offload else OffloadPolicy(),
        )
        for layer in model.layers():
            fully_shard(layer, reshard_after_forward=self.reshard_after_forward, **settings)
        # The root (embeddings, LM head) stays gathered from forward to backward, which needs it at once.
        fully_shard(model, reshard_after_forward=False, **settings)

    def gather_weights(self, model: EncoderDecoderModel) -> None:
        """Gather the whole model on every rank and keep it gathered until `release_weights` (a collective).

        Validation runs in between without any collective inside the model: beam search stops when its own
        batch is done, so ranks run different numbers of decoder steps (or none, when a rank has no example
        to summarise), which would deadlock FSDP's per-layer all-gathers. Costs one full copy of the
        weights per rank while validating.
        """
        for module in _fsdp_modules(model):
            module.set_reshard_after_forward(False, recurse=False)
            module.unshard()

    def release_weights(self, model: EncoderDecoderModel) -> None:
        """Back to training (a collective): the gathered weights freed, layers resharded after each forward again."""
        for module in _fsdp_modules(model):
            module.set_reshard_after_forward(module is not model and self.reshard_after_forward, recurse=False)
        # Reshards every unit and forgets the order in which validation ran them. FSDP records that order even
        # without gradients and the next backward prefetches by it: after ranks generated for different numbers
        # of steps, they would prefetch different units and deadlock.
        model.reset_iter_state()


def world_size() -> int:
    """Processes of the running torch.distributed group; 1 without one (a single process, or before DDP starts)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_objects(value: T) -> list[T]:
    """`value` of every rank, in rank order (a collective under DDP/FSDP); `[value]` in one process."""
    if world_size() == 1:
        return [value]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def sum_over_ranks(values: Tensor) -> tuple[Tensor, int]:
    """`values` summed over the ranks (a new tensor, a collective under DDP/FSDP), and the number of ranks."""
    if world_size() == 1:
        return values, 1
    values = values.clone()
    dist.all_reduce(values)
    return values, world_size()


def check_launch(trainer: L.Trainer) -> None:
    """Refuse a sweep job (-m) in which Lightning would start the other DDP/FSDP processes itself.

    Lightning starts them by re-running the command line, which in a sweep is the whole sweep: each child
    would run every job. Processes started from outside (srun via hydra/launcher=slurm, torchrun) are fine.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    if isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher):
        raise ConfigError(
            f"trainer.devices={trainer.num_devices} x trainer.num_nodes={trainer.num_nodes} in a sweep (-m): Lightning "
            "would start the other processes by re-running the whole sweep in each. Run multi-device jobs of a "
            "sweep with hydra/launcher=slurm (srun starts one process per device), or without -m one at a time")


def _fsdp_modules(model: torch.nn.Module) -> list[Any]:
    from torch.distributed.fsdp import FSDPModule

    return [module for module in model.modules() if isinstance(module, FSDPModule)]
