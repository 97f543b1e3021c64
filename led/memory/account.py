"""The account of one training step, derived from the model's modules: the model is built on the meta device
(no memory, no arithmetic) and runs forward, loss and backward there, under public PyTorch instrumentation that
follows every tensor the step creates and how long it lives.

What is instrumented (all public API):
  * `torch.overrides.TorchFunctionMode`: every torch call of the forward pass (and of the recomputation under
    gradient checkpointing): its output tensors are allocations;
  * `torch.autograd.graph.saved_tensors_hooks`: what autograd keeps for backward, including the tensors an op
    makes inside itself (dropout's noise, LayerNorm's statistics, the loss's log-probabilities);
  * `torch.autograd.graph.Node.register_prehook / register_hook` on every node of the backward graph: the
    activation gradients each node receives and produces, and the node's working set while it runs (what was
    live as it started plus what it produced); `register_post_accumulate_grad_hook`: the parameter gradients;
  * `weakref.finalize` on each tensor's storage: when it is freed. Views share a storage and count once.
Parameters are not in the account (the strategy decides how much of them a device holds: led.memory.estimate).

Three things differ between the meta device and the device being planned, and are modelled here by hand:
  * `scaled_dot_product_attention`: on meta it always runs the math path (keeping the score matrices). Where the
    planned device would run a fused kernel (CPU flash without dropout; CUDA flash for 16-bit inputs without a
    mask, memory-efficient otherwise), `_FusedAttention` stands in for it with what that kernel keeps: its inputs,
    output, the fp32 log-sum-exp and the additive form of the mask.
  * dropout: CUDA's fused kernel keeps a bool mask (meta, like CPU, keeps the scaled noise in the input's dtype);
  * autocast (bf16-mixed) does not apply to meta tensors: `AUTOCAST_BF16` lists the ops it runs in bf16 (each
    casting its fp32 inputs on its own, as Lightning's autocast caches no weight copies), and CUDA's fp32 list
    (`AUTOCAST_FP32_CUDA`) the ones it runs in fp32; everything else runs in its inputs' dtype, as autocast does.
Values the forward pass reads on the host (LED's number of global tokens) are computed from the real batch: every
op over the batch alone (masks, positions) is recorded as a recipe, and replayed on CPU when its value is read.
"""

from __future__ import annotations

import weakref
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

GIB = 2**30

# Autocast's bf16 ops (PyTorch's "CPU Ops that can autocast to bfloat16" / CUDA's lower-precision list) among
# the calls a model's Python code makes: matmuls, linear layers, attention.
AUTOCAST_BF16 = {F.linear, torch.matmul, Tensor.matmul, Tensor.__matmul__, torch.mm, Tensor.mm, torch.bmm,
                 Tensor.bmm, torch.addmm, torch.baddbmm, torch.einsum, F.scaled_dot_product_attention,
                 F.conv1d, F.conv2d}
# CUDA's autocast runs these in fp32 (CPU's runs them in their inputs' dtype).
AUTOCAST_FP32_CUDA = {F.layer_norm, F.group_norm, F.softmax, F.log_softmax, F.cross_entropy, F.nll_loss,
                      torch.softmax, torch.log_softmax, Tensor.softmax, Tensor.log_softmax}
# Calls that read a tensor's value on the host.
HOST_READS = {Tensor.__int__, Tensor.__bool__, Tensor.__float__, Tensor.__index__, Tensor.item, Tensor.tolist}


def _tensors(value: Any) -> Iterator[Tensor]:
    """The tensors in a call's arguments or result (nested tuples, lists and dicts)."""
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _map(value: Any, fn: Callable[[Any], Any]) -> Any:
    """`fn` applied to every leaf of nested tuples, lists and dicts."""
    if isinstance(value, (tuple, list)):
        return type(value)(_map(item, fn) for item in value)
    if isinstance(value, dict):
        return {key: _map(item, fn) for key, item in value.items()}
    return fn(value)


# --- values computed from the batch alone: recorded on meta, replayed on CPU when the host reads one ------------

@dataclass(eq=False)
class _Recipe:
    """How a tensor of the forward pass follows from the batch alone: `func(*args, **kwargs)[index]`, with the
    tensors among the arguments replaced by their recipes (so that a recipe keeps no meta tensor alive)."""

    func: Any
    args: Any
    kwargs: Any
    index: int | None = None
    value: Tensor | None = None  # the real CPU tensor: set for the batch's inputs, computed for the others


def _recipe_of(value: Any) -> _Recipe | None:
    return getattr(value, "_memory_recipe", None) if isinstance(value, Tensor) else None


def _replay(recipe: _Recipe, memo: dict[int, Any]) -> Any:
    """The real CPU value of a recipe."""
    if recipe.value is not None:
        return recipe.value
    if id(recipe) not in memo:
        def real(leaf: Any) -> Any:
            if isinstance(leaf, _Recipe):
                return _replay(leaf, memo)
            if isinstance(leaf, torch.device) or leaf == "meta":
                return torch.device("cpu")
            return leaf
        result = recipe.func(*_map(recipe.args, real), **_map(recipe.kwargs, real))
        memo[id(recipe)] = result if recipe.index is None else result[recipe.index]
    return memo[id(recipe)]


# --- stand-ins for what the meta device does differently ------------------------------------------------------

class _FusedAttention(torch.autograd.Function):
    """A fused SDPA kernel on meta: keeps q, k, v, the output, the fp32 log-sum-exp (lse_rows rounded up) and the
    mask it was handed (converted by the caller); its backward produces the three input gradients."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, lse_multiple: int,
                heads_inner: bool) -> Tensor:
        # The output's layout: CPU's kernel follows q's (dense q: its strides), CUDA's write (B, L, H, D) rows;
        # which decides whether the caller's `transpose(1, 2).reshape(...)` is a view or a copy.
        if heads_inner or (q.dim() == 4 and q.transpose(1, 2).is_contiguous()):
            out = q.new_empty(q.shape[0], q.shape[2], q.shape[1], v.shape[-1]).transpose(1, 2)
        else:
            out = q.new_empty(*q.shape[:-1], v.shape[-1])
        rows = -(-q.shape[-2] // lse_multiple) * lse_multiple
        lse = q.new_empty(*q.shape[:-2], rows, dtype=torch.float32)
        # The kernel keeps its output: an alias of it (saving the output itself, recomputation under gradient
        # checkpointing counts one tensor fewer).
        ctx.save_for_backward(q, k, v, out.detach(), lse, mask)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        q, k, v, _, _, _ = ctx.saved_tensors
        return (torch.empty(q.shape, dtype=q.dtype, device=q.device),
                torch.empty(k.shape, dtype=k.dtype, device=k.device),
                torch.empty(v.shape, dtype=v.dtype, device=v.device), None, None, None)


class _FusedDropout(torch.autograd.Function):
    """CUDA's fused dropout on meta: keeps a bool mask of the input's shape."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(torch.empty(x.shape, dtype=torch.bool, device=x.device))
        return torch.empty_like(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return torch.empty_like(grad)


def _attention(device: str, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None,
               dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
               **kwargs: Any) -> Tensor | None:
    """What `scaled_dot_product_attention` keeps on `device`, or None where that device runs the math path
    (which meta runs as it is). CPU: the flash kernel unless dropout is on. CUDA: flash for bf16/fp16 without a
    mask, else the memory-efficient kernel, whose mask (bias) is padded to a multiple of 16 keys and whose
    log-sum-exp to a multiple of 32 rows."""
    if q.dim() != 4 or kwargs.get("enable_gqa"):
        return None
    if device == "cpu":
        if dropout_p > 0:
            return None
        flash = True
    else:
        flash = attn_mask is None and q.dtype in (torch.bfloat16, torch.float16)
    mask = attn_mask
    if mask is not None:
        # The kernel keeps the additive form of the mask it was given, in the mask's own shape (CUDA: its keys
        # padded to a multiple of 16), and broadcasts it over heads and query rows as a view: a (B, 1, 1, K) mask
        # stays B x K numbers (measured on an H200: expanding it to (B, H, L, K) overstates a PEGASUS-X step at
        # 16,384 tokens without checkpointing by 1.3 GB, 1.67x).
        keys = mask.shape[-1] if device == "cpu" else -(-mask.shape[-1] // 16) * 16
        if mask.dtype == torch.bool or mask.dtype != q.dtype or keys != mask.shape[-1]:
            mask = q.new_empty(*mask.shape[:-1], keys)
    return _FusedAttention.apply(q, k, v, mask, 1 if device == "cpu" or flash else 32, device == "cuda")


# --- the account ------------------------------------------------------------------------------------------------

@dataclass
class Sample:
    """The memory at one point of the step (bytes): activations and their gradients (`other`), the parameter
    gradients of each FSDP unit (`grads`, keyed by unit; -1: the root unit), and the unit running then."""

    where: str
    other: int
    grads: dict[int, int]
    unit: int | None


@dataclass
class Account:
    """The step's memory, traced: every sample point, what autograd kept at the end of the forward pass
    (by part of the model), and the units FSDP shards (parameters per unit; -1: the root)."""

    samples: list[Sample] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)
    end_of_forward: int = 0  # everything live (but parameters and their gradients) as the loss is returned
    parts: dict[str, int] = field(default_factory=dict)  # end_of_forward by the part of the model that made it
    unit_parameters: dict[int, int] = field(default_factory=dict)  # element counts


class _Tracker:
    """Live storages (not the parameters'), their bytes by kind, and the samples."""

    def __init__(self, model: nn.Module, units: list[nn.Module]):
        self.excluded = {id(p.untyped_storage()) for p in model.parameters()}
        self.excluded |= {id(b.untyped_storage()) for b in model.buffers()}
        # storage -> (bytes, unit of a parameter gradient or None, the part of the model that made it)
        self.live: dict[int, tuple[int, int | None, str]] = {}
        self.other = 0
        self.grads: dict[int, int] = {}
        self.samples: list[Sample] = []
        self.unit: int | None = None  # the FSDP unit running
        self.part = "loss"  # the part of the model running (outside every module: the loss)
        self.stack: list[tuple[str, int | None]] = []
        # backward node -> the unit and part whose forward created it
        self.node_unit: dict[Any, tuple[int | None, str]] = {}
        self.kept: dict[str, int] = {}  # bytes saved for backward during the forward pass, by part
        self.saved_storages: set[int] = set()
        self.forward = True
        self.mode: TorchFunctionMode | None = None

    def add(self, tensor: Tensor, grad_unit: int | None = None) -> int:
        """Count `tensor`'s storage if it is new (or, for a parameter gradient, move it to `grad_unit`); returns
        the bytes newly counted."""
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self.excluded:
            return 0
        if key in self.live:
            size, unit, part = self.live[key]
            if grad_unit is not None and unit is None:  # a stolen activation gradient becomes .grad
                self.other -= size
                self.grads[grad_unit] = self.grads.get(grad_unit, 0) + size
                self.live[key] = (size, grad_unit, part)
            return 0
        size = storage.nbytes()
        self.live[key] = (size, grad_unit, self.part)
        if grad_unit is None:
            self.other += size
        else:
            self.grads[grad_unit] = self.grads.get(grad_unit, 0) + size
        weakref.finalize(storage, self._free, key)
        return size

    def _free(self, key: int) -> None:
        size, unit, _ = self.live.pop(key)
        if unit is None:
            self.other -= size
        else:
            self.grads[unit] -= size

    def saved(self, tensor: Tensor) -> None:
        self.add(tensor)
        key = id(tensor.untyped_storage())
        if self.forward and key not in self.excluded and key not in self.saved_storages:
            self.saved_storages.add(key)
            self.kept[self.part] = self.kept.get(self.part, 0) + tensor.untyped_storage().nbytes()

    def sample(self, what: str, extra: int = 0) -> None:
        where = f"{'forward' if self.forward else 'backward'} of {self.part} ({what})"
        self.samples.append(Sample(where, self.other + extra, dict(self.grads), self.unit))

    def parts(self) -> dict[str, int]:
        """Bytes live now (parameter gradients aside), by the part of the model that made them."""
        parts: dict[str, int] = {}
        for size, unit, part in self.live.values():
            if unit is None:
                parts[part] = parts.get(part, 0) + size
        return parts


class _Mode(TorchFunctionMode):
    """Counts every call's outputs; stands in for the planned device's attention, dropout and autocast; records
    and replays the calls over the batch alone."""

    def __init__(self, tracker: _Tracker, device: str, autocast: bool):
        super().__init__()
        self.tracker, self.device, self.autocast = tracker, device, autocast

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "__name__", None) == "__get__":  # attributes (shape, dtype, grad_fn): no new tensor
            return func(*args, **kwargs)
        if func in HOST_READS and args[0].device.type == "meta":
            recipe = _recipe_of(args[0])
            if recipe is None:
                raise RuntimeError(f"the model reads a tensor computed from its weights on the host ({func.__name__})"
                                   ": the memory planner cannot trace such a forward pass on the meta device")
            return func(_replay(recipe, {}), *args[1:], **kwargs)
        inputs = list(_tensors((args, kwargs)))
        recipes = [_recipe_of(t) for t in inputs]
        if self.autocast and not all(recipes):
            args, kwargs = self._autocast(func, args, kwargs)
        result = self._call(func, args, kwargs)
        if all(recipes) and (inputs or kwargs.get("device") is not None):
            self._record(func, args, kwargs, result)
        outputs = list(_tensors(result))
        if outputs:
            for tensor in outputs:
                self.tracker.add(tensor)
                if self.tracker.forward and tensor.grad_fn is not None:
                    self.tracker.node_unit.setdefault(tensor.grad_fn, (self.tracker.unit, self.tracker.part))
            self.tracker.sample(getattr(func, "__name__", str(func)))
        return result

    def _call(self, func: Any, args: tuple, kwargs: dict) -> Any:
        if func is F.scaled_dot_product_attention:
            out = _attention(self.device, *args, **kwargs)
            if out is not None:
                return out
        if func is F.dropout and self.device == "cuda":
            x, p, training = (list(args) + [kwargs.get("p", 0.5), kwargs.get("training", True)])[:3]
            if training and 0 < p < 1 and x.requires_grad:
                return _FusedDropout.apply(x)
        return func(*args, **kwargs)

    def _autocast(self, func: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if func in AUTOCAST_BF16:
            dtype = torch.bfloat16
        elif self.device == "cuda" and func in AUTOCAST_FP32_CUDA:
            dtype = torch.float32
        else:
            return args, kwargs

        def cast(leaf: Any) -> Any:
            if isinstance(leaf, Tensor) and leaf.is_floating_point() and leaf.dtype != dtype:
                leaf = leaf.to(dtype)
                self.tracker.add(leaf)
            return leaf
        return _map(args, cast), _map(kwargs, cast)

    def _record(self, func: Any, args: tuple, kwargs: dict, result: Any) -> None:
        """A call over the batch alone: count its outputs and record how to replay it."""
        to_recipe = lambda leaf: _recipe_of(leaf) if isinstance(leaf, Tensor) else leaf  # noqa: E731
        r_args, r_kwargs = _map(args, to_recipe), _map(kwargs, to_recipe)
        outputs = [result] if isinstance(result, Tensor) else list(result) if isinstance(result, (tuple, list)) \
            else []
        single = isinstance(result, Tensor)
        for index, tensor in enumerate(outputs):
            if isinstance(tensor, Tensor):
                try:
                    tensor._memory_recipe = _Recipe(func, r_args, r_kwargs, None if single else index)
                except (AttributeError, RuntimeError):
                    pass


def _module_hooks(model: nn.Module, units: list[nn.Module], tracker: _Tracker) -> list[Any]:
    """Forward hooks that say which part of the model runs (the breakdown's lines: a layer stack, e.g.
    `led.encoder.layers`, or the first two pieces of a module's path, e.g. `led.encoder`) and which FSDP unit."""
    handles = []
    unit_of = {id(module): i for i, module in enumerate(units)}
    inside: dict[int, tuple[str, int]] = {}
    for name, module in model.named_modules():
        if id(module) in unit_of:
            stack_name = ".".join(piece for piece in name.split(".") if not piece.isdigit())
            for child in module.modules():
                inside[id(child)] = (stack_name, unit_of[id(module)])
    for name, module in model.named_modules():
        if not name:
            continue
        part, unit = inside.get(id(module), (".".join(name.split(".")[:2]), None))

        is_unit = id(module) in unit_of

        def pre(module: nn.Module, args: Any, part: str = part, unit: int | None = unit, is_unit: bool = is_unit,
                ) -> None:
            if is_unit and not tracker.forward:
                # Gradient checkpointing re-runs a layer inside the backward pass: instrument it as the forward
                # (and only it: on meta, backward kernels are Python functions whose tensors CPU's kernels never
                # make). The recomputation stops by an exception as soon as it has what the backward needs: the
                # post hook still runs (always_call).
                tracker.mode.__enter__()
            tracker.stack.append((tracker.part, tracker.unit))
            tracker.part, tracker.unit = part, unit

        def post(module: nn.Module, args: Any, output: Any, is_unit: bool = is_unit) -> None:
            tracker.part, tracker.unit = tracker.stack.pop()
            if is_unit and not tracker.forward:
                tracker.mode.__exit__(None, None, None)
        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post, always_call=True)]
    return handles


@contextmanager
def _hooks(handles: list[Any]) -> Iterator[None]:
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _graph_nodes(root: Any) -> list[Any]:
    nodes, stack, seen = [], [root], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        nodes.append(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return nodes


def trace_training_step(model: nn.Module, batch: dict[str, Tensor], device: str, autocast: bool,
                        units: list[nn.Module]) -> Account:
    """Run forward, loss and backward of `model` (on the meta device) on `batch` (real CPU tensors: the inputs
    the planner assumes), and account for every tensor. `units`: the modules FSDP wraps one by one."""
    tracker = _Tracker(model, units)
    account = Account()
    unit_of_param = {id(p): i for i, unit in enumerate(units) for p in unit.parameters()}
    for p in model.parameters():
        key = unit_of_param.get(id(p), -1)
        account.unit_parameters[key] = account.unit_parameters.get(key, 0) + p.numel()
    meta_batch = {}
    for name, value in batch.items():
        meta = torch.empty(value.shape, dtype=value.dtype, device="meta")
        meta._memory_recipe = _Recipe(None, (), {}, value=value)
        meta_batch[name] = meta
    handles = _module_hooks(model, units, tracker)

    def accumulated(p: Tensor) -> None:
        tracker.add(p.grad, unit_of_param.get(id(p), -1))
        tracker.sample("gradient accumulation")
    handles += [p.register_post_accumulate_grad_hook(accumulated) for p in model.parameters() if p.requires_grad]
    with ExitStack() as stack:
        stack.enter_context(_hooks(handles))
        stack.enter_context(torch.autograd.graph.saved_tensors_hooks(lambda t: (tracker.saved(t), t)[1],
                                                                     lambda t: t))
        tracker.mode = _Mode(tracker, device, autocast)
        with tracker.mode:
            loss = model(**meta_batch).loss
        tracker.add(loss)
        account.end_of_forward = tracker.other
        account.kept = dict(tracker.kept)
        account.parts = tracker.parts()
        tracker.forward = False
        del meta_batch
        node_handles = []
        for node in _graph_nodes(loss.grad_fn):
            node_handles += _node_hooks(node, tracker)
        stack.enter_context(_hooks(node_handles))
        loss.backward()
        del loss
    account.samples = tracker.samples
    return account


def _node_hooks(node: Any, tracker: _Tracker) -> list[Any]:
    """While a backward node runs, everything live as it started is, plus what it produces."""
    state: dict[str, Any] = {}

    def pre(grad_outputs: tuple) -> None:
        tracker.unit, tracker.part = tracker.node_unit.get(node, (tracker.unit, tracker.part))
        for grad in grad_outputs:
            if grad is not None:
                tracker.add(grad)
        state["before"] = tracker.other

    def post(grad_inputs: tuple, grad_outputs: tuple) -> None:
        new = sum(tracker.add(grad) for grad in grad_inputs if grad is not None)
        tracker.sample(node.name(), extra=max(0, state.get("before", 0) + new - tracker.other))
    return [node.register_prehook(pre), node.register_hook(post)]
