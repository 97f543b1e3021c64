"""SummarizationDataModule, its collator and length-grouped sampler, and `led.prepare` — on tiny made-up data."""

import json
import random
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import datasets
import pytest
import torch

import led.data.datamodule
from led.data.batching import LengthGroupedBatchSampler, SummarizationCollator, round_up
from led.data.datamodule import SummarizationDataModule
from led.errors import DataError
from led.models.tokenizer import LEDTokenizer
from led.prepare import main as prepare_main
from led.prepare import prepare

WORDS = ["the", "a", "model", "long", "document", "attention", "window", "global", "token", "summary", "results",
         "we", "show", "method", "data"]
MARKER = "§"  # stands in for a section-marker token in the global-attention test


def make_records(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        article = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 120)))
        if rng.random() < 0.3:
            article = f"{MARKER} intro {article} {MARKER} results {article[:40]}"
        summary = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30)))
        records.append({"article": article, "abstract": summary, "pmid": str(rng.random())})
    return records


def write_jsonl(path: Path, records: list[dict[str, str]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("corpus")
    splits = {"train": make_records(37, 0), "validation": make_records(11, 1), "test": make_records(5, 2)}
    files = {split: write_jsonl(root / f"{split}.jsonl", records) for split, records in splits.items()}
    texts = [r[field] for records in splits.values() for r in records for field in ("article", "abstract")]
    tokenizer = LEDTokenizer.train(texts + [MARKER] * 5, vocab_size=300)
    tokenizer.save_pretrained(root / "tokenizer")
    return SimpleNamespace(root=root, splits=splits, files=files, tokenizer_dir=str(root / "tokenizer"))


def make_dm(corpus: SimpleNamespace, cache: Path, **overrides: Any) -> SummarizationDataModule:
    values: dict[str, Any] = {
        "tokenizer": corpus.tokenizer_dir,
        "train_file": corpus.files["train"],
        "validation_file": corpus.files["validation"],
        "test_file": corpus.files["test"],
        "max_input_length": 64,
        "max_target_length": 16,
        "pad_to_multiple_of": 16,
        "batch_size": 4,
        "cache_dir": str(cache),
    }
    values.update(overrides)
    return SummarizationDataModule(**values)


def test_batches_follow_the_contract(corpus: SimpleNamespace, tmp_path: Path) -> None:
    dm = make_dm(corpus, tmp_path)
    dm.setup("fit")
    tokenizer = dm.tokenizer
    seen = []
    for batch in dm.train_dataloader():
        assert set(batch) == {"input_ids", "attention_mask", "global_attention_mask", "labels", "ids"}
        assert all(t.dtype == torch.long for t in batch.values())
        batch_size, length = batch["input_ids"].shape
        assert length % 16 == 0 and length <= 64
        assert batch["attention_mask"].shape == batch["global_attention_mask"].shape == (batch_size, length)
        assert batch["ids"].shape == (batch_size,) and batch["labels"].shape[0] == batch_size
        for row, record_id in enumerate(batch["ids"].tolist()):
            record = corpus.splits["train"][record_id]
            n = int(batch["attention_mask"][row].sum())
            assert batch["attention_mask"][row, :n].all() and not batch["attention_mask"][row, n:].any()
            assert batch["input_ids"][row, :n].tolist() == tokenizer.encode(record["article"], 64)
            assert (batch["input_ids"][row, n:] == tokenizer.pad_token_id).all()
            labels = batch["labels"][row]
            target = tokenizer.encode(record["abstract"], 16)
            assert labels[: len(target)].tolist() == target and (labels[len(target):] == -100).all()
        assert batch["global_attention_mask"][:, 0].all() and batch["global_attention_mask"][:, 1:].sum() == 0
        seen += batch["ids"].tolist()
    assert sorted(seen) == list(range(37))


def pegasus_x_model(vocab_size: int = 400, block_size: int = 16) -> Any:
    """A PEGASUS-X model (on the meta device: only its family and limits matter here)."""
    from led.training.module import model_skeleton

    return model_skeleton(dict(size="pegasus-x-tiny", vocab_size=vocab_size, overrides=dict(block_size=block_size)))


def test_pegasus_x_batches_pad_to_blocks_without_a_global_mask_and_train_a_unigram(corpus: SimpleNamespace,
                                                                                   tmp_path: Path) -> None:
    """From scratch, a PEGASUS-X model gets a PEGASUS tokenizer (a Unigram with its 106 reserved ids, text + </s>),
    inputs padded to a multiple of its block size, and no global attention mask (its global tokens are learned)."""
    from led.models.pegasus_x import PegasusTokenizer

    dm = make_dm(corpus, tmp_path / "cache", tokenizer=None, tokenizer_vocab_size=300,
                 tokenizer_dir=str(tmp_path / "tokenizer"), pad_to_multiple_of=1)
    dm.match_model(pegasus_x_model(block_size=24))
    tokenizer = dm.tokenizer
    assert type(tokenizer) is PegasusTokenizer and tokenizer.pad_token_id == 0 and tokenizer.eos_token_id == 1
    assert json.loads((tmp_path / "tokenizer" / "tokenizer.json").read_text())["model"]["type"] == "Unigram"
    assert tokenizer.vocab_size > 106 and tokenizer.encode("the model")[0] >= 106  # pieces after the reserved ids
    seen = []
    for batch in dm.train_dataloader():
        assert set(batch) == {"input_ids", "attention_mask", "labels", "ids"}
        assert batch["input_ids"].shape[1] % 24 == 0 and batch["input_ids"].shape[1] <= 72
        for row, record_id in enumerate(batch["ids"].tolist()):
            n = int(batch["attention_mask"][row].sum())
            article = corpus.splits["train"][record_id]["article"]
            assert batch["input_ids"][row, :n].tolist() == tokenizer.encode(article, 64)
            assert batch["input_ids"][row, n - 1] == 1 and (batch["input_ids"][row, n:] == 0).all()
        seen += batch["ids"].tolist()
    assert sorted(seen) == list(range(37))


def test_another_familys_tokenizer_is_refused_in_one_line(corpus: SimpleNamespace, tmp_path: Path) -> None:
    dm = make_dm(corpus, tmp_path)  # the corpus' tokenizer is LED's byte-level BPE
    assert dm.tokenizer.vocab_size > 0  # loaded before the model is known: as the family its files are
    dm.match_model(pegasus_x_model())
    with pytest.raises(DataError) as caught:
        _ = dm.tokenizer
    assert str(caught.value) == (f"tokenizer={corpus.tokenizer_dir}: {corpus.tokenizer_dir} holds a LED tokenizer "
                                 "(BPE), but the model is PEGASUS-X: use the model's own tokenizer (its checkpoint "
                                 "directory), or train one for it")


def test_truncation_keeps_eos(corpus: SimpleNamespace, tmp_path: Path) -> None:
    dm = make_dm(corpus, tmp_path, max_input_length=12, max_target_length=5, pad_to_multiple_of=8)
    lengths = []
    for batch in dm.val_dataloader():
        assert batch["input_ids"].shape[1] == 16  # 12 rounded up to a multiple of 8
        for row in range(len(batch["ids"])):
            n = int(batch["attention_mask"][row].sum())
            assert n <= 12 and batch["input_ids"][row, n - 1] == 2 and batch["input_ids"][row, 0] == 0
            labels = batch["labels"][row][batch["labels"][row] != -100]
            assert len(labels) <= 5 and labels[-1] == 2
            lengths.append(n)
    assert max(lengths) == 12


def test_global_attention_variants(corpus: SimpleNamespace, tmp_path: Path) -> None:
    none = make_dm(corpus, tmp_path, global_attention="none")
    assert all(b["global_attention_mask"].sum() == 0 for b in none.val_dataloader())
    marker_id = none.tokenizer.backend.token_to_id(MARKER)
    assert marker_id is not None
    markers = make_dm(corpus, tmp_path, global_attention=[marker_id])
    found = 0
    for batch in markers.train_dataloader():
        expected = (batch["input_ids"] == marker_id).long()
        expected[:, 0] = 1
        assert torch.equal(batch["global_attention_mask"], expected)
        found += int((batch["input_ids"] == marker_id).sum())
    assert found > 0
    with pytest.raises(ValueError, match="'all'"):
        make_dm(corpus, tmp_path, global_attention="all")


def test_collator_pads_to_the_multiple() -> None:
    collate = SummarizationCollator(pad_token_id=1, pad_to_multiple_of=8, global_attention=(7,))
    batch = collate([
        {"input_ids": [0, 5, 7, 2], "labels": [0, 9, 2], "id": 3},
        {"input_ids": [0, 2], "labels": [0, 2], "id": 0},
    ])
    assert batch["input_ids"].tolist() == [[0, 5, 7, 2, 1, 1, 1, 1], [0, 2, 1, 1, 1, 1, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]]
    assert batch["global_attention_mask"].tolist() == [[1, 0, 1, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0]]
    assert batch["labels"].tolist() == [[0, 9, 2], [0, 2, -100]]
    assert batch["ids"].tolist() == [3, 0]


def test_tokenised_splits_are_cached(corpus: SimpleNamespace, tmp_path: Path, monkeypatch) -> None:
    first = make_dm(corpus, tmp_path)
    first.prepare_data()
    first.setup("fit")

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("tokenised again although the cache matches")

    monkeypatch.setattr(led.data.datamodule, "tokenize_split", fail)
    second = make_dm(corpus, tmp_path)
    second.setup("fit")
    second.setup("test")
    assert second.cache_path("train") == first.cache_path("train")
    assert len(second.dataset("train")) == 37
    # any value that changes the tokens changes the cache folder
    assert make_dm(corpus, tmp_path, max_input_length=32).cache_path("train") != first.cache_path("train")
    assert make_dm(corpus, tmp_path, summary_field="article").cache_path("train") != first.cache_path("train")
    # values that do not change the tokens do not
    assert make_dm(corpus, tmp_path, batch_size=2, global_attention="none").cache_path("train") == \
        first.cache_path("train")


def test_evaluation_is_deterministic_sorted_and_keeps_references(corpus: SimpleNamespace, tmp_path: Path) -> None:
    dm = make_dm(corpus, tmp_path, eval_batch_size=3)
    dm.setup("validate")
    first = [b["ids"].tolist() for b in dm.val_dataloader()]
    assert first == [b["ids"].tolist() for b in dm.val_dataloader()]
    assert sorted(i for ids in first for i in ids) == list(range(11))
    assert max(len(ids) for ids in first) == 3
    lengths = dm.dataset("validation")["length"]
    flat = [lengths[i] for ids in first for i in ids]
    assert flat == sorted(flat, reverse=True)
    references = dm.references("validation")
    assert references == [r["abstract"] for r in corpus.splits["validation"]]


def check_shards(sampler_for_rank, n: int, world: int) -> list[list[list[int]]]:
    """Every rank gets the same number of batches; together they cover all n indices."""
    shards = [list(sampler_for_rank(rank)) for rank in range(world)]
    assert len({len(s) for s in shards}) == 1
    assert all(len(sampler_for_rank(rank)) == len(shards[rank]) for rank in range(world))
    assert {i for shard in shards for batch in shard for i in batch} == set(range(n))
    return shards


@pytest.mark.parametrize("shuffle", [True, False])
def test_length_grouped_sampler_with_two_ranks(shuffle: bool) -> None:
    rng = random.Random(0)
    lengths = [rng.randint(1, 500) for _ in range(96)]  # 24 batches of 4: no padding needed

    def sampler(rank: int, epoch: int = 0) -> LengthGroupedBatchSampler:
        s = LengthGroupedBatchSampler(lengths, 4, shuffle=shuffle, num_replicas=2, rank=rank, seed=3,
                                      mega_batch_mult=3)
        s.set_epoch(epoch)
        return s

    shards = check_shards(sampler, 96, 2)
    indices = [i for shard in shards for batch in shard for i in batch]
    assert len(indices) == 96  # disjoint
    assert all(len(batch) == 4 for shard in shards for batch in shard)
    assert list(sampler(1)) == list(sampler(1))  # deterministic
    if shuffle:
        assert list(sampler(0, epoch=1)) != list(sampler(0, epoch=0))
        check_shards(lambda rank: sampler(rank, epoch=1), 96, 2)
    # grouping by length wastes far less padding than random batches
    waste = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for s in shards for b in s)
    random_batches = [list(range(i, i + 4)) for i in range(0, 96, 4)]
    random_waste = sum(max(lengths[i] for i in b) * 4 - sum(lengths[i] for i in b) for b in random_batches)
    assert waste < random_waste / 2


@pytest.mark.parametrize("shuffle", [True, False])
def test_ranks_together_get_the_one_process_batches(shuffle: bool) -> None:
    # 37 examples: global batches of 8 leave a last one of 5, split 2+1+1+1 over 4 ranks (nothing repeated).
    lengths = [random.Random(2).randint(1, 300) for _ in range(37)]
    one = list(LengthGroupedBatchSampler(lengths, 8, shuffle=shuffle, seed=1, mega_batch_mult=2))

    def sampler(rank: int) -> LengthGroupedBatchSampler:
        return LengthGroupedBatchSampler(lengths, 2, shuffle=shuffle, seed=1, mega_batch_mult=2, num_replicas=4,
                                         rank=rank)

    shards = check_shards(sampler, 37, 4)
    assert [[i for shard in shards for i in shard[step]] for step in range(len(one))] == one
    short = next(step for step, batch in enumerate(one) if len(batch) == 5)
    assert [len(shard[short]) for shard in shards] == [2, 1, 1, 1]


def test_curriculum_epoch_runs_from_short_to_long_then_shuffles() -> None:
    rng = random.Random(3)
    lengths = [rng.randint(1, 500) for _ in range(64)]

    def longest(sampler: LengthGroupedBatchSampler, epoch: int) -> list[int]:
        sampler.set_epoch(epoch)
        return [max(lengths[i] for i in batch) for batch in sampler]

    curriculum = LengthGroupedBatchSampler(lengths, 4, seed=1, mega_batch_mult=2, curriculum_epochs=1)
    plain = LengthGroupedBatchSampler(lengths, 4, seed=1, mega_batch_mult=2)
    assert longest(curriculum, 0) == sorted(longest(curriculum, 0))
    assert sorted(map(sorted, curriculum)) == sorted(map(sorted, plain))  # the same batches, reordered
    assert longest(curriculum, 1) == longest(plain, 1) != sorted(longest(plain, 1))
    # Under DDP the ranks' batches of a curriculum step still make up the one-process batch.
    one = list(LengthGroupedBatchSampler(lengths, 8, seed=1, mega_batch_mult=2, curriculum_epochs=1))
    ranks = [list(LengthGroupedBatchSampler(lengths, 4, seed=1, mega_batch_mult=2, curriculum_epochs=1,
                                            num_replicas=2, rank=r)) for r in range(2)]
    assert [a + b for a, b in zip(*ranks)] == one
    with pytest.raises(ValueError, match="curriculum_epochs=-1"):
        LengthGroupedBatchSampler(lengths, 4, curriculum_epochs=-1)


def test_sampler_repeats_examples_when_a_batch_has_fewer_than_ranks() -> None:
    lengths = list(range(1, 18))  # 17 examples, global batch 16 -> a last batch of 1 for 4 ranks

    def sampler(rank: int) -> LengthGroupedBatchSampler:
        return LengthGroupedBatchSampler(lengths, 4, shuffle=False, num_replicas=4, rank=rank)

    shards = check_shards(sampler, 17, 4)
    counts = Counter(i for shard in shards for batch in shard for i in batch)
    assert [shard[-1] for shard in shards] == [[0]] * 4 and sum(counts.values()) == 20  # shortest example, 4 times


def test_token_budget_batches() -> None:
    rng = random.Random(1)
    lengths = [rng.randint(1, 64) for _ in range(200)]
    budget = 256

    def sampler(rank: int, epoch: int = 0) -> LengthGroupedBatchSampler:
        s = LengthGroupedBatchSampler(lengths, max_tokens=budget, pad_to_multiple_of=16, num_replicas=2, rank=rank)
        s.set_epoch(epoch)
        return s

    shards = check_shards(sampler, 200, 2)
    for batch in (b for shard in shards for b in shard):
        assert len(batch) * round_up(max(lengths[i] for i in batch), 16) <= budget
    assert max(len(b) for s in shards for b in s) > 4  # short examples share a batch
    assert len(sampler(0, epoch=1)) == len(sampler(0, epoch=0))  # fixed batch count per epoch
    with pytest.raises(ValueError, match="max_tokens=32"):
        LengthGroupedBatchSampler(lengths, max_tokens=32, pad_to_multiple_of=16)


def test_datamodule_token_budget_and_ranks(corpus: SimpleNamespace, tmp_path: Path) -> None:
    dm = make_dm(corpus, tmp_path, max_tokens_per_batch=128)
    dm.setup("fit")
    per_rank = []
    for rank in range(2):
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)  # what a DDP Trainer would report
        batches = list(dm.train_dataloader())
        assert all(b["input_ids"].numel() <= 128 for b in batches)
        per_rank.append([i for b in batches for i in b["ids"].tolist()])
    assert len(per_rank[0]) + len(per_rank[1]) >= 37 and set(per_rank[0]) | set(per_rank[1]) == set(range(37))
    with pytest.raises(ValueError, match="max_tokens_per_batch=50"):
        make_dm(corpus, tmp_path, max_tokens_per_batch=50)


def test_bad_inputs_name_the_file_or_field(corpus: SimpleNamespace, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="nope.jsonl"):
        make_dm(corpus, tmp_path, train_file=missing)
    with pytest.raises(ValueError, match=r"no field 'body'.*\['article', 'abstract', 'pmid'\]"):
        make_dm(corpus, tmp_path, source_field="body").setup("fit")
    with pytest.raises(ValueError, match="not both"):
        make_dm(corpus, tmp_path, source="ccdv/pubmed-summarization")
    with pytest.raises(ValueError, match="led.prepare"):
        make_dm(corpus, tmp_path, source=str(tmp_path), train_file=None, validation_file=None, test_file=None)
    with pytest.raises(ValueError, match="config_name"):
        make_dm(corpus, tmp_path, source="scientific_papers", train_file=None, validation_file=None, test_file=None)
    no_val = make_dm(corpus, tmp_path, validation_file=None)
    with pytest.raises(ValueError, match="validation_file"):
        no_val.val_dataloader()


def test_prepare_writes_a_directory_the_datamodule_reads(corpus: SimpleNamespace, tmp_path: Path, monkeypatch) -> None:
    splits = {name: datasets.Dataset.from_list(records) for name, records in corpus.splits.items()}
    out = prepare(splits, tmp_path / "prepared", dataset_name="made-up", tokenizer=corpus.tokenizer_dir,
                  max_input_length=64, max_target_length=16)
    assert [json.loads(line) for line in (out / "raw" / "test.jsonl").read_text().splitlines()] == \
        corpus.splits["test"]
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    monkeypatch.setattr(led.data.datamodule, "tokenize_split", lambda *a, **k: pytest.fail("prepared splits not reused"))
    dm = SummarizationDataModule(source=str(out), max_input_length=64, max_target_length=16, pad_to_multiple_of=16)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["input_ids"].shape[1] % 16 == 0
    assert dm.references("test") == [r["abstract"] for r in corpus.splits["test"]]


def test_prepare_command_on_a_local_dataset(corpus: SimpleNamespace, tmp_path: Path, monkeypatch,
                                            capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")  # keep ~/.cache clean
    out = prepare_main([f"dataset={corpus.root}", f"out={tmp_path / 'out'}", f"tokenizer={corpus.tokenizer_dir}",
                        "splits=[train,test]", "max_input_length=32", "max_target_length=8"])
    manifest = json.loads((out / "led_prepared.json").read_text())
    assert manifest["splits"] == {"train": "raw/train.jsonl", "test": "raw/test.jsonl"}
    assert manifest["num_rows"] == {"train": 37, "test": 5}
    assert len(list((out / "tokenized").glob("train-*"))) == 1
    for bad, message in (([f"out={tmp_path / 'bad'}"], "led.prepare: error: dataset is required: give dataset=..."),
                         ([f"dataset={corpus.root}", f"out={tmp_path / 'bad'}", "source_field=body", "tokenizer=null"],
                          "no field 'body'")):
        with pytest.raises(SystemExit) as exit_info:
            prepare_main(bad)
        assert exit_info.value.code == 2
        error = capsys.readouterr().err.splitlines()[-1]  # after `datasets`' progress bars
        assert error.startswith("led.prepare: error: ") and message in error, error
