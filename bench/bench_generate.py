"""Generation (encoder once + token-by-token decoding) of our model against `transformers`', LED or PEGASUS-X.

Same random weights, same input, same process. Each case is timed after one warm-up run of each, as the
median of `--repeats` runs (ours and theirs alternating), and the two outputs must be equal token for token
(the script stops with an error where they are not).

    python bench/bench_generate.py                    # 4,096-token input, greedy 128 and beam-4 64 tokens
    python bench/bench_generate.py --length 1024 --repeats 5
    python bench/bench_generate.py --family pegasus_x     # the small shape: blocks of 512, 128 global tokens
    python bench/bench_generate.py --cases beam --profile   # and where our beam search spends its time
    python bench/bench_generate.py --device cuda --family pegasus_x

On CUDA each timed run ends with a device synchronize, so the seconds are the whole generation's.

EOS is banned until the last step (min_new_tokens = max_new_tokens), so both implementations generate
exactly the requested number of tokens whatever the random weights prefer.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from led import (
    LEDConfig,
    LEDForConditionalGeneration,
    PegasusXConfig,
    PegasusXForConditionalGeneration,
)

_SMALL = dict(d_model=256, encoder_layers=4, decoder_layers=4, encoder_attention_heads=4, decoder_attention_heads=4,
              encoder_ffn_dim=1024, decoder_ffn_dim=1024, dropout=0.0)
# family -> the small shape's config fields (the same for both implementations)
SMALL = {
    "led": dict(_SMALL, vocab_size=50265, attention_window=512, max_encoder_position_embeddings=16384,
                max_decoder_position_embeddings=1024),
    "pegasus_x": dict(_SMALL, vocab_size=96103, block_size=512, num_global_tokens=128, activation_function="relu"),
}

# name -> (description, generate() arguments)
CASES = {
    "greedy": ("greedy, 128 new tokens", dict(num_beams=1, max_new_tokens=128, min_new_tokens=128)),
    "beam": ("beam 4, 64 new tokens", dict(num_beams=4, max_new_tokens=64, min_new_tokens=64)),
}


def _synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; the CPU needs nothing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_pair(ours: Callable[[], Tensor], reference: Callable[[], Tensor],
               repeats: int, device: torch.device) -> tuple[list[float], list[Tensor]]:
    """Median seconds of `repeats` calls of each, after one warm-up call of each, and their last outputs.

    The two alternate, so that a change in the machine's load hits both alike."""
    outputs = [ours(), reference()]
    times: list[list[float]] = [[], []]
    for _ in range(repeats):
        for i, fn in enumerate((ours, reference)):
            _synchronize(device)
            start = time.perf_counter()
            outputs[i] = fn()
            _synchronize(device)
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times], outputs


def profile(fn: Callable[[], Tensor], rows: int = 15) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def build_pair(family: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """transformers' and our small model of `family` in eval mode, with the same seed-0 random weights."""
    import transformers

    if family == "led":
        theirs, ours = transformers.LEDForConditionalGeneration, LEDForConditionalGeneration
        their_config, our_config = transformers.LEDConfig, LEDConfig
    else:
        theirs, ours = transformers.PegasusXForConditionalGeneration, PegasusXForConditionalGeneration
        their_config, our_config = transformers.PegasusXConfig, PegasusXConfig
    torch.manual_seed(0)
    hf = theirs(their_config(**SMALL[family])).eval()
    model = ours(our_config(**SMALL[family])).eval()
    model.load_state_dict(hf.state_dict())
    return hf, model


def make_inputs(family: str, length: int) -> dict[str, Tensor]:
    """One random document; LED's starts with <s> (id 0), its one global token (PEGASUS-X has none: 0 is pad)."""
    gen = torch.Generator().manual_seed(length)
    input_ids = torch.randint(4, SMALL[family]["vocab_size"], (1, length), generator=gen)
    inputs = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
    if family == "led":
        input_ids[:, 0] = 0
        inputs["global_attention_mask"] = torch.zeros_like(input_ids)
        inputs["global_attention_mask"][:, 0] = 1
    return inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=list(SMALL), default="led")
    parser.add_argument("--length", type=int, default=4096, help="input tokens (batch of 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--profile", action="store_true", help="profile one run of ours per case")
    args = parser.parse_args()
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    hf, ours = (model.to(device) for model in build_pair(args.family))
    inputs = {name: tensor.to(device) for name, tensor in make_inputs(args.family, args.length).items()}

    print(f"{args.family}: input={args.length} tokens, batch 1, {device.type}, threads={args.threads}, "
          f"median of {args.repeats} after a warm-up, torch={torch.__version__} "
          f"transformers={transformers.__version__}")
    header = f"{'case':<24} | {'ours s':>7} {'HF s':>7} {'ours/HF':>7} | identical"
    print(header)
    print("-" * len(header))
    for name in args.cases:
        description, kwargs = CASES[name]
        run_ours = functools.partial(ours.generate, **inputs, **kwargs)
        run_hf = functools.partial(hf.generate, **inputs, **kwargs, do_sample=False)
        with torch.inference_mode():
            (t_ours, t_hf), (out_ours, out_hf) = timed_pair(run_ours, run_hf, args.repeats, device)
        same = out_ours.shape == out_hf.shape and torch.equal(out_ours, out_hf)
        print(f"{description:<24} | {t_ours:>7.2f} {t_hf:>7.2f} {t_ours / t_hf:>7.2f} | {'yes' if same else 'no'}",
              flush=True)
        if not same:
            raise RuntimeError(f"{description}: our output differs from transformers'\n{out_ours}\n{out_hf}")
        if args.profile:
            with torch.inference_mode():
                profile(run_ours)


if __name__ == "__main__":
    main()
