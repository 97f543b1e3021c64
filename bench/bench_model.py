"""One training step (forward + loss + backward) of our model against `transformers`', for LED or PEGASUS-X.

Time: same weights, same inputs, same process, ours and theirs alternating (median of `--repeats` after one
warm-up step of each). Memory, in a fresh process per model that builds it and runs a warm-up and a measured step:
"RSS" is the peak resident set (VmHWM) of the process, what a user sees; "ten" the peak bytes of live tensors
during the measured step (weights, gradients, activations, working memory), what the model itself decides.
Prints both per encoder length, with ratios (ours / transformers').

    python bench/bench_model.py                       # LED, small shape, 1,024 .. 16,384 tokens, fp32, CPU
    python bench/bench_model.py --family pegasus_x --lengths 2048 16384
    python bench/bench_model.py --shape base --lengths 1024 4096
    python bench/bench_model.py --device cuda --dtype bf16

On CUDA both memory columns are torch.cuda.max_memory_allocated over the two steps (in the fresh process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from led import (
    LEDConfig,
    LEDForConditionalGeneration,
    PegasusXConfig,
    PegasusXForConditionalGeneration,
)

_SMALL = dict(d_model=256, encoder_layers=4, decoder_layers=4, encoder_attention_heads=4, decoder_attention_heads=4,
              encoder_ffn_dim=1024, decoder_ffn_dim=1024)
# family -> shape name -> config fields (the same for both implementations)
SHAPES = {
    "led": {"small": dict(_SMALL, attention_window=512),
            "base": LEDConfig.from_name("led-base-16384").__dict__ | {"extra": {}}},
    # README.md ("The model") compares with transformers' figures at this small shape.
    "pegasus_x": {"small": dict(_SMALL, block_size=512, num_global_tokens=128, vocab_size=96103,
                                activation_function="relu"),
                  "base": PegasusXConfig.from_name("pegasus-x-base").__dict__ | {"extra": {}}},
}


def build(family: str, implementation: str, shape: str, max_length: int) -> torch.nn.Module:
    """Our (`implementation="ours"`) or transformers' model of `family` in train mode, seed-0 random weights.
    Ours never imports `transformers`' model code (~130 MB of RSS for PEGASUS-X), as a user's process would not."""
    fields = {k: v for k, v in SHAPES[family][shape].items() if k != "extra"} | dict(dropout=0.0)
    if family == "led":
        fields["max_encoder_position_embeddings"] = max(16384, max_length)
    if implementation == "ours":
        model_class, config_class = ((LEDForConditionalGeneration, LEDConfig) if family == "led" else
                                     (PegasusXForConditionalGeneration, PegasusXConfig))
    else:
        import transformers

        model_class, config_class = ((transformers.LEDForConditionalGeneration, transformers.LEDConfig)
                                     if family == "led" else
                                     (transformers.PegasusXForConditionalGeneration, transformers.PegasusXConfig))
    torch.manual_seed(0)
    return model_class(config_class(**fields)).train()


def make_batch(family: str, vocab_size: int, length: int, target_length: int, device: str) -> dict:
    """One random document of `length` tokens and `target_length` labels; LED's first token is global."""
    gen = torch.Generator().manual_seed(length)
    input_ids = torch.randint(4, vocab_size, (1, length), generator=gen)
    batch = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                 labels=torch.randint(4, vocab_size, (1, target_length), generator=gen))
    if family == "led":
        batch["global_attention_mask"] = torch.zeros_like(input_ids)
        batch["global_attention_mask"][:, 0] = 1
    return {k: v.to(device) for k, v in batch.items()}


def train_step(model: torch.nn.Module, batch: dict, dtype: torch.dtype, device: str) -> float:
    model.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
        loss = model(**batch).loss
    loss.backward()
    loss = loss.item()  # waits for the device
    model.zero_grad(set_to_none=True)
    return loss


def timed(models: list[torch.nn.Module], batch: dict, dtype: torch.dtype, device: str,
          repeats: int) -> tuple[list[float], list[float]]:
    """Median seconds of a step of each model after one warm-up step of each, and their last losses; the models
    alternate, so that a change in the machine's load hits them alike."""
    losses = [train_step(model, batch, dtype, device) for model in models]
    times: list[list[float]] = [[] for _ in models]
    for _ in range(repeats):
        for i, model in enumerate(models):
            start = time.perf_counter()
            losses[i] = train_step(model, batch, dtype, device)
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times], losses


def _vm_hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not in /proc/self/status")


def tensor_peak(step: Callable[[], object], live: list[torch.Tensor]) -> int:
    """Peak bytes held by the CPU allocator while `step()` runs: what is alive when it starts (`live`: weights,
    inputs) plus the running sum of the allocations and frees the profiler records (tensors and the kernels'
    scratch buffers alike). RSS adds the process (torch's code, the interpreter) and what the C allocator keeps
    beyond them. The profiler, unlike a Python dispatch mode, leaves autograd's in-place gradient accumulation
    as it is."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    current = peak = sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in live}.values())
    for _, change in events:
        current += change
        peak = max(peak, current)
    return peak


def peak_memory(run: dict) -> dict[str, int]:
    """Called in a fresh process: the peak bytes of the process (CPU: VmHWM; CUDA: allocated) over building one
    model and running a warm-up and a measured step, and (CPU) the peak bytes of tensors of one more step."""
    torch.set_num_threads(run["threads"])
    dtype = torch.bfloat16 if run["dtype"] == "bf16" else torch.float32
    model = build(run["family"], run["implementation"], run["shape"], run["length"]).to(run["device"])
    batch = make_batch(run["family"], model.config.vocab_size, run["length"], run["target_length"], run["device"])
    if run["device"] == "cuda":
        torch.cuda.reset_peak_memory_stats()
        for _ in range(2):
            train_step(model, batch, dtype, run["device"])
        return dict(process=torch.cuda.max_memory_allocated(), tensors=torch.cuda.max_memory_allocated())
    for _ in range(2):
        train_step(model, batch, dtype, run["device"])
    process = _vm_hwm_bytes()
    tensors = tensor_peak(lambda: train_step(model, batch, dtype, run["device"]),
                          [*model.parameters(), *model.buffers(), *batch.values()])
    return dict(process=process, tensors=tensors)


def peak_memory_in_subprocess(run: dict) -> dict[str, int]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(run)], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"memory measurement of {run} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _pair(ours: float | None, theirs: float | None, fmt: str) -> str:
    """`ours theirs ours/theirs`, with dashes for what was not measured."""
    width = len(fmt.format(0.0))
    cells = [fmt.format(v) if v is not None else "-".rjust(width) for v in (ours, theirs)]
    ratio = f"{ours / theirs:>6.2f}" if ours is not None and theirs is not None else f"{'-':>6}"
    return " ".join([*cells, ratio])


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=list(SHAPES), default="led")
    parser.add_argument("--shape", choices=["small", "base"], default="small")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--target-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory measurements")
    parser.add_argument("--skip-transformers-above", type=int, default=1 << 30,
                        help="lengths above this run ours only (the reference may not fit)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = _parse_args()
    if args.child:
        print(json.dumps(peak_memory(json.loads(args.child))))
        return
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    hf = build(args.family, "transformers", args.shape, max(args.lengths)).to(args.device)
    ours = build(args.family, "ours", args.shape, max(args.lengths)).to(args.device)
    ours.load_state_dict(hf.state_dict())

    print(f"family={args.family} shape={args.shape} dtype={args.dtype} device={args.device} threads={args.threads} "
          f"target={args.target_length} repeats={args.repeats} torch={torch.__version__} "
          f"transformers={transformers.__version__}")
    header = (f"{'tokens':>7} | {'ours s':>7} {'hf s':>7} {'time x':>6} | {'ours RSS':>8} {'hf RSS':>8} {'RSS x':>6} | "
              f"{'ours ten':>8} {'hf ten':>8} {'ten x':>6} | {'ours ms/ktok':>12} | {'loss diff':>9}")
    print(header)
    print("-" * len(header))
    per_token = {}
    for length in args.lengths:
        batch = make_batch(args.family, ours.config.vocab_size, length, args.target_length, args.device)
        with_hf = length <= args.skip_transformers_above
        seconds, losses = timed([ours, hf] if with_hf else [ours], batch, dtype, args.device, args.repeats)
        per_token[length] = seconds[0] / length
        memory = {}
        for implementation in ("ours", "transformers") if with_hf else ("ours",):
            if not args.no_memory:
                memory[implementation] = peak_memory_in_subprocess(dict(
                    family=args.family, implementation=implementation, shape=args.shape, length=length,
                    target_length=args.target_length, device=args.device, dtype=args.dtype, threads=args.threads))
        cells = [f"{length:>7}", _pair(seconds[0], seconds[1] if with_hf else None, "{:>7.3f}")]
        for kind in ("process", "tensors"):
            values = [memory[k][kind] / 2**20 if k in memory else None for k in ("ours", "transformers")]
            cells.append(_pair(*values, "{:>8.0f}"))
        loss_diff = f"{abs(losses[0] - losses[1]):>9.1e}" if with_hf else f"{'-':>9}"
        cells += [f"{1e6 * seconds[0] / length:>12.2f}", loss_diff]
        print(" | ".join(cells), flush=True)
    if 2048 in per_token and len(per_token) > 1:
        longest = max(per_token)
        print(f"time per token at {longest} / at 2048: {per_token[longest] / per_token[2048]:.2f}x (ours)")


if __name__ == "__main__":
    main()
