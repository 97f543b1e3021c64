"""Generate the embedded default corpus: synthetic long "regional survey" reports.

Each report is ~1,000 tokens of filler and distractor sentences with eight key-fact sentences, one per
attribute ("Farmers in Kelmor grow barley."), dropped at random positions across the whole report.
The reference summary lists those facts, one line each, in document order, in a fixed template
("- grows barley: Kelmor."). A model must read the whole report to write it; the lead baseline (the
report's first sentences) almost never contains them. See data/README.md for the design.

    python data/generate.py --out data/synthetic            # the default corpus
    python data/generate.py --out /tmp/c --train 8 --validation 4 --test 4 --seed 1

The DataModule (`led.data.datamodule.SummarizationDataModule(synthetic=...)`, the default `data=synthetic`) calls
`ensure_corpus` itself, so nobody has to run it by hand.

Deterministic: the same arguments give byte-identical files (one `random.Random(seed)` per split).
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

from led.errors import ConfigError
from led.files import write_text_atomically

# Key facts: one line per attribute, (summary verb, value pool, document phrasings). The attribute
# order below is the order facts appear in a report (see README: "why a canonical order").
ATTRIBUTES: list[tuple[str, list[str], list[str]]] = [
    ("grows", ["barley", "wheat", "rye", "oats", "olives", "grapes", "figs", "flax", "hops", "millet",
               "lentils", "pears"],
     ["Farmers in {e} grow {v}.", "The fields around {e} are planted with {v}.", "{e} is known for its {v}."]),
    ("mines", ["copper", "tin", "silver", "iron", "salt", "coal", "slate", "gold", "zinc", "marble",
               "quartz", "lead"],
     ["Miners near {e} dig for {v}.", "The hills of {e} are rich in {v}.", "{e} has long mined {v}."]),
    ("breeds", ["horses", "goats", "sheep", "cattle", "geese", "ponies", "mules", "pigs", "ducks",
                "camels", "hounds", "falcons"],
     ["Families in {e} breed {v}.", "The pastures of {e} are full of {v}.", "{e} is famous for breeding {v}."]),
    ("brews", ["ale", "mead", "cider", "stout", "porter", "perry", "kvass", "lager", "wine", "tea",
               "coffee", "cocoa"],
     ["The taverns of {e} brew {v}.", "In {e} every house brews {v}.", "{e} exports a strong {v}."]),
    ("weaves", ["wool", "silk", "linen", "cotton", "hemp", "felt", "lace", "velvet", "tweed", "jute",
                "satin", "muslin"],
     ["Weavers in {e} work with {v}.", "The looms of {e} produce fine {v}.", "{e} trades in woven {v}."]),
    ("honors", ["owls", "bears", "wolves", "swans", "stags", "otters", "herons", "foxes", "ravens",
                "eagles", "badgers", "lynxes"],
     ["The old shrine of {e} honors {v}.", "People in {e} carve statues of {v}.", "{e} keeps a festival for {v}."]),
    ("builds", ["boats", "bridges", "wagons", "barrels", "bells", "clocks", "organs", "mills", "carts",
                "sleds", "kilns", "lutes"],
     ["Craftsmen in {e} build {v}.", "The workshops of {e} are busy making {v}.", "{e} sells well made {v}."]),
    ("fears", ["floods", "storms", "droughts", "fires", "plagues", "raiders", "locusts", "frosts",
               "wildcats", "landslides", "famines", "tremors"],
     ["The elders of {e} fear {v}.", "Children in {e} are warned about {v}.", "{e} has suffered from {v}."]),
]

# Town names: two syllables, capitalised, unique; far more towns than facts, so names must be copied.
_ONSETS = ["kel", "var", "dor", "mir", "tal", "bren", "sor", "hal", "quen", "lor", "fen", "gar",
           "wyn", "tor", "ris", "mal", "zan", "cor", "bel", "nor"]
_CODAS = ["mor", "holt", "vik", "dale", "wick", "stead", "ford", "mere", "gard", "ton"]
TOWNS: list[str] = [(a + b).capitalize() for a in _ONSETS for b in _CODAS]

# Filler: a small grammar whose words never occur in a summary, so copying filler earns no ROUGE.
_SUBJECTS = ["The survey team", "A local guide", "The committee", "An old farmer", "The surveyor",
             "A young clerk", "The council", "A traveling merchant", "The district office", "The archivist"]
_VERBS = ["recorded", "described", "measured", "reported", "noted", "checked", "mapped", "discussed",
          "inspected", "photographed"]
_OBJECTS = ["the condition of the roads", "the level of the wells", "the number of visitors",
            "the state of the archives", "the width of the valley", "the price of lamp oil",
            "the height of the fences", "the color of the soil", "the age of the chapel",
            "the timing of the markets", "the route of the postal carriers", "the repairs to the school"]
_WHEN = ["in early spring", "after the rains", "during the autumn visit", "on a cold morning",
         "late in the season", "before the census", "over several weeks", "at the end of the year"]
_CLAUSES = ["and found nothing unusual", "without any firm conclusion", "with some difficulty",
            "as part of the regular review", "for the second time", "and filed a short note",
            "while waiting for better weather", "to settle an earlier dispute"]
_REMARKS = ["The weather stayed mild for most of the trip.", "Several pages of the notes were lost.",
            "The maps from the previous decade proved unreliable.", "Nobody could recall the exact date.",
            "The road signs had been repainted recently.", "A second visit was planned but never made.",
            "Most residents were polite but busy.", "The report was delayed by a broken cart."]
# Distractors name a town but state no fact, so a model cannot just copy every town it sees.
_DISTRACTORS = ["The road to {e} was closed for a week.", "Letters from {e} arrived late.",
                "A guide from {e} joined the team for two days.", "The inn at {e} was full.",
                "Nobody in the group had visited {e} before."]


@dataclass(frozen=True)
class Fact:
    town: str
    verb: str  # the summary verb of the attribute, e.g. "grows"
    value: str
    sentence: str  # how the report states it

    @property
    def summary_line(self) -> str:
        # Attribute first: the decoder writes the verb it knows from the template order, then looks up that
        # attribute's value and the town beside it (from scratch, town-first lines are learned far later).
        # Value and town follow a space, so they are the same BPE tokens as in the report.
        return f"- {self.verb} {self.value}: {self.town}."


def filler_sentence(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return rng.choice(_REMARKS)
    parts = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_WHEN)]
    if rng.random() < 0.5:
        parts.append(rng.choice(_CLAUSES))
    return " ".join(parts) + "."


def draw_facts(rng: random.Random, num_facts: int) -> list[Fact]:
    """`num_facts` facts on distinct attributes (kept in canonical order) about distinct towns."""
    attribute_ids = sorted(rng.sample(range(len(ATTRIBUTES)), num_facts))
    towns = rng.sample(TOWNS, num_facts)
    facts = []
    for town, index in zip(towns, attribute_ids):
        verb, values, phrasings = ATTRIBUTES[index]
        value = rng.choice(values)
        facts.append(Fact(town, verb, value, rng.choice(phrasings).format(e=town, v=value)))
    return facts


def make_report(rng: random.Random, min_sentences: int, max_sentences: int,
                min_facts: int, max_facts: int, distractor_rate: float) -> tuple[str, str]:
    """One (article, summary) pair; facts sit at sorted random sentence positions over the whole report."""
    num_sentences = rng.randint(min_sentences, max_sentences)
    facts = draw_facts(rng, rng.randint(min_facts, max_facts))
    fact_positions = sorted(rng.sample(range(num_sentences), len(facts)))
    fact_at = dict(zip(fact_positions, facts))
    fact_towns = {fact.town for fact in facts}
    sentences = []
    for position in range(num_sentences):
        if position in fact_at:
            sentences.append(fact_at[position].sentence)
        elif rng.random() < distractor_rate:
            # Distractors may name a fact's town too: only the fact sentence carries the value.
            town = rng.choice(sorted(fact_towns)) if rng.random() < 0.5 else rng.choice(TOWNS)
            sentences.append(rng.choice(_DISTRACTORS).format(e=town))
        else:
            sentences.append(filler_sentence(rng))
    # Paragraphs of 4-8 sentences make the report look like a document; the lead baseline splits on them too.
    paragraphs, start = [], 0
    while start < len(sentences):
        size = rng.randint(4, 8)
        paragraphs.append(" ".join(sentences[start:start + size]))
        start += size
    return "\n".join(paragraphs), "\n".join(fact.summary_line for fact in facts)


def generate_split(name: str, count: int, seed: int, **report_kwargs: float) -> list[dict[str, str]]:
    # A per-split seed keeps validation identical when only the training size changes.
    rng = random.Random(f"{seed}-{name}")
    records = []
    for index in range(count):
        article, summary = make_report(rng, **report_kwargs)  # type: ignore[arg-type]
        records.append({"id": f"{name}-{index:05d}", "article": article, "summary": summary})
    return records


def write_corpus(dir: str | Path, train: int = 1200, validation: int = 100, test: int = 100,
                 seed: int = 0, min_sentences: int = 50, max_sentences: int = 100, min_facts: int = 8,
                 max_facts: int = 8, distractor_rate: float = 0.08, short_train: int = 7200,
                 short_min_sentences: int = 8, short_max_sentences: int = 16) -> dict[str, Path]:
    """Write `{train,validation,test}.jsonl` under `dir`; returns the paths by split name.

    `short_train` more training reports of `short_min_sentences`..`short_max_sentences` sentences follow the
    `train` long ones (ids `train-short-…`): with the DataModule's length curriculum a model from scratch learns
    the task on them first (see data/README.md). Validation and test reports are always long.
    """
    if not 1 <= min_facts <= max_facts <= len(ATTRIBUTES):
        raise ConfigError(f"need 1 <= min_facts <= max_facts <= {len(ATTRIBUTES)}, "
                         f"got min_facts={min_facts}, max_facts={max_facts}")
    for low, high, names in ((min_sentences, max_sentences, "min_sentences <= max_sentences"),
                             (short_min_sentences, short_max_sentences, "short_min_sentences <= short_max_sentences")):
        if not max_facts <= low <= high:
            raise ConfigError(f"need max_facts <= {names}, got max_facts={max_facts}, {low}, {high}")
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    report_kwargs = dict(min_sentences=min_sentences, max_sentences=max_sentences, min_facts=min_facts,
                         max_facts=max_facts, distractor_rate=distractor_rate)
    short_kwargs = dict(report_kwargs, min_sentences=short_min_sentences, max_sentences=short_max_sentences)
    paths = {}
    for name, count in (("train", train), ("validation", validation), ("test", test)):
        records = generate_split(name, count, seed, **report_kwargs)
        if name == "train":
            records += generate_split("train-short", short_train, seed, **short_kwargs)
        path = out / f"{name}.jsonl"
        write_text_atomically(path, "".join(json.dumps(record) + "\n" for record in records))
        paths[name] = path
    return paths


def ensure_corpus(dir: str | Path, **params: int | float) -> dict[str, Path]:
    """The corpus under `dir` for these `write_corpus` parameters, generated only when it is missing or
    was made with other parameters (recorded in `corpus.json`, written last so a half-written corpus is redone)."""
    out = Path(dir)
    manifest = out / "corpus.json"
    wanted = json.loads(json.dumps(params, sort_keys=True))
    if manifest.is_file() and json.loads(manifest.read_text()) == wanted:
        return {name: out / f"{name}.jsonl" for name in ("train", "validation", "test")}
    manifest.unlink(missing_ok=True)
    paths = write_corpus(out, **params)  # type: ignore[arg-type]
    write_text_atomically(manifest, json.dumps(wanted, sort_keys=True, indent=1))
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/synthetic", help="output directory")
    parser.add_argument("--train", type=int, default=1200)
    parser.add_argument("--validation", type=int, default=100)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-sentences", type=int, default=50)
    parser.add_argument("--max-sentences", type=int, default=100)
    parser.add_argument("--min-facts", type=int, default=8)
    parser.add_argument("--max-facts", type=int, default=8)
    parser.add_argument("--distractor-rate", type=float, default=0.08)
    parser.add_argument("--short-train", type=int, default=7200, help="short training reports (curriculum)")
    parser.add_argument("--short-min-sentences", type=int, default=8)
    parser.add_argument("--short-max-sentences", type=int, default=16)
    args = parser.parse_args(argv)
    paths = write_corpus(args.out, args.train, args.validation, args.test, args.seed, args.min_sentences,
                         args.max_sentences, args.min_facts, args.max_facts, args.distractor_rate,
                         args.short_train, args.short_min_sentences, args.short_max_sentences)
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
