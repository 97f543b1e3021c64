"""The page of an evaluation (evaluate.py's output_dir): ROUGE by source length for the model and the lead baseline
(metrics.json's `by_length`), generated against reference lengths, the share of inputs truncated, and the best,
median and worst examples (predictions.jsonl's per-example fields)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from led.report.page import (
    charts,
    empty_chart,
    figure_html,
    new_figure,
    note,
    page,
    section,
    table,
)

SHOWN = (("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeLsum", "ROUGE-Lsum"))
COLOURS = {"model": "#2171b5", "lead": "#fd8d3c"}


def is_evaluation(directory: Path) -> bool:
    return (directory / "metrics.json").is_file() and not (directory / "config.yaml").is_file()


def evaluation_page(directory: Path) -> str:
    metrics = json.loads((directory / "metrics.json").read_text())
    records = _read_jsonl(directory / "predictions.jsonl")
    return page(f"Evaluation {directory.name}", [
        section("ROUGE", overall_table(metrics)),
        section("ROUGE by source length", by_length_charts(metrics.get("by_length") or [])),
        section("Lengths", lengths_section(records)),
        section("Examples", examples_table(records)),
    ], subtitle=f"{metrics.get('source', '')} — {directory.resolve()}")


def overall_table(metrics: dict[str, Any]) -> str:
    systems = {"model": metrics, **(metrics.get("baselines") or {})}
    rows = []
    for name, result in systems.items():
        cells = [name, result.get("num_examples", "")]
        for key, _ in SHOWN:
            low = result.get(f"{key}_low")
            interval = f" [{low:.2f}, {result[f'{key}_high']:.2f}]" if low is not None else ""
            cells.append(f"{result[key]:.2f}{interval}")
        rows.append(cells)
    return table(["system", "n", *(label for _, label in SHOWN)], rows) + note(
        "F1 x100, mean over examples [bootstrap interval]")


def by_length_charts(buckets: list[dict[str, Any]]) -> str:
    if not buckets:
        return note("no by_length table in metrics.json: it needs the inputs' token counts, which evaluate.py records "
                    "when it generates (ckpt_path=), not when it scores a predictions file")
    labels = [f"Q{b['quartile']}\n{b['low']}-{b['high']}\n(n={b['count']})" for b in buckets]
    return charts(*(bucket_chart(buckets, labels, key, title) for key, title in SHOWN))


def bucket_chart(buckets: list[dict[str, Any]], labels: list[str], key: str, title: str) -> str:
    """Bars per quartile of input tokens, one per system, with the bootstrap interval as error bars."""
    figure, axes = new_figure()
    systems = list(buckets[0]["systems"])
    width = 0.8 / len(systems)
    for s, name in enumerate(systems):
        results = [bucket["systems"][name] for bucket in buckets]
        means = [r[key] for r in results]
        errors = None
        if f"{key}_low" in results[0]:
            errors = [[m - r[f"{key}_low"] for m, r in zip(means, results)],
                      [r[f"{key}_high"] - m for m, r in zip(means, results)]]
        positions = [i + (s - (len(systems) - 1) / 2) * width for i in range(len(buckets))]
        axes.bar(positions, means, width, yerr=errors, capsize=3, label=name, color=COLOURS.get(name))
    axes.set_xticks(range(len(buckets)), labels, fontsize=7)
    axes.set(title=f"{title} by input tokens", ylabel="F1 x100")
    axes.legend(fontsize=8)
    return figure_html(figure, f"{title} by source-length quartile")


def lengths_section(records: list[dict[str, Any]]) -> str:
    if not records:
        return note("no predictions.jsonl")
    parts = [charts(length_chart(records))]
    flags = [r["truncated"] for r in records if "truncated" in r]
    if flags:
        parts.append(note(f"{sum(flags)} of {len(flags)} inputs ({100 * sum(flags) / len(flags):.1f}%) were longer "
                          "than max_input_length and truncated: the model never saw their end"))
    return "\n".join(parts)


def length_chart(records: list[dict[str, Any]]) -> str:
    generated = [len(r["prediction"].split()) for r in records]
    reference = [len(r["reference"].split()) for r in records]
    if not any(generated) and not any(reference):
        return empty_chart("summary length", "all summaries are empty")
    figure, axes = new_figure()
    top = max(generated + reference) + 1
    bins = list(range(0, top + 1, max(1, top // 30)))
    axes.hist(reference, bins=bins, alpha=0.6, label=f"reference (mean {sum(reference) / len(reference):.1f})",
              color="#74c476")
    axes.hist(generated, bins=bins, alpha=0.6, label=f"generated (mean {sum(generated) / len(generated):.1f})",
              color=COLOURS["model"])
    axes.set(title="summary length", xlabel="words", ylabel="examples")
    axes.legend(fontsize=8)
    return figure_html(figure, "generated and reference summary lengths in words")


def examples_table(records: list[dict[str, Any]], per_kind: int = 2) -> str:
    """The best, median and worst examples by ROUGE-1 (a couple each): where the model works and where it fails."""
    scored = sorted((r for r in records if "rouge1" in r), key=lambda r: r["rouge1"], reverse=True)
    if not scored:
        return note("no per-example ROUGE in predictions.jsonl")
    middle = max(0, len(scored) // 2 - per_kind // 2)
    chosen: list[tuple[str, dict[str, Any]]] = []
    for kind, picked in (("best", scored[:per_kind]), ("median", scored[middle:middle + per_kind]),
                         ("worst", scored[-per_kind:])):
        chosen += [(kind, r) for r in picked if all(r is not other for _, other in chosen)]
    rows = [(kind, r.get("id", ""), f"{r['rouge1']:.1f}", r.get("input_tokens", ""),
             r.get("document_start", "") + "…", r["reference"], r["prediction"] or "(empty)")
            for kind, r in chosen]
    return table(["", "id", "ROUGE-1", "input tokens", "document start", "reference", "prediction"], rows,
                 text_columns=(4, 5, 6))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
