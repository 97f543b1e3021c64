"""Token lengths of a data config, read with the model's tokenizer: how long sources and summaries are, how many are
cut by max_input_length / max_target_length, and how much of each batch is padding.

`python -m led.stats [data=NAME] [model=NAME] [data.KEY=V ...] [split=train] [output_dir=DIR]` composes conf/config.yaml
as train.py does (any override train.py takes), tokenises the split as training would (cached: a later training run
reuses it) and prints a table; output_dir (default outputs/stats/<time>) receives stats.json and stats.html, with
histograms. A model trained from scratch gets its tokenizer trained into output_dir/tokenizer, as a run would.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from led.cli import UsageError
from led.errors import UserError
from led.files import write_text_atomically

ROOT = Path(__file__).resolve().parents[1]
PERCENTILES = (50, 90, 95, 99)
OWN_KEYS = ("split", "output_dir")  # the tool's own settings; every other argument is a Hydra override


@dataclass
class LengthStats:
    """Percentiles of one text field's untruncated token counts and the share above its limit."""

    p50: float
    p90: float
    p95: float
    p99: float
    max: int
    limit: int
    beyond_limit: float  # share of records longer than `limit` (truncated when training)

    @classmethod
    def of(cls, lengths: np.ndarray, limit: int) -> LengthStats:
        p50, p90, p95, p99 = (float(v) for v in np.percentile(lengths, PERCENTILES))
        return cls(p50, p90, p95, p99, int(lengths.max()), limit, float((lengths > limit).mean()))


def compose_config(overrides: list[str]) -> Any:
    """conf/config.yaml with `overrides`, as train.py composes it; a bad override is one UsageError."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return compose("config", overrides=overrides)
    except HydraException as error:  # unknown group option, key or override syntax
        raise UsageError(" ".join(str(error).split())) from None


def length_stats(cfg: Any, split: str, output_dir: Path) -> dict[str, Any]:
    """Token lengths and batching padding of `split` of `cfg.data` (see the module docstring)."""
    import datasets
    from omegaconf import OmegaConf

    from led.instantiate import build
    from led.training.module import model_skeleton

    # A tokenizer is trained into output_dir only for a model that has none (the data then names no tokenizer).
    trains = not cfg.data.get("tokenizer")
    datamodule = build("data", cfg.data, tokenizer_dir=str(output_dir / "tokenizer") if trains else None,
                       _convert_="all")
    # The model's family (its tokenizer), padding multiple and limits, from its config alone (no weights).
    datamodule.match_model(model_skeleton(OmegaConf.to_container(cfg.model, resolve=True)))
    multiple = datamodule.pad_to_multiple_of
    tokenizer = datamodule.tokenizer
    documents, summaries = datamodule.documents(split), datamodule.references(split)  # tokenises: bars
    batched = [int(n) for n in datamodule.dataset(split)["length"]]  # truncated, as batches hold them

    def count(batch: dict[str, list[str]]) -> dict[str, list[int]]:
        return {"source": [len(ids) for ids in tokenizer.encode_batch(batch["source"])],
                "summary": [len(ids) for ids in tokenizer.encode_batch(batch["summary"])]}

    counted = datasets.Dataset.from_dict({"source": documents, "summary": summaries}).map(
        count, batched=True, desc="Counting untruncated tokens")
    source, summary = np.asarray(counted["source"]), np.asarray(counted["summary"])
    return {
        "split": split, "records": len(source), "pad_to_multiple_of": multiple,
        "source": asdict(LengthStats.of(source, datamodule.max_input_length)),
        "summary": asdict(LengthStats.of(summary, datamodule.max_target_length)),
        "padding": padding_waste(batched, datamodule, multiple),
        "lengths": {"source": source.tolist(), "summary": summary.tolist()},
    }


def padding_waste(lengths: list[int], datamodule: Any, multiple: int) -> dict[str, float]:
    """Padded tokens / real tokens of the training batches (LengthGroupedBatchSampler, the run's settings), and of
    the same batches unsorted: what length grouping saves."""
    from led.data.batching import LengthGroupedBatchSampler, round_up

    waste = {}
    for name, grouped in (("length_grouped", True), ("random", False)):
        sampler = LengthGroupedBatchSampler(lengths, datamodule.batch_size, max_tokens=datamodule.max_tokens_per_batch,
                                            pad_to_multiple_of=multiple, shuffle=True, group_by_length=grouped,
                                            seed=datamodule.seed)
        padded = sum(len(batch) * round_up(max(lengths[i] for i in batch), multiple) for batch in sampler)
        waste[name] = (padded - sum(lengths)) / max(1, sum(lengths))
    waste["configured"] = waste["length_grouped" if datamodule.group_by_length else "random"]
    return waste


def format_stats(stats: dict[str, Any]) -> str:
    header = f"{'tokens':<9}" + "".join(f"{f'p{p}':>9}" for p in PERCENTILES) + f"{'max':>9}{'limit':>9}{'beyond':>9}"
    rows = [f"{stats['split']} split, {stats['records']} records (untruncated token counts)", header]
    for field in ("source", "summary"):
        s = stats[field]
        rows.append(f"{field:<9}" + "".join(f"{s[f'p{p}']:>9.0f}" for p in PERCENTILES)
                    + f"{s['max']:>9}{s['limit']:>9}{100 * s['beyond_limit']:>8.1f}%")
    padding = stats["padding"]
    rows.append(f"padding of training batches (padded / real input tokens): {100 * padding['configured']:.1f}% "
                f"(length-grouped {100 * padding['length_grouped']:.1f}%, random {100 * padding['random']:.1f}%)")
    return "\n".join(rows)


def stats_page(stats: dict[str, Any]) -> str:
    from led.report.page import (
        charts,
        figure_html,
        new_figure,
        note,
        page,
        section,
        table,
    )

    figures = []
    for field, limit_name in (("source", "max_input_length"), ("summary", "max_target_length")):
        figure, axes = new_figure(5.4, 3.2)
        axes.hist(stats["lengths"][field], bins=40, color="#6baed6")
        limit = stats[field]["limit"]
        axes.axvline(limit, color="#cb181d", linestyle="--", label=f"{limit_name}={limit}")
        axes.set(title=f"{field} tokens ({100 * stats[field]['beyond_limit']:.1f}% beyond the limit)",
                 xlabel="tokens (untruncated)", ylabel="records")
        axes.legend(fontsize=8)
        figures.append(figure_html(figure, f"histogram of {field} token counts"))
    rows = [[field, *(f"{stats[field][f'p{p}']:.0f}" for p in PERCENTILES), stats[field]["max"], stats[field]["limit"],
             f"{100 * stats[field]['beyond_limit']:.1f}%"] for field in ("source", "summary")]
    padding = stats["padding"]
    return page(f"Token lengths: {stats['split']} split", [
        section("Histograms", charts(*figures)),
        section("Percentiles", table(["tokens", *(f"p{p}" for p in PERCENTILES), "max", "limit", "beyond"], rows)),
        section("Padding", note(f"training batches hold {100 * padding['configured']:.1f}% padding (padded / real "
                                f"input tokens, padded to multiples of {stats['pad_to_multiple_of']}); length-grouped "
                                f"{100 * padding['length_grouped']:.1f}%, random {100 * padding['random']:.1f}%")),
    ], subtitle=f"{stats['records']} records")


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("-h", "--help", "help") for arg in args):
        print(__doc__)
        return
    own = {key: value for key, _, value in (arg.partition("=") for arg in args) if key in OWN_KEYS}
    overrides = [arg for arg in args if arg.partition("=")[0] not in OWN_KEYS]
    output_dir = Path(own.get("output_dir") or f"outputs/stats/{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    try:
        stats = length_stats(compose_config(overrides), own.get("split", "train"), output_dir)
        write_text_atomically(output_dir / "stats.json", json.dumps(stats) + "\n", what="length statistics")
        write_text_atomically(output_dir / "stats.html", stats_page(stats), what="length statistics page")
    except UserError as error:
        print(f"led.stats: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(format_stats(stats))
    print(f"wrote {output_dir / 'stats.html'}")


if __name__ == "__main__":
    main()
