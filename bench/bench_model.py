"""One training step (forward + loss + backward) of our LED against `transformers`' LED.

Same weights, same inputs, same process; prints time and peak memory per encoder length with ratios.

    python bench/bench_model.py                       # small shape, 1,024 .. 16,384 tokens, fp32, CPU
    python bench/bench_model.py --shape base --lengths 1024 4096
    python bench/bench_model.py --device cuda --dtype bf16

CPU peak memory is the rise of the process's resident-set high-water mark over the step (reset before
each step through /proc/self/clear_refs); on CUDA it is torch.cuda.max_memory_allocated over the step.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import torch

from led import LEDConfig, LEDForConditionalGeneration

SHAPES = {
    "small": dict(d_model=256, encoder_layers=4, decoder_layers=4, encoder_attention_heads=4,
                  decoder_attention_heads=4, encoder_ffn_dim=1024, decoder_ffn_dim=1024, attention_window=512),
    "base": LEDConfig.from_name("led-base-16384").__dict__ | {"extra": {}},
}


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakMemory:
    """Peak bytes allocated above the starting point during the `with` block."""

    def __init__(self, device: str):
        self.device = device

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            self.start = _rss_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.start
        else:
            self.peak = _rss_kib("VmHWM") * 1024 - self.start


def train_step(model: torch.nn.Module, batch: dict, dtype: torch.dtype, device: str) -> float:
    model.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
        loss = model(**batch).loss
    loss.backward()
    return loss.item()


def measure(model, batch, dtype, device, repeats):
    train_step(model, batch, dtype, device)  # warm-up: kernels, allocator
    times, peaks = [], []
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        with PeakMemory(device) as mem:
            start = time.perf_counter()
            loss = train_step(model, batch, dtype, device)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        peaks.append(mem.peak)
    model.zero_grad(set_to_none=True)
    return statistics.median(times), max(peaks), loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(SHAPES), default="small")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--target-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-transformers-above", type=int, default=1 << 30,
                        help="lengths above this run ours only (the reference may not fit)")
    args = parser.parse_args()
    import transformers

    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    shape = {k: v for k, v in SHAPES[args.shape].items() if k != "extra"}
    shape |= dict(dropout=0.0, max_encoder_position_embeddings=max(16384, max(args.lengths)))
    torch.manual_seed(0)
    hf = transformers.LEDForConditionalGeneration(transformers.LEDConfig(**shape)).to(args.device).train()
    ours = LEDForConditionalGeneration(LEDConfig(**shape)).to(args.device).train()
    ours.load_state_dict(hf.state_dict())
    transformers.logging.set_verbosity_error()

    print(f"shape={args.shape} dtype={args.dtype} device={args.device} threads={args.threads} "
          f"target={args.target_length} torch={torch.__version__} transformers={transformers.__version__}")
    header = (f"{'tokens':>7} | {'ours s':>7} {'hf s':>7} {'time x':>6} | {'ours MB':>8} {'hf MB':>8} "
              f"{'mem x':>6} | {'ours ms/ktok':>12} | {'loss diff':>9}")
    print(header)
    print("-" * len(header))
    per_token = {}
    for length in args.lengths:
        gen = torch.Generator().manual_seed(length)
        input_ids = torch.randint(4, shape["vocab_size"] if "vocab_size" in shape else 50265, (1, length),
                                  generator=gen).to(args.device)
        global_mask = torch.zeros_like(input_ids)
        global_mask[:, 0] = 1
        labels = torch.randint(4, 50265, (1, args.target_length), generator=gen).to(args.device)
        batch = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                     global_attention_mask=global_mask, labels=labels)
        t_ours, m_ours, loss_ours = measure(ours, batch, dtype, args.device, args.repeats)
        per_token[length] = t_ours / length
        if length <= args.skip_transformers_above:
            t_hf, m_hf, loss_hf = measure(hf, batch, dtype, args.device, args.repeats)
            print(f"{length:>7} | {t_ours:>7.2f} {t_hf:>7.2f} {t_ours / t_hf:>6.2f} | {m_ours / 2**20:>8.0f} "
                  f"{m_hf / 2**20:>8.0f} {m_ours / m_hf:>6.2f} | {1e6 * t_ours / length:>12.2f} | "
                  f"{abs(loss_ours - loss_hf):>9.1e}")
        else:
            print(f"{length:>7} | {t_ours:>7.2f} {'-':>7} {'-':>6} | {m_ours / 2**20:>8.0f} {'-':>8} {'-':>6} | "
                  f"{1e6 * t_ours / length:>12.2f} | {'-':>9}")
    if 2048 in per_token:
        longest = max(per_token)
        print(f"time per token at {longest} / at 2048: {per_token[longest] / per_token[2048]:.2f}x (ours)")


if __name__ == "__main__":
    main()
