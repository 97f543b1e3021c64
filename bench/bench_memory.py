"""Measured vs estimated (led.memory) peak memory of one training step, for both families (LED, PEGASUS-X).

A step is forward + loss + backward + AdamW step, after one warm-up step (so the optimizer states exist,
as in every step of a run but the first) and with gradients freed before it (`zero_grad(set_to_none=True)`).

    python bench/bench_memory.py                              # small shapes, 1,024 / 4,096 / 16,384 tokens, CPU fp32
    python bench/bench_memory.py --family pegasus_x --lengths 1024 4096 8192
    python bench/bench_memory.py --shape base --lengths 1024 4096
    python bench/bench_memory.py --device cuda --precision bf16-mixed --shape base --lengths 4096 16384

CPU: each measurement runs in a fresh process, so that the resident-set high-water mark (VmHWM) owes
nothing to an earlier one. The process first runs one step of the tiny model (what a first step loads once
per process, such as the ~65 MB of torch._dynamo that torch.optim imports, is not the step's memory), then
takes its baseline (VmRSS) with the inputs built and before building the model; after the warm-up step it
resets VmHWM to the current RSS (/proc/self/clear_refs) and runs the measured step. Measured = VmHWM -
baseline: weights, gradients, AdamW states, activations and working memory, as the estimate counts them,
plus what the C allocator holds beyond live tensors. That last part is why the process runs with
MALLOC_MMAP_THRESHOLD_=131072: glibc then serves every allocation over 128 KiB with its own mmap and returns
it to the system when freed, so RSS follows the live tensors (as CUDA's max_memory_allocated does). With
glibc's default (a threshold that rises to 32 MiB after the first large free) freed activations stay in the
heap and RSS keeps up to a few hundred MB of them; `--glibc-default` adds a column measured that way.

CUDA: torch.cuda.max_memory_allocated over the measured step, minus what was allocated before the model
was built; the reserved column is max_memory_reserved (what the caching allocator took from the GPU).

The "kept" columns compare the activations autograd keeps at the end of the warm-up step's forward pass
(every saved tensor's storage counted once, `autograd_saved_bytes` below) with the estimate's.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import subprocess
import sys
import time
from typing import Any

# Per family: model_type, the named size whose other settings a shape keeps, and the shapes (the sizes' own).
FAMILY_SIZES = {"led": ("tiny", "led-base-16384", "led-large-16384"),
                "pegasus_x": ("pegasus-x-tiny", "pegasus-x-base", "pegasus-x-large")}
SMALL = dict(d_model=256, encoder_layers=4, decoder_layers=4, encoder_attention_heads=4, decoder_attention_heads=4,
             encoder_ffn_dim=1024, decoder_ffn_dim=1024)
SHAPES = {"led": {"small": dict(SMALL, attention_window=512, max_encoder_position_embeddings=16384)},
          "pegasus_x": {"small": dict(SMALL, block_size=512, num_global_tokens=128)}}


def model_config(family_name: str, shape: str, **overrides: Any) -> dict:
    """A config.json dictionary of `family_name`'s shape `shape` (small, base, large)."""
    from led.models.families import family

    sizes = FAMILY_SIZES[family_name]
    size = {"small": sizes[1], "base": sizes[1], "large": sizes[2]}[shape]
    settings = {**SHAPES[family_name].get(shape, {}), **overrides}
    return family(family_name).config_of_size(size, **settings).to_dict()


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def autograd_saved_bytes(output: Any, exclude: Any = ()) -> dict[str, int]:
    """What autograd keeps for the backward of `output`, by backward-node type: the bytes of every distinct
    storage saved in its graph, each counted once (at the first node found to hold it), leaving out the
    storages of `exclude` (pass the model's parameters). Sums to the activations of a real forward pass,
    to check `estimate_peak_memory` against (tests/test_memory.py, and this benchmark)."""
    import torch

    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: set[int] = set()
    by_node: dict[str, int] = {}
    stack, visited = [output.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in visited:
            continue
        visited.add(node)
        for name in dir(node):
            if not name.startswith("_saved_"):
                continue
            value = getattr(node, name)
            for tensor in value if isinstance(value, (tuple, list)) else (value,):
                if not isinstance(tensor, torch.Tensor):
                    continue
                storage = tensor.untyped_storage()
                if storage.data_ptr() in skip or storage.data_ptr() in seen:
                    continue
                seen.add(storage.data_ptr())
                by_node[node.name()] = by_node.get(node.name(), 0) + storage.nbytes()
        stack.extend(next_node for next_node, _ in node.next_functions)
    return by_node


def _train_step(model, optimizer, batch: dict, precision: str, explain: dict | None = None) -> float:
    """One step; with `explain`, fills it with what autograd keeps at the end of the forward pass."""
    import torch

    device = batch["input_ids"].device.type
    # Lightning's mixed-precision plugin turns autocast's weight-cast cache off; so does this step.
    with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed", cache_enabled=False):
        loss = model(**batch).loss
    if explain is not None:
        explain.update(autograd_saved_bytes(loss, model.parameters()))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def _batch(vocab_size: int, batch_size: int, input_length: int, target_length: int, num_global: int,
           device: str, seed: int = 0, takes_global: bool = True) -> dict:
    import torch

    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(4, vocab_size, (batch_size, input_length), generator=gen)
    global_mask = torch.zeros_like(input_ids)
    global_mask[:, :num_global] = 1
    batch = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                 global_attention_mask=global_mask if num_global and takes_global else None,
                 labels=torch.randint(4, vocab_size, (batch_size, target_length), generator=gen))
    return {k: v.to(device) for k, v in batch.items() if v is not None}


def _build(config, checkpointing: bool, precision: str, device: str):
    import torch

    from led.models.families import family

    model = family(config.model_type).model_class(config).to(device).train()
    if precision == "bf16-true":
        model = model.to(torch.bfloat16)
    if checkpointing:
        model.gradient_checkpointing_enable()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-5)


@functools.cache
def _warm_up(model_type: str, checkpointing: bool, precision: str, device: str) -> None:
    """One step of the family's tiny model: what a process loads once (torch.optim imports torch._dynamo, ~65 MB;
    kernel code; thread pools) is then in the baseline, not in the step's memory."""
    from led.models.families import family

    tiny = family(model_type).config_of_size(FAMILY_SIZES[model_type][0], vocab_size=1000)
    model, optimizer = _build(tiny, checkpointing, precision, device)
    takes_global = model.takes_global_attention_mask
    _train_step(model, optimizer, _batch(tiny.vocab_size, 1, 256, 32, 1, device, takes_global=takes_global),
                precision)
    del model, optimizer
    gc.collect()


def measure(config: dict, batch_size: int, input_length: int, target_length: int, checkpointing: bool,
            num_global: int = 1, precision: str = "32", device: str = "cpu", threads: int = 1) -> dict:
    """Peak bytes of one training step above what the process held before the model existed.

    On CPU call it in a fresh process (`measure_in_subprocess`): the baseline and VmHWM are the process's,
    and only with glibc returning freed memory does a second measurement in one process start clean."""
    import torch

    from led.models.families import config_from_dict, family

    torch.set_num_threads(threads)
    cuda = device == "cuda"
    config = config_from_dict(config)
    _warm_up(config.model_type, checkpointing, precision, device)
    takes_global = family(config.model_type).model_class.takes_global_attention_mask
    batch = _batch(config.vocab_size, batch_size, input_length, target_length, num_global, device,
                   takes_global=takes_global)
    if cuda:
        torch.cuda.empty_cache()
        baseline, reserved_baseline = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    else:
        baseline = _status_kib("VmRSS") * 1024
    model, optimizer = _build(config, checkpointing, precision, device)
    kept: dict[str, int] = {}
    _train_step(model, optimizer, batch, precision, None if checkpointing else kept)
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        settled = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        settled = _status_kib("VmRSS") * 1024
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS
    start = time.perf_counter()
    loss = _train_step(model, optimizer, batch, precision)
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        reserved = torch.cuda.max_memory_reserved() - reserved_baseline
    else:
        peak, reserved = _status_kib("VmHWM") * 1024, 0
    seconds = time.perf_counter() - start
    del model, optimizer, batch
    return dict(peak=peak - baseline, settled=settled - baseline, reserved=reserved, seconds=seconds, loss=loss,
                kept=kept)


def measure_in_subprocess(runs: list[dict], glibc_default: bool = False, timeout: float = 3600) -> list[dict]:
    """`measure(**run)` for each run, in one fresh Python process (the repository root on its path).
    Unless `glibc_default`, glibc returns every freed allocation over 128 KiB to the system at once."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    if not glibc_default:
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(runs)], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode:
        raise RuntimeError(f"measurement of {runs} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=[*FAMILY_SIZES, "both"], default="both")
    parser.add_argument("--shape", choices=["small", "base", "large"], default="small")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--target-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--num-global", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.1, help="the config's dropout (0.1 in the released models)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["32", "bf16-mixed", "bf16-true"], default="32")
    parser.add_argument("--no-checkpointing", action="store_true", help="skip the gradient-checkpointing runs")
    parser.add_argument("--glibc-default", action="store_true",
                        help="CPU: also measure with glibc's default malloc settings (freed memory kept)")
    parser.add_argument("--explain", action="store_true", help="print what autograd keeps, by backward node")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (the memory does not depend on them; on a shared machine more only spin)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args()


def _print_row(args: argparse.Namespace, family_name: str, length: int, checkpointing: bool, run: dict,
               result: dict, estimate: Any) -> None:
    kept = sum(result["kept"].values())
    line = (f"{family_name:>9} {length:>6} {'on' if checkpointing else 'off':>4} | {result['peak'] / 2**20:>11.0f} "
            f"{estimate.total / 2**20:>11.0f} {estimate.total / result['peak']:>8.2f} | "
            + (f"{kept / 2**20:>8.0f} {estimate.kept / 2**20:>8.0f}" if kept else f"{'-':>8} {'-':>8}")
            + f" | {result['settled'] / 2**20:>14.0f} "
            f"{(estimate.parameters + estimate.optimizer_states) / 2**20:>6.0f} |")
    if args.device == "cuda":
        line += f" {result['reserved'] / 2**20:>13.0f} |"
    elif args.glibc_default:
        default = measure_in_subprocess([run], glibc_default=True)[0]
        line += f" {default['peak'] / 2**20:>6.0f} {estimate.total / default['peak']:>6.2f} |"
    print(f"{line} {result['seconds']:>6.2f} | {estimate.peak_phase}", flush=True)
    if args.explain and kept:
        for node, size in sorted(result["kept"].items(), key=lambda kv: -kv[1]):
            print(f"{'':>23}{size / 2**20:>10.1f} MB  {node}")


def main() -> None:
    args = _parse_args()
    if args.child:
        print(json.dumps([measure(**run) for run in json.loads(args.child)]))
        return
    import torch

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository's led
    from led.memory import estimate_peak_memory
    from led.models.families import config_from_dict

    cuda = args.device == "cuda"
    where = torch.cuda.get_device_name() if cuda else f"cpu, {args.threads} threads"
    print(f"shape={args.shape} {args.precision} on {where}: batch={args.batch_size} target={args.target_length} "
          f"globals={args.num_global} (LED) dropout={args.dropout} torch={torch.__version__}")
    extra = "reserved MB" if cuda else "glibc default" if args.glibc_default else ""
    header = (f"{'family':>9} {'tokens':>6} {'ckpt':>4} | {'measured MB':>11} {'estimate MB':>11} {'est/meas':>8} | "
              f"{'kept MB':>8} {'est':>8} | {'weights+opt MB':>14} {'est':>6} |"
              + (f" {extra:>13} |" if extra else "") + f" {'step s':>6} | estimated peak at")
    print(header)
    print("-" * len(header))
    families = list(FAMILY_SIZES) if args.family == "both" else [args.family]
    for family_name in families:
        config = model_config(family_name, args.shape, dropout=args.dropout)
        for length in args.lengths:
            for checkpointing in (False,) if args.no_checkpointing else (False, True):
                run = dict(config=config, batch_size=args.batch_size, input_length=length,
                           target_length=args.target_length, checkpointing=checkpointing, num_global=args.num_global,
                           precision=args.precision, device=args.device, threads=args.threads)
                result = measure(**run) if cuda else measure_in_subprocess([run])[0]
                estimate = estimate_peak_memory(config_from_dict(config), args.batch_size, length,
                                                args.target_length, precision=args.precision,
                                                gradient_checkpointing=checkpointing, num_global=args.num_global,
                                                device=args.device)
                _print_row(args, family_name, length, checkpointing, run, result, estimate)
                if cuda:
                    torch.cuda.empty_cache()
    if cuda:
        free, total = torch.cuda.mem_get_info()
        context = total - free - torch.cuda.memory_reserved()
        print(f"GPU memory in use outside PyTorch's allocator (CUDA context, libraries): {context / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
