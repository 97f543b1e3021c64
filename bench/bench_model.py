"""One training step (forward + loss + backward) of our model against `transformers`', for LED or PEGASUS-X.

Time: same weights, same inputs, same process, ours and theirs alternating (median of `--repeats` after one
warm-up step of each). Memory: the peak resident set (VmHWM) of a fresh process that builds the one model and
runs a warm-up and a measured step, what a user sees. Prints both per encoder length, with ratios.

    python bench/bench_model.py                       # LED, small shape, 1,024 .. 16,384 tokens, fp32, CPU
    python bench/bench_model.py --family pegasus_x --lengths 2048 16384
    python bench/bench_model.py --shape base --lengths 1024 4096
    python bench/bench_model.py --device cuda --dtype bf16

On CUDA the memory column is torch.cuda.max_memory_allocated over the measured step (in the fresh process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

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
    # DESIGN.md's "Measured on this kind of machine" lists transformers' figures for this small shape.
    "pegasus_x": {"small": dict(_SMALL, block_size=512, num_global_tokens=128, vocab_size=96103),
                  "base": PegasusXConfig.from_name("pegasus-x-base").__dict__ | {"extra": {}}},
}


def build(family: str, implementation: str, shape: str, max_length: int) -> torch.nn.Module:
    """Our (`implementation="ours"`) or transformers' model of `family` in train mode, seed-0 random weights."""
    import transformers

    fields = {k: v for k, v in SHAPES[family][shape].items() if k != "extra"} | dict(dropout=0.0)
    if family == "led":
        fields["max_encoder_position_embeddings"] = max(16384, max_length)
        ours, theirs = (LEDForConditionalGeneration, LEDConfig), (transformers.LEDForConditionalGeneration,
                                                                  transformers.LEDConfig)
    else:
        ours, theirs = (PegasusXForConditionalGeneration, PegasusXConfig), (
            transformers.PegasusXForConditionalGeneration, transformers.PegasusXConfig)
    model_class, config_class = ours if implementation == "ours" else theirs
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


def peak_memory(run: dict) -> int:
    """Called in a fresh process: peak bytes of the process (CPU) or allocated (CUDA) over building one model
    and running a warm-up and a measured step."""
    torch.set_num_threads(run["threads"])
    dtype = torch.bfloat16 if run["dtype"] == "bf16" else torch.float32
    model = build(run["family"], run["implementation"], run["shape"], run["length"]).to(run["device"])
    batch = make_batch(run["family"], model.config.vocab_size, run["length"], run["target_length"], run["device"])
    if run["device"] == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        train_step(model, batch, dtype, run["device"])
    return torch.cuda.max_memory_allocated() if run["device"] == "cuda" else _vm_hwm_bytes()


def peak_memory_in_subprocess(run: dict) -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(run)], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"memory measurement of {run} failed:\n{done.stderr[-3000:]}")
    return int(done.stdout.strip().splitlines()[-1])


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
        print(peak_memory(json.loads(args.child)))
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
    header = (f"{'tokens':>7} | {'ours s':>7} {'hf s':>7} {'time x':>6} | {'ours MB':>8} {'hf MB':>8} "
              f"{'mem x':>6} | {'ours ms/ktok':>12} | {'loss diff':>9}")
    print(header)
    print("-" * len(header))
    per_token = {}
    for length in args.lengths:
        batch = make_batch(args.family, ours.config.vocab_size, length, args.target_length, args.device)
        with_hf = length <= args.skip_transformers_above
        seconds, losses = timed([ours, hf] if with_hf else [ours], batch, dtype, args.device, args.repeats)
        t_ours, loss_ours = seconds[0], losses[0]
        if with_hf:
            t_hf, loss_hf = seconds[1], losses[1]
        per_token[length] = t_ours / length
        memory = {}
        for implementation in ("ours", "transformers") if with_hf else ("ours",):
            if not args.no_memory:
                memory[implementation] = peak_memory_in_subprocess(dict(
                    family=args.family, implementation=implementation, shape=args.shape, length=length,
                    target_length=args.target_length, device=args.device, dtype=args.dtype, threads=args.threads))
        m_ours, m_hf = (f"{memory[k] / 2**20:>8.0f}" if k in memory else f"{'-':>8}" for k in ("ours", "transformers"))
        m_ratio = f"{memory['ours'] / memory['transformers']:>6.2f}" if len(memory) == 2 else f"{'-':>6}"
        hf_cells = (f"{t_hf:>7.2f} {t_ours / t_hf:>6.2f}", f"{abs(loss_ours - loss_hf):>9.1e}") if with_hf else (
            f"{'-':>7} {'-':>6}", f"{'-':>9}")
        print(f"{length:>7} | {t_ours:>7.2f} {hf_cells[0]} | {m_ours} {m_hf} {m_ratio} | "
              f"{1e6 * t_ours / length:>12.2f} | {hf_cells[1]}", flush=True)
    if 2048 in per_token and len(per_token) > 1:
        longest = max(per_token)
        print(f"time per token at {longest} / at 2048: {per_token[longest] / per_token[2048]:.2f}x (ours)")


if __name__ == "__main__":
    main()
