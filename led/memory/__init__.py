r"""Memory planning: the peak memory of one training step per device, derived from the model's structure.

    python -m led.memory model=led-base-16384 input_length=16384 target_length=512 batch_size=1 \
        precision=bf16-mixed strategy=fsdp devices=8 gpu_memory_gib=80

One training step is forward + loss + backward + optimizer step, with gradients freed before the next
forward (`zero_grad(set_to_none=True)`, Lightning's default). The estimate adds up, tensor by tensor, what
autograd keeps for the backward pass of every stage of the model (embeddings, each encoder and decoder
layer, the head and the loss), then walks the backward pass stage by stage, from the loss down: each stage
frees what it kept, allocates the gradients of its parameters and, while it runs, a working set of
activation gradients. The peak is the largest of

  * any point of that walk: parameters + optimizer states + the gradients produced so far + what the
    stages not yet run still keep + the working set of the running stage (with gradient checkpointing,
    a stage keeps only its inputs and re-creates the rest when its backward starts);
  * the optimizer step: parameters + gradients + optimizer states + the step's temporaries.

What a stage keeps (led/memory/account.py) follows the code in led/models/led/modeling.py and attention.py and what PyTorch's kernels save:
the fused attention kernels (CPU flash, CUDA memory-efficient) keep their inputs, output, log-sum-exp and
the additive mask in the query dtype (built from a boolean one by SDPA, or, in the encoder, once per window
size and shared by the layers); with attention dropout on CPU, SDPA
falls back to its math path, which keeps the probability matrices. Dropout keeps a bool mask on CUDA and
a noise tensor of the input's dtype on CPU. Under bf16 autocast, LayerNorm runs in fp32 (so the residual
stream is fp32) and every matmul casts its fp32 input on its own, so the projections of one input keep
one bf16 copy each, and each matmul keeps the bf16 copy of its weight (Lightning's autocast caches none,
and under FSDP the gathered weights are bf16 already). Precisions and strategies mean what they mean in
Lightning: "bf16-mixed" keeps fp32 weights, gradients and optimizer states.

On CPU, what autograd keeps matches this accounting to within 1% (tests/test_memory.py), and the peaks
measured by bench/bench_memory.py match the estimate to within a few percent. The CUDA kernels' choices
(memory-efficient attention for masked blocks, flash for the causal decoder, fused dropout, foreach AdamW)
follow PyTorch's dispatch rules but have not been measured here.

Not counted: the CUDA context and library workspaces (`plan` reserves `CUDA_RESERVED_GIB` for them), the
caching allocator's fragmentation (`plan` keeps `FRAGMENTATION_MARGIN` free), communication buffers.
"""

from led.memory.account import count_parameters, parameter_shapes
from led.memory.estimate import (
    CUDA_RESERVED_GIB,
    FRAGMENTATION_MARGIN,
    PRECISIONS,
    STRATEGIES,
    MemoryEstimate,
    estimate_peak_memory,
    largest_batch_size,
    optimizer_class,
    plan,
)

__all__ = ["CUDA_RESERVED_GIB", "FRAGMENTATION_MARGIN", "PRECISIONS", "STRATEGIES", "MemoryEstimate", "count_parameters",
           "estimate_peak_memory", "largest_batch_size", "optimizer_class", "parameter_shapes", "plan"]
