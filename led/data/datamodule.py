"""Summarization data for LED: raw text -> tokenised, cached splits -> length-grouped padded batches.

`SummarizationDataModule` is built from plain values (Hydra's `conf/data/*.yaml`). Where the text comes from:

- a Hub dataset: `source="ccdv/pubmed-summarization"`, `"ccdv/arxiv-summarization"`, or
  `source="scientific_papers", config_name="arxiv"|"pubmed"`;
- local files: `train_file=`, `validation_file=`, `test_file=` (`.jsonl`/`.json`/`.parquet`/`.csv`);
- a directory written by `python -m led.prepare` (raw jsonl + tokenizer + tokenised splits, for compute nodes
  without internet): `source=DIR`.

Each split is tokenised once (`datasets.map`, batched, `num_proc` processes) and saved under `cache_dir` in a
folder named by a hash of the tokenizer's content, the lengths, the field names and the raw data's identity;
a later run with the same values loads it instead of tokenising again.

Batches follow docs/CONTRACTS.md ("Batches"): `input_ids`, `attention_mask`, `global_attention_mask` (B, S),
`labels` (B, T) with -100 at padding, `ids` (B,) = record index in its split (among the records kept). S is
padded to a multiple of `pad_to_multiple_of` (the model's largest attention window). `references(split)[id]` is
the raw summary.

Bad data is caught before training starts (led/data_checks.py): every problem raises one `DataError` naming
the setting, file, line, field or value. Records whose article or summary is empty or whitespace-only are
skipped (counted in the log; `strict=True` makes them an error), so `ids`/`references` index the records kept.
Truncation to `max_input_length` is counted and logged once per split.

Distributed training: batches come from `LengthGroupedBatchSampler`, which shards them over ranks itself, so
the Trainer needs `use_distributed_sampler=False` (Lightning refuses the custom sampler otherwise). With
`batch_size`, the ranks' batches of a step together are the batch one process with `batch_size * world size`
would get; under DDP a few examples may still repeat (a last global batch smaller than the world size, or
token-budget batches padded to a multiple of the world size), so evaluation code should de-duplicate
predictions by `ids`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import lightning as L
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader

from led.data.batching import (
    LengthGroupedBatchSampler,
    ResumableDataLoader,
    SummarizationCollator,
)
from led.data.checks import (
    DataError,
    check_fields,
    check_model_limits,
    check_records,
    check_sizes,
    check_vocab,
    empty_records_error,
)
from led.data.sources import CACHE_FORMAT, SPLIT_STATS, RawSource, tokenize_split
from led.files import write_directory_atomically
from led.models.tokenizer import LEDTokenizer

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- the module
class SummarizationDataModule(L.LightningDataModule):
    """Tokenised, cached summarization splits served as length-grouped, padded LED batches.

    Args (all plain values):
        source: Hub dataset id or a `led.prepare` directory (or None with `*_file`).
        tokenizer: tokenizer directory or Hub id; may be left out for a `led.prepare` directory.
        config_name: Hub dataset config (`scientific_papers` needs "arxiv" or "pubmed").
        train_file, validation_file, test_file: local `.jsonl`/`.json`/`.parquet`/`.csv` files.
        source_field, summary_field: record fields holding the document and its summary.
        max_input_length, max_target_length: truncation lengths in tokens, `<s>`/`</s>` included.
        pad_to_multiple_of: the model's largest attention window; inputs are padded to a multiple of it.
        batch_size: training examples per batch; eval_batch_size: the same for validation/test
            (defaults to batch_size).
        max_tokens_per_batch: training batches hold as many examples as keep `count * padded input length`
            within this budget (batch_size is then unused for training).
        group_by_length: training batches of similar length (evaluation is always sorted by length).
        curriculum_epochs: the first N training epochs go from the shortest batches to the longest (a length
            curriculum: models trained from scratch learn to find facts in short documents first).
        global_attention: "first" (the `<s>` token), "none", or a list of token ids made global as well as
            the first token (e.g. section markers).
        num_workers: DataLoader workers; num_proc: processes for tokenising.
        cache_dir: where tokenised splits are stored (default: `<prepared dir>/tokenized`, else
            `<HF datasets cache>/led-tokenized`).
        seed: shuffling seed, shared by all ranks.
        strict: records with an empty or whitespace-only source or summary raise a DataError instead of being
            skipped (and counted in the log).
        max_encoder_positions, max_decoder_positions: the model's position-table sizes; when given, lengths
            that would not fit raise a DataError here rather than a shape error mid-training.
        model_vocab_size: the model's embedding rows; a larger tokenizer vocabulary raises a DataError.
    """

    def __init__(
        self,
        source: str | None = None,
        tokenizer: str | None = None,
        config_name: str | None = None,
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
        source_field: str = "article",
        summary_field: str = "abstract",
        max_input_length: int = 4096,
        max_target_length: int = 512,
        pad_to_multiple_of: int = 1024,
        batch_size: int = 1,
        eval_batch_size: int | None = None,
        max_tokens_per_batch: int | None = None,
        group_by_length: bool = True,
        curriculum_epochs: int = 0,
        global_attention: str | Sequence[int] = "first",
        num_workers: int = 0,
        num_proc: int | None = None,
        cache_dir: str | None = None,
        seed: int = 42,
        strict: bool = False,
        max_encoder_positions: int | None = None,
        max_decoder_positions: int | None = None,
        model_vocab_size: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_sizes(max_input_length, max_target_length, pad_to_multiple_of, batch_size, eval_batch_size,
                    max_tokens_per_batch, num_workers)
        check_model_limits(max_input_length, max_target_length, pad_to_multiple_of, max_encoder_positions,
                           max_decoder_positions)
        self.source = RawSource.resolve(
            source, config_name, {"train": train_file, "validation": validation_file, "test": test_file}
        )
        self.tokenizer_path = _resolve_tokenizer_path(tokenizer, self.source)
        self.source_field, self.summary_field = source_field, summary_field
        self.max_input_length, self.max_target_length = max_input_length, max_target_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.max_tokens_per_batch = max_tokens_per_batch
        self.curriculum_epochs = curriculum_epochs
        self.group_by_length = group_by_length
        self.global_attention = _check_global_attention(global_attention)
        self.num_workers, self.num_proc, self.seed = num_workers, num_proc, seed
        self.strict = strict
        self.model_vocab_size = model_vocab_size
        if cache_dir:
            self.cache_dir = Path(cache_dir).expanduser()
        elif self.source.kind == "prepared":
            self.cache_dir = Path(self.source.name) / "tokenized"
        else:
            self.cache_dir = Path(datasets.config.HF_DATASETS_CACHE) / "led-tokenized"
        self._tokenizer: LEDTokenizer | None = None
        self._datasets: dict[str, datasets.Dataset] = {}

    @property
    def tokenizer(self) -> LEDTokenizer:
        if self._tokenizer is None:
            tokenizer = LEDTokenizer.from_pretrained(self.tokenizer_path)
            check_vocab(tokenizer.vocab_size, self.model_vocab_size, self.tokenizer_path)
            self._tokenizer = tokenizer
        return self._tokenizer

    @property
    def collator(self) -> SummarizationCollator:
        return SummarizationCollator(self.tokenizer.pad_token_id, self.pad_to_multiple_of, self.global_attention)

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        """Download, check and tokenise every split once (Lightning runs this on one process per node)."""
        for split in self.source.splits():
            self._build_split(split)

    def setup(self, stage: str | None = None) -> None:
        needed = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",),
                  "predict": ("test",)}.get(stage or "", self.source.splits())
        if stage == "fit" and "train" not in self.source.splits():
            raise DataError("fitting needs a training split: set train_file= (or a source with a 'train' split)")
        for split in needed:
            if split in self.source.splits() and split not in self._datasets:
                self._datasets[split] = self._load_split(split)

    def train_dataloader(self) -> DataLoader:
        return self._dataloader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._dataloader("validation", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._dataloader("test", shuffle=False)

    # ------------------------------------------------------------------ public helpers
    def dataset(self, split: str) -> datasets.Dataset:
        """The tokenised split (columns of TOKENIZED_FEATURES), loaded or built on first use."""
        if split not in self._datasets:
            if split not in self.source.splits():
                hint = " (or set trainer.limit_val_batches=0)" if split == "validation" else ""
                raise DataError(
                    f"no {split!r} split: this source has {list(self.source.splits())}; set {split}_file={hint}"
                )
            self._datasets[split] = self._load_split(split)
        return self._datasets[split]

    def references(self, split: str) -> list[str]:
        """The untokenised summaries of a split; `references(split)[i]` belongs to the example with `ids == i`."""
        return list(self.dataset(split)["reference"])

    def documents(self, split: str) -> list[str]:
        """The untokenised source texts of a split, aligned with `references(split)` and the batches' `ids`
        (records with an empty source or summary left out, as in the tokenised split)."""
        raw, _ = self._usable_raw(split)
        return list(raw[self.source_field])

    def cache_path(self, split: str) -> Path:
        """The folder of a tokenised split: named by everything that changes its content."""
        key = {
            "format": CACHE_FORMAT,
            "data": self.source.identity(split),
            "tokenizer": hashlib.sha256(self.tokenizer.backend.to_str().encode()).hexdigest(),
            "fields": [self.source_field, self.summary_field],
            "lengths": [self.max_input_length, self.max_target_length],
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return self.cache_dir / f"{split}-{digest}"

    # ------------------------------------------------------------------ internals
    def _load_split(self, split: str) -> datasets.Dataset:
        """The tokenised split (built first if needed); its skip/truncation counts are logged here, once."""
        path = self._build_split(split)
        stats_file = path / SPLIT_STATS
        stats = json.loads(stats_file.read_text()) if stats_file.is_file() else None
        if stats is not None:
            if self.strict and stats["skipped"]:  # a cache built without strict
                raise self._empty_records_error(split, stats["skipped"], stats["records"], stats["first_skipped"])
            if self._replicas()[1] == 0:
                self._log_stats(split, stats)
        return datasets.load_from_disk(str(path))

    def _build_split(self, split: str) -> Path:
        """Check, tokenise and cache a split unless its cache exists; return the cache folder."""
        path = self.cache_path(split)
        if not path.is_dir():
            raw, stats = self._usable_raw(split)
            tokenized = tokenize_split(
                raw,
                self.tokenizer,
                source_field=self.source_field,
                summary_field=self.summary_field,
                max_input_length=self.max_input_length,
                max_target_length=self.max_target_length,
                num_proc=self.num_proc,
                fingerprint=path.name,
                desc=f"Tokenizing {split}",
            )
            flags = ["source_truncated", "summary_truncated"]
            stats.update({name: int(pc.sum(tokenized.data.column(name)).as_py() or 0) for name in flags})
            path.parent.mkdir(parents=True, exist_ok=True)
            kept = tokenized.remove_columns(flags)

            def save(directory: Path) -> None:
                kept.save_to_disk(str(directory))
                (directory / SPLIT_STATS).write_text(json.dumps(stats) + "\n")

            # A concurrent run (a sweep's jobs) may finish the same cache first: then keep its copy.
            write_directory_atomically(path, save, keep_existing=True)
        return path

    def _usable_raw(self, split: str) -> tuple[datasets.Dataset, dict[str, Any]]:
        """The raw split checked (fields, types, no nulls) without its empty records, and the record counts."""
        where, fields = self.source.describe(split), [self.source_field, self.summary_field]
        raw = self.source.load(split, self.cache_dir, fields)
        if len(raw) == 0:
            raise DataError(f"{where} has no records")
        check_fields(raw, fields, where, prefix="data.")
        null_is_empty = self.source.kind == "files" and self.source.files[split].suffix.lower() == ".csv"
        empty = check_records(raw, fields, where, self.source.locator(split), null_is_empty=null_is_empty)
        if empty and (self.strict or len(empty) == len(raw)):
            raise self._empty_records_error(split, len(empty), len(raw), empty[0])
        stats = {"records": len(raw), "skipped": len(empty), "first_skipped": empty[0] if empty else None}
        if empty:
            empty_set = set(empty)
            raw = raw.select([i for i in range(len(raw)) if i not in empty_set])
        return raw, stats

    def _empty_records_error(self, split: str, skipped: int, total: int, first_row: int) -> DataError:
        return empty_records_error(self.source.describe(split), [self.source_field, self.summary_field], skipped,
                                   total, self.source.locator(split)(first_row))

    def _log_stats(self, split: str, stats: dict[str, Any]) -> None:
        if stats["skipped"]:
            log.warning(
                "skipped %d of %d records in %s with an empty or whitespace-only %r or %r (first at %s); "
                "data.strict=true makes this an error",
                stats["skipped"], stats["records"], self.source.describe(split), self.source_field,
                self.summary_field, self.source.locator(split)(stats["first_skipped"]),
            )
        kept = stats["records"] - stats["skipped"]
        if stats["source_truncated"]:
            log.info("truncated %d of %d %s articles to max_input_length=%d tokens",
                     stats["source_truncated"], kept, split, self.max_input_length)
        if stats["summary_truncated"]:
            log.info("truncated %d of %d %s summaries to max_target_length=%d tokens",
                     stats["summary_truncated"], kept, split, self.max_target_length)

    def _dataloader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.dataset(split)
        world_size, rank = self._replicas()
        sampler = LengthGroupedBatchSampler(
            list(dataset["length"]),
            self.batch_size if shuffle else self.eval_batch_size,
            max_tokens=self.max_tokens_per_batch if shuffle else None,
            pad_to_multiple_of=self.pad_to_multiple_of,
            shuffle=shuffle,
            group_by_length=self.group_by_length or not shuffle,
            curriculum_epochs=self.curriculum_epochs if shuffle else 0,
            seed=self.seed,
            num_replicas=world_size,
            rank=rank,
        )
        return ResumableDataLoader(
            dataset.select_columns(["input_ids", "labels", "id"]),
            batch_sampler=sampler,
            collate_fn=self.collator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            # Its own generator: starting a pass otherwise draws from the global RNG, which would shift the
            # dropout stream of a resumed run against an uninterrupted one.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def _replicas(self) -> tuple[int, int]:
        """(world size, global rank) from the attached Trainer; (1, 0) without one."""
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)


def _check_global_attention(value: str | Sequence[int]) -> str | tuple[int, ...]:
    if isinstance(value, str):
        if value not in ("first", "none"):
            raise DataError(f"global_attention={value!r}: use 'first', 'none' or a list of token ids")
        return value
    ids = tuple(value)
    if not all(isinstance(i, int) and i >= 0 for i in ids):
        raise DataError(f"global_attention={list(ids)!r}: token ids must be non-negative integers")
    return ids


def _resolve_tokenizer_path(tokenizer: str | None, source: RawSource) -> str:
    if tokenizer:
        return tokenizer
    prepared = Path(source.name) / "tokenizer"
    if source.kind == "prepared" and prepared.is_dir():
        return str(prepared)
    raise DataError(
        "no tokenizer given: set tokenizer= to a directory or Hub id (e.g. 'allenai/led-base-16384'); "
        "only a `led.prepare` directory that holds tokenizer/ can go without it"
    )
