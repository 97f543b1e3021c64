"""Throughput of the default run (`python train.py`): tokenisation (documents/s) and training (tokens/s).

Ours against `transformers` in the same process, on the default run's own data and batches:
  * tokenisation: our `tokenize_split` (the DataModule's `datasets.map`) against `BartTokenizerFast` on the same
    tokenizer files through the same `datasets.map`, single process, caching off; the ids must be equal;
  * training: forward + loss + backward + AdamW step of our LED against `transformers`' LED with the same weights
    on the same length-grouped batches the DataModule gives the default run (dropout as configured).

    python bench/bench_train.py                                  # the default config, 40 training steps
    python bench/bench_train.py --start 2600                     # ... of its long reports (after the curriculum's short ones)
    python bench/bench_train.py --steps 20 -- model.attention_window=128 data.batch_size=8   # train.py overrides

Tokens/s counts real (non-padding) encoder tokens plus target tokens; padding to the window is work both do.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import datasets
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict

from led.data.datamodule import SummarizationDataModule
from led.models.tokenizer import LEDTokenizer

ROOT = Path(__file__).resolve().parents[1]


def default_config(overrides: list[str], run_dir: Path) -> Any:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)
    return cfg


def bench_tokenisation(datamodule: SummarizationDataModule) -> None:
    import transformers

    from led.data.sources import tokenize_split

    raw = datasets.load_dataset("json", data_files=str(datamodule.source.files["train"]), split="train")
    ours_tokenizer = LEDTokenizer.from_pretrained(datamodule.tokenizer_path)
    reference = transformers.BartTokenizerFast.from_pretrained(datamodule.tokenizer_path)
    source, summary = datamodule.source_field, datamodule.summary_field
    max_in, max_out = datamodule.max_input_length, datamodule.max_target_length

    def reference_map(batch: dict[str, list[str]]) -> dict[str, Any]:
        inputs = reference(batch[source], max_length=max_in, truncation=True)
        labels = reference(text_target=batch[summary], max_length=max_out, truncation=True)
        return {"input_ids": inputs["input_ids"], "labels": labels["input_ids"]}

    datasets.disable_caching()  # both really tokenise, every repeat
    ours_times, reference_times = [], []
    for _ in range(2):
        start = time.perf_counter()
        ours = tokenize_split(raw, ours_tokenizer, source_field=source, summary_field=summary,
                              max_input_length=max_in, max_target_length=max_out, desc="ours")
        ours_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        theirs = raw.map(reference_map, batched=True, remove_columns=raw.column_names, desc="BartTokenizerFast")
        reference_times.append(time.perf_counter() - start)
    equal = ours["input_ids"] == theirs["input_ids"] and ours["labels"] == theirs["labels"]
    tokens = sum(map(len, ours["input_ids"])) + sum(map(len, ours["labels"]))
    t_ours, t_ref = min(ours_times), min(reference_times)
    print(f"\ntokenisation of the training split ({len(raw):,} documents, {tokens:,} tokens, 1 process)")
    print(f"{'':>18} | {'s':>6} {'docs/s':>8} {'tokens/s':>10}")
    print(f"{'ours':>18} | {t_ours:>6.2f} {len(raw) / t_ours:>8.0f} {tokens / t_ours:>10.0f}")
    print(f"{'BartTokenizerFast':>18} | {t_ref:>6.2f} {len(raw) / t_ref:>8.0f} {tokens / t_ref:>10.0f}")
    print(f"time ratio ours/transformers: {t_ours / t_ref:.2f}x; identical ids: {equal}")


def training_batches(datamodule: SummarizationDataModule, model: torch.nn.Module, steps: int,
                     start: int) -> list[dict[str, torch.Tensor]]:
    datamodule.match_model(model)
    datamodule.prepare_data()
    datamodule.setup("fit")
    batches = []
    for index, batch in enumerate(datamodule.train_dataloader()):
        if index < start:
            continue
        batches.append({k: batch[k] for k in ("input_ids", "attention_mask", "global_attention_mask", "labels")})
        if len(batches) == steps + 1:  # one warm-up step
            return batches
    return batches


def bench_training(cfg: Any, datamodule: SummarizationDataModule, steps: int, start: int) -> None:
    import transformers

    torch.manual_seed(cfg.seed)
    ours = instantiate(cfg.model, pretrained=None, gradient_checkpointing=False, _convert_="all")
    reference = transformers.LEDForConditionalGeneration(transformers.LEDConfig(**ours.config.to_dict()))
    reference.load_state_dict(ours.state_dict())
    batches = training_batches(datamodule, ours, steps, start)
    # Dropout draws differ between the two, so the losses are compared once, without it, before training.
    ours.eval(), reference.eval()
    with torch.no_grad():
        loss_difference = abs(ours(**batches[0]).loss.item() - reference(**batches[0]).loss.item())

    def run(model: torch.nn.Module) -> list[float]:
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=float(cfg.optimizer.lr))
        times = []
        for batch in batches:
            start = time.perf_counter()
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
        return times[1:]

    t_ours, t_ref = run(ours), run(reference)
    real = sum(int(b["attention_mask"].sum()) + int((b["labels"] != -100).sum()) for b in batches[1:])
    padded = sum(b["input_ids"].numel() + b["labels"].numel() for b in batches[1:])
    print(f"\ntraining: {len(batches) - 1} steps of the default run's batches from step {start} (batch {datamodule.batch_size}, "
          f"{real:,} real tokens, {padded:,} with padding), fp32, {torch.get_num_threads()} threads")
    print(f"{'':>13} | {'s/step':>7} {'tokens/s':>9}")
    for name, times in (("ours", t_ours), ("transformers", t_ref)):
        print(f"{name:>13} | {statistics.median(times):>7.3f} {real / sum(times):>9.0f}")
    print(f"time ratio ours/transformers: {sum(t_ours) / sum(t_ref):.2f}x; "
          f"loss difference on the first batch (no dropout): {loss_difference:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--start", type=int, default=0, help="measure from this step of the run's first epoch "
                        "(the default run's curriculum puts its long reports after step 2,500)")
    parser.add_argument("overrides", nargs="*", help="train.py overrides, after --")
    args = parser.parse_args()
    import transformers

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = default_config(args.overrides, Path(run_dir))
        start = time.perf_counter()
        # Building the DataModule generates the corpus if needed; its tokenizer is trained on first use.
        datamodule = instantiate(cfg.data, tokenizer_dir=str(Path(run_dir) / "tokenizer"), _convert_="all")
        _ = datamodule.tokenizer
        print(f"corpus + tokenizer ready in {time.perf_counter() - start:.1f} s; torch={torch.__version__} "
              f"transformers={transformers.__version__}")
        bench_tokenisation(datamodule)
        bench_training(cfg, datamodule, args.steps, args.start)


if __name__ == "__main__":
    main()
