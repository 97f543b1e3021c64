"""Same command, same numbers, for every family: a tokenizer trained for a run is a function of its corpus and
settings (the same files whatever the number of threads, in a fresh process each time), and a run trained twice
writes the same metrics.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_training import FAMILY_MODELS, FEW_STEPS, ROOT, TINY_CORPUS, make_config

from led.data.synthetic import write_corpus
from led.models.families import FAMILIES
from led.recipes.train import train

# Trains `family`'s tokenizer on the corpus' training reports and saves it to `out`: run in a fresh process, so that
# nothing (a hash seed, a thread pool) is shared between the runs compared.
TRAIN_TOKENIZER = """
import json, sys
from led.models.families import FAMILIES
corpus, family, out = sys.argv[1:]
records = [json.loads(line) for line in open(corpus)]
texts = [record[field] for record in records for field in ("article", "summary")]
FAMILIES[family].tokenizer_class.train(texts, vocab_size=800).save_pretrained(out)
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("synthetic")
    write_corpus(directory, train=60, validation=2, test=2, short_train=60)
    return directory


def files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_trained_tokenizer_is_the_same_files_on_every_run_and_thread_count(family: str, corpus: Path,
                                                                               tmp_path: Path) -> None:
    outputs = []
    for run, threads in enumerate(["1", "2", "2"]):  # RAYON_NUM_THREADS: the `tokenizers` library's thread pool
        out = tmp_path / f"run{run}"
        env = {**os.environ, "RAYON_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "true"}
        subprocess.run([sys.executable, "-c", TRAIN_TOKENIZER, str(corpus / "train.jsonl"), family, str(out)],
                       check=True, env=env, cwd=ROOT, timeout=120)
        outputs.append(files(out))
    assert "tokenizer.json" in outputs[0]
    assert outputs[1] == outputs[0] and outputs[2] == outputs[0]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_same_command_writes_the_same_metrics(family: str, corpus: Path, tmp_path: Path) -> None:
    """Two runs of one config, each training its own tokenizer: the same tokenizer file, losses and ROUGE."""
    metrics, tokenizers = [], []
    for run in ("first", "second"):
        cfg = make_config(tmp_path / run, f"data.synthetic.dir={corpus}", *TINY_CORPUS, *FAMILY_MODELS[family],
                          *FEW_STEPS, "data.synthetic.train=60", "data.synthetic.short_train=60",
                          "data.synthetic.validation=2", "data.synthetic.test=2", "data.tokenizer_vocab_size=800")
        train(cfg)
        saved = json.loads((tmp_path / run / "run" / "metrics.json").read_text())
        saved.pop("train_minutes")
        metrics.append(saved)
        tokenizers.append((tmp_path / run / "run" / "tokenizer" / "tokenizer.json").read_bytes())
    assert tokenizers[1] == tokenizers[0]
    assert metrics[1] == metrics[0] and "rouge1" in metrics[0]
