"""led.metrics: ROUGE equal to `rouge-score` called directly, the sentence splitter, bootstrap intervals."""

import numpy as np
import pytest
from rouge_score import rouge_scorer

from led.metrics import (
    ROUGE_TYPES,
    bootstrap_interval,
    compute_rouge,
    format_table,
    lead_baseline,
    rouge_per_example,
    split_sentences,
)

# Multi-sentence texts with newlines between sentences: rouge-score's own ROUGE-Lsum input format.
PREDICTIONS = [
    "We propose a sparse attention model for long documents.\nIt scales linearly with length.",
    "The results show large gains on arXiv.\nRunning times drop by half.\nMemory use is lower too.",
    "Dogs are loyal animals.",
    "",
]
REFERENCES = [
    "A long-document model with sparse attention is proposed.\nIts cost grows linearly.\nIt is tested on arXiv.",
    "Large gains are reported on arXiv.\nThe method halves running time.",
    "Cats are independent animals.\nDogs are loyal.",
    "Nothing was predicted here.",
]


def reference_scores(predictions: list[str], references: list[str]) -> np.ndarray:
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    rows = [scorer.score(r, p) for p, r in zip(predictions, references)]
    return np.array([[row[name].fmeasure * 100 for name in ROUGE_TYPES] for row in rows])


def test_per_example_and_mean_equal_rouge_score() -> None:
    expected = reference_scores(PREDICTIONS, REFERENCES)
    np.testing.assert_allclose(rouge_per_example(PREDICTIONS, REFERENCES), expected, rtol=0, atol=1e-12)
    result = compute_rouge(PREDICTIONS, REFERENCES, bootstrap=0)
    assert result["num_examples"] == len(PREDICTIONS)
    for column, name in enumerate(ROUGE_TYPES):
        assert result[name] == pytest.approx(expected[:, column].mean(), abs=1e-12)
    assert not any(key.endswith(("_low", "_high")) for key in result)


def test_lsum_splits_texts_without_newlines() -> None:
    flat_predictions = [p.replace("\n", " ") for p in PREDICTIONS]
    flat_references = [r.replace("\n", " ") for r in REFERENCES]
    ours = rouge_per_example(flat_predictions, flat_references)
    # Splitting recovers exactly the sentences of the newline version, so every score matches it...
    np.testing.assert_allclose(ours, reference_scores(PREDICTIONS, REFERENCES), rtol=0, atol=1e-12)
    # ...whereas rouge-score on the flat text takes each text as one sentence: Lsum collapses to ROUGE-L.
    naive = reference_scores(flat_predictions, flat_references)
    np.testing.assert_allclose(naive[:, 3], naive[:, 2])
    assert ours[:, 3].mean() > naive[:, 3].mean()
    # Newlines do not change ROUGE-1/2/L: rouge-score's tokenizer reads them as spaces.
    np.testing.assert_allclose(ours[:, :3], naive[:, :3])


def test_text_with_newlines_is_taken_as_given() -> None:
    # One line holds two sentences; the caller's line breaks win, as in rouge-score.
    prediction, reference = "Alpha beta. Gamma delta.\nEpsilon.", "Gamma delta. Alpha beta.\nEpsilon."
    ours = rouge_per_example([prediction], [reference])
    np.testing.assert_allclose(ours, reference_scores([prediction], [reference]), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Dr. Smith arrived. He left at 5 p.m. on Monday. See Fig. 3 and Eq. 2. It works!",
         ["Dr. Smith arrived.", "He left at 5 p.m. on Monday.", "See Fig. 3 and Eq. 2.", "It works!"]),
        ('The U.S. Army said "Go home." Then J. K. Rowling wrote it? Yes (mostly). 3.5 percent rose.',
         ['The U.S. Army said "Go home."', "Then J. K. Rowling wrote it?", "Yes (mostly).", "3.5 percent rose."]),
        ("Models such as LED, e.g. Longformer, work. Smith et al. (2020) agree. Done",
         ["Models such as LED, e.g. Longformer, work.", "Smith et al. (2020) agree.", "Done"]),
        # arXiv/PubMed are lower-cased, with spaces before the periods: any word may start a sentence.
        ("we propose a model . it works well . e.g. the score improves , see fig. 2 .",
         ["we propose a model .", "it works well .", "e.g. the score improves , see fig. 2 ."]),
        ("First line. Second sentence\nthird line", ["First line.", "Second sentence", "third line"]),
        ("no punctuation at all", ["no punctuation at all"]),
        ("", []),
    ],
)
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible() -> None:
    rng = np.random.default_rng(1)
    scores = rng.uniform(0, 60, size=(400, 4))
    low, high = bootstrap_interval(scores, resamples=2000, seed=7)
    mean = scores.mean(axis=0)
    assert np.all(low < mean) and np.all(mean < high)
    # The percentile interval of a mean is close to the normal one, 1.96 standard errors each side.
    half_width = 1.96 * scores.std(axis=0, ddof=1) / np.sqrt(len(scores))
    np.testing.assert_allclose((high - low) / 2, half_width, rtol=0.15)
    again = bootstrap_interval(scores, resamples=2000, seed=7)
    np.testing.assert_array_equal(low, again[0])
    np.testing.assert_array_equal(high, again[1])
    assert not np.array_equal(low, bootstrap_interval(scores, resamples=2000, seed=8)[0])


def test_compute_rouge_intervals_are_seeded() -> None:
    first = compute_rouge(PREDICTIONS, REFERENCES, bootstrap=200, seed=3)
    assert first == compute_rouge(PREDICTIONS, REFERENCES, bootstrap=200, seed=3)
    for name in ROUGE_TYPES:
        assert first[f"{name}_low"] <= first[name] <= first[f"{name}_high"]


def test_bad_arguments_say_what_is_valid() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        compute_rouge(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no examples"):
        compute_rouge([], [])
    with pytest.raises(ValueError, match="confidence=1.5"):
        bootstrap_interval(np.zeros((3, 4)), confidence=1.5)
    with pytest.raises(ValueError, match="bootstrap=-1"):
        compute_rouge(["a"], ["a"], bootstrap=-1)


def test_format_table() -> None:
    model = compute_rouge(PREDICTIONS, REFERENCES, bootstrap=50)
    lead = compute_rouge(PREDICTIONS, REFERENCES, bootstrap=0)
    lines = format_table({"model": model, "lead": lead}).splitlines()
    assert lines[0].split() == ["system", "n", "ROUGE-1", "ROUGE-2", "ROUGE-L", "ROUGE-Lsum"]
    assert lines[1].startswith("model") and f"{model['rouge1']:.2f} [{model['rouge1_low']:.2f}," in lines[1]
    assert lines[2].split()[:3] == ["lead", "4", f"{lead['rouge1']:.2f}"]
    assert format_table(model).splitlines()[1].startswith("-")


def test_lead_baseline_takes_whole_sentences_up_to_the_reference_length() -> None:
    document = "One two three. Four five six seven. Eight nine. Ten."
    assert lead_baseline(document, "a b c") == "One two three."
    assert lead_baseline(document, "a b c d") == "One two three.\nFour five six seven."
    assert lead_baseline(document, " ".join(["w"] * 50)) == "\n".join(split_sentences(document))
    assert lead_baseline(document, "") == ""
