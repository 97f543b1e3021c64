"""ROUGE for summarization, computed by `rouge-score` itself, with bootstrap confidence intervals.

Scores are `rouge_score.rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=True)` F1 values ×100, one per
example; the corpus score is their plain mean (what `evaluate.load("rouge")` reports with
`use_aggregator=False` and a mean), and the interval is a percentile bootstrap over examples.

ROUGE-Lsum is summary-level LCS over *newline-separated* sentences. A text without newlines is one
"sentence" to `rouge-score`, which silently turns ROUGE-Lsum into ROUGE-L (allenai/PRIMER #12 reports 27.5
instead of 41.8 on the same outputs). So a text that has no newline is split with `split_sentences` first;
a text that already has newlines is taken as given. ROUGE-1/2/L are unaffected: the tokenizer treats a
newline as a space.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from led.errors import ConfigError, DataError

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_DISPLAY_NAMES = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}

# Words that end in a period without ending a sentence (lower-case, without the final period).
# Kept short on purpose: these are the ones common in news and scientific prose.
_ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "cf", "e.g", "i.e", "al", "fig", "figs",
        "eq", "eqs", "ref", "refs", "sec", "no", "nos", "vol", "pp", "ch", "approx", "inc", "ltd", "co", "corp",
        "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "gen", "gov", "sen",
        "rep", "lt", "col", "sgt",
    }
)
# A candidate boundary: sentence punctuation, optional closing quotes/brackets, then whitespace.
_BOUNDARY = re.compile(r"[.!?]+[\"'”’)\]]*\s+")
_NEXT_STARTS_SENTENCE = re.compile(r"[\"'“‘(\[]?[A-Z0-9]")
_NEXT_STARTS_SENTENCE_LOWERCASED = re.compile(r"[\"'“‘(\[]?[a-z0-9]")
_INITIALS = re.compile(r"(?:[A-Za-z]\.)+")  # "J." or "U.S." : initials, not sentence ends


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences with a deterministic rule; needs no download (unlike nltk's punkt).

    A sentence ends at `.`, `!` or `?` (plus any closing quote or bracket) followed by whitespace and a
    capital letter or digit, unless the word before the period is a known abbreviation ("Dr.", "e.g.",
    "et al.", "Fig.") or initials ("J.", "U.S."). Corpora that are lower-cased throughout (arXiv and PubMed
    as distributed) have no capitals to go by, so in a text without any capital letter a lower-case
    letter may start a sentence too. Existing newlines also end sentences.
    """
    next_starts = _NEXT_STARTS_SENTENCE if any(c.isupper() for c in text) else _NEXT_STARTS_SENTENCE_LOWERCASED
    sentences: list[str] = []
    for line in text.split("\n"):
        start = 0
        for match in _BOUNDARY.finditer(line):
            if not next_starts.match(line, match.end()) or _ends_with_abbreviation(line[: match.end()]):
                continue
            sentences.append(line[start : match.end()].strip())
            start = match.end()
        sentences.append(line[start:].strip())
    return [s for s in sentences if s]


def _ends_with_abbreviation(prefix: str) -> bool:
    """Whether the last word of `prefix` (which ends at a candidate boundary) is an abbreviation."""
    words = prefix.split()
    word = words[-1].rstrip("\"'”’)]") if words else ""
    if not word.endswith(".") or word.endswith(".."):
        return False
    stem = word.lstrip("\"'“‘([")[:-1]
    return stem.lower() in _ABBREVIATIONS or _INITIALS.fullmatch(stem + ".") is not None


def _newline_separated(text: str) -> str:
    """The text as `rouge-score`'s ROUGE-Lsum wants it: one sentence per line."""
    if "\n" in text.strip():
        return text
    return "\n".join(split_sentences(text))


@functools.cache
def _scorer() -> Any:
    """One scorer per process: it is stateless."""
    # Imported on first use: rouge_score imports all of nltk (~1.5 s), which importing led should not cost.
    from rouge_score import rouge_scorer

    # Building one logs "Using default tokenizer." through absl at INFO: nothing about the run (training, evaluation).
    logging.getLogger("absl").setLevel(logging.WARNING)

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge_per_example(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """F1 ×100 of every example, shape (N, 4), columns in `ROUGE_TYPES` order."""
    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(references)} references: give one reference per prediction"
        )
    scorer = _scorer()
    scores = np.empty((len(predictions), len(ROUGE_TYPES)), dtype=np.float64)
    for i, (prediction, reference) in enumerate(zip(predictions, references)):
        result = scorer.score(_newline_separated(reference), _newline_separated(prediction))
        scores[i] = [result[name].fmeasure * 100.0 for name in ROUGE_TYPES]
    return scores


def bootstrap_interval(
    scores: np.ndarray, *, resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the column means of `scores` (N, K): returns (low (K,), high (K,)).

    Each resample draws N examples with replacement; the interval is the central `confidence` mass of
    the resampled means. Resamples are drawn in chunks so memory stays near a few million floats however
    large N is; the result depends only on (scores, resamples, seed).
    """
    if resamples < 1:
        raise ConfigError(f"resamples={resamples} is invalid: it must be at least 1")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence={confidence} is invalid: it must be in (0, 1), e.g. 0.95")
    n = scores.shape[0]
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // max(n, 1))
    means = []
    for done in range(0, resamples, chunk):
        index = rng.integers(0, n, size=(min(chunk, resamples - done), n))  # (R, N)
        means.append(scores[index].mean(axis=1))  # (R, K)
    resampled = np.concatenate(means)  # (resamples, K)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(resampled, [tail, 100.0 - tail], axis=0)
    return low, high


def compute_rouge(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, float]:
    """Corpus ROUGE-1/2/L/Lsum F1 ×100 (mean over examples) with bootstrap confidence intervals.

    Returns a flat dict: `rouge1`, `rouge2`, `rougeL`, `rougeLsum` (means); `<name>_low` and `<name>_high`
    (the `confidence` interval from `bootstrap` resamples, omitted when `bootstrap=0`); and
    `num_examples`. Flat so it can go straight to a logger or into `metrics.json`.
    """
    return corpus_rouge(rouge_per_example(predictions, references), bootstrap=bootstrap, seed=seed,
                        confidence=confidence)


def corpus_rouge(scores: np.ndarray, *, bootstrap: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> dict[str, float]:
    """`compute_rouge`'s result from per-example scores (N, 4) (`rouge_per_example`), for a caller that keeps them."""
    if not len(scores):
        raise DataError("compute_rouge got no examples: give at least one prediction and reference")
    if bootstrap < 0:
        raise ConfigError(f"bootstrap={bootstrap} is invalid: give the number of resamples (0 to skip intervals)")
    result: dict[str, float] = {name: float(v) for name, v in zip(ROUGE_TYPES, scores.mean(axis=0))}
    if bootstrap:
        low, high = bootstrap_interval(scores, resamples=bootstrap, seed=seed, confidence=confidence)
        for name, lo, hi in zip(ROUGE_TYPES, low, high):
            result[f"{name}_low"] = float(lo)
            result[f"{name}_high"] = float(hi)
    result["num_examples"] = int(scores.shape[0])
    return result


def rouge_by_length(lengths: Sequence[int], scores: Mapping[str, np.ndarray], *, bootstrap: int = 1000,
                    seed: int = 0, confidence: float = 0.95) -> list[dict[str, Any]]:
    """Corpus ROUGE per quartile of `lengths` (input tokens) for each system's per-example scores (N, 4).

    Bucket k holds the examples with `bounds[k-1] < length <= bounds[k]` (quartile edges; ties can leave a bucket
    empty, and empty buckets are left out). Each bucket: `low`/`high` (smallest and largest length in it), `count`,
    and per system `corpus_rouge` with intervals: whether a model's lead over the baseline holds on long inputs, the
    ones LED exists for.
    """
    values = np.asarray(lengths, dtype=np.int64)
    edges = np.quantile(values, [0.25, 0.5, 0.75]) if len(values) else np.array([])
    bucket_of = np.searchsorted(edges, values, side="left")  # (N,): 0..3
    buckets = []
    for k in range(4):
        members = np.flatnonzero(bucket_of == k)
        if len(members) == 0:
            continue
        buckets.append({
            "quartile": k + 1, "low": int(values[members].min()), "high": int(values[members].max()),
            "count": len(members),
            "systems": {name: corpus_rouge(system[members], bootstrap=bootstrap, seed=seed, confidence=confidence)
                        for name, system in scores.items()},
        })
    return buckets


def format_table(results: Mapping[str, Mapping[str, float]] | Mapping[str, float]) -> str:
    """A plain-text table of `compute_rouge` results: one row per system, e.g. {"model": m, "lead": b}.

    A single result dict (as returned by `compute_rouge`) prints as one row. Intervals are shown in
    brackets when present.
    """
    rows = cast(Mapping[str, Mapping[str, float]], {"": results} if "rouge1" in results else results)
    header = ["system", "n"] + [_DISPLAY_NAMES[name] for name in ROUGE_TYPES]
    lines = [header]
    for system, metrics in rows.items():
        cells = [system or "-", str(int(metrics.get("num_examples", 0)))]
        for name in ROUGE_TYPES:
            cell = f"{metrics[name]:.2f}"
            if f"{name}_low" in metrics:
                cell += f" [{metrics[f'{name}_low']:.2f}, {metrics[f'{name}_high']:.2f}]"
            cells.append(cell)
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def lead_baseline(document: str, reference: str) -> str:
    """The document's first sentences, about as many words as the reference (one sentence per line).

    Whole sentences are taken until their word count reaches the reference's, so the baseline is at
    most one sentence longer than the reference: the usual "lead" baseline, sized to the target.
    """
    budget = len(reference.split())
    chosen: list[str] = []
    words = 0
    for sentence in split_sentences(document):
        if words >= budget:
            break
        chosen.append(sentence)
        words += len(sentence.split())
    return "\n".join(chosen)
