r"""Memory planning: the peak memory of one training step per device, for any model family (LED, PEGASUS-X).

    python -m led.memory model=led-base-16384 input_length=16384 target_length=512 batch_size=1 \
        precision=bf16-mixed strategy=fsdp devices=8 gpu_memory_gib=80

One training step is forward + loss + backward + optimizer step, with gradients freed before the next
forward (`zero_grad(set_to_none=True)`, Lightning's default). The account of the activations is derived from the
model's modules, not written per family (led/memory/account.py): the model is built on the meta device (no memory,
so led-large costs nothing) and runs the step there, on the batch planned, while public PyTorch instrumentation
(a TorchFunctionMode, saved-tensor hooks, backward-node and gradient hooks, weakref finalizers on storages) follows
every tensor from its creation to its release. The peak is the largest of

  * any point of that trace: parameters + optimizer states + the activations, activation gradients and parameter
    gradients live then (during a backward node: what was live as it started plus what it produced); with
    gradient checkpointing, the trace includes each layer's recomputation;
  * the optimizer step: parameters + gradients + optimizer states + the step's temporaries.

Modelled by hand, because the meta device cannot show them: the attention kernels the planned device runs (the
fused ones keep their inputs, output, fp32 log-sum-exp and additive mask; CPU with attention dropout runs the math
path, as meta does), CUDA's fused dropout (a bool mask), autocast's casts (bf16-mixed: each matmul casts its
fp32 inputs, weight included, on its own; CUDA runs LayerNorm, softmax and the loss in fp32), the optimizer's
states and step temporaries, and what the strategies do (DDP's gradient buckets; FSDP's shards, gathered units
and reduce-scattered gradients). Precisions and strategies mean what they mean in Lightning: "bf16-mixed" keeps
fp32 weights, gradients and optimizer states.

On CPU the estimate matches the peak RSS of a real step to within a few percent for both families
(tests/test_memory.py, bench/bench_memory.py). The CUDA kernels' choices follow PyTorch's dispatch rules but have
not been measured here.

Not counted: the CUDA context and library workspaces (`plan` reserves `CUDA_RESERVED_GIB` for them), the
caching allocator's fragmentation (`plan` keeps `FRAGMENTATION_MARGIN` free), communication buffers, workspaces
inside single kernels.
"""

from led.memory.estimate import (
    CUDA_RESERVED_GIB,
    FRAGMENTATION_MARGIN,
    PRECISIONS,
    STRATEGIES,
    MemoryEstimate,
    build_meta_model,
    count_parameters,
    estimate_peak_memory,
    largest_batch_size,
    optimizer_class,
    plan,
)

__all__ = ["CUDA_RESERVED_GIB", "FRAGMENTATION_MARGIN", "PRECISIONS", "STRATEGIES", "MemoryEstimate",
           "build_meta_model", "count_parameters", "estimate_peak_memory", "largest_batch_size", "optimizer_class",
           "plan"]
