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
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import lightning as L
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, Sampler

from led.data_checks import (
    FILE_FORMATS,
    DataError,
    check_data_file,
    check_fields,
    check_model_limits,
    check_records,
    check_sizes,
    check_vocab,
    empty_records_error,
    explain_load_error,
    hub_error,
    record_locator,
)
from led.faults import stop_signals_blocked
from led.tokenizer import LEDTokenizer

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
HUB_CONFIGS = {"scientific_papers": ("arxiv", "pubmed")}  # Hub datasets that need a config name
PREPARED_MANIFEST = "led_prepared.json"  # marks a directory written by led.prepare
CACHE_FORMAT = 2  # bump when the tokenised content changes (2: empty records skipped), so old caches are not reused
SPLIT_STATS = "led_split_stats.json"  # beside a tokenised split: record, skip and truncation counts

# Columns of a tokenised split. `length` drives batching, `id` is the row among the split's kept records (those
# with a non-empty source and summary), `reference` the untokenised summary (so validation ROUGE compares
# against the original text).
TOKENIZED_FEATURES = datasets.Features(
    {
        "input_ids": datasets.Sequence(datasets.Value("int32")),
        "labels": datasets.Sequence(datasets.Value("int32")),
        "length": datasets.Value("int32"),
        "id": datasets.Value("int64"),
        "reference": datasets.Value("string"),
    }
)
# What the tokenising map returns: the columns above plus truncation flags, counted and dropped before saving.
_MAPPED_FEATURES = datasets.Features(
    {**TOKENIZED_FEATURES, "source_truncated": datasets.Value("bool"), "summary_truncated": datasets.Value("bool")}
)


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


# ---------------------------------------------------------------------------------------------- collation
@dataclass
class SummarizationCollator:
    """Pads a list of tokenised examples into the batch dict of docs/CONTRACTS.md.

    `global_attention`: "first" (the `<s>` token), "none", or token ids whose positions get global attention
    in addition to the first token (e.g. section-marker ids).
    """

    pad_token_id: int
    pad_to_multiple_of: int = 1
    global_attention: str | tuple[int, ...] = "first"

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        source_len = round_up(max(len(e["input_ids"]) for e in examples), self.pad_to_multiple_of)
        target_len = max(len(e["labels"]) for e in examples)
        batch_size = len(examples)
        input_ids = torch.full((batch_size, source_len), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, source_len), dtype=torch.long)
        labels = torch.full((batch_size, target_len), -100, dtype=torch.long)
        for row, example in enumerate(examples):
            n, t = len(example["input_ids"]), len(example["labels"])
            input_ids[row, :n] = torch.as_tensor(example["input_ids"], dtype=torch.long)
            attention_mask[row, :n] = 1
            labels[row, :t] = torch.as_tensor(example["labels"], dtype=torch.long)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "global_attention_mask": self._global_mask(input_ids, attention_mask),
            "labels": labels,
            "ids": torch.tensor([int(e["id"]) for e in examples], dtype=torch.long),
        }

    def _global_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(input_ids)
        if self.global_attention == "none":
            return mask
        if not isinstance(self.global_attention, str):
            marker_ids = torch.tensor(self.global_attention, dtype=torch.long)
            mask = torch.isin(input_ids, marker_ids).long() * attention_mask
        mask[:, 0] = 1  # the first token is always global: its projections then always get gradients (DDP)
        return mask


# ---------------------------------------------------------------------------------------------- sampling
class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of similar length, shuffled, split over data-parallel ranks.

    Training (`shuffle=True`): each epoch the indices are shuffled and cut into mega-batches of
    `mega_batch_mult` batches per rank; each mega-batch is sorted by length (longest first) and cut into
    batches, so padding is small yet batches stay random. With `max_tokens`, a batch takes as many examples as
    fit `count * round_up(longest, pad_to_multiple_of) <= max_tokens` instead of `batch_size`; those batches are
    composed once (from `seed`) and only their order changes per epoch, so every epoch has the same number of
    batches (Lightning sizes progress, validation interval and LR schedule from it).
    With `curriculum_epochs=N`, the first N training epochs run their steps from the shortest to the longest
    instead of in random order (a length curriculum; the batches themselves are composed as above).
    Evaluation (`shuffle=False`): all indices sorted by length, longest first, no randomness.

    Every rank builds the same list of steps (same seed) and takes its own batch of each step.
    With `batch_size`, a step is one global batch of `batch_size * num_replicas` examples cut exactly as one
    process with that batch size would cut it, then split into `num_replicas` consecutive pieces: the ranks'
    batches at step k together are the one-process batch k, so DDP trains step for step like one process
    (with the module's global-token loss). Only an epoch's last, short global batch splits unevenly, and if it
    has fewer examples than ranks, some of them repeat. With `max_tokens`, each rank's batch fills the budget
    and consecutive batches (similar lengths) form a step; the batch list is padded to a multiple of
    `num_replicas` by repeating its first batches.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int = 1,
        *,
        max_tokens: int | None = None,
        pad_to_multiple_of: int = 1,
        shuffle: bool = True,
        group_by_length: bool = True,
        curriculum_epochs: int = 0,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        mega_batch_mult: int = 50,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank} must be in [0, num_replicas={num_replicas})")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if curriculum_epochs < 0:
            raise ValueError(f"curriculum_epochs={curriculum_epochs} must be >= 0 (0: no length curriculum)")
        self.lengths = [int(n) for n in lengths]
        if max_tokens is not None and self.lengths and max_tokens < round_up(max(self.lengths), pad_to_multiple_of):
            raise ValueError(
                f"max_tokens={max_tokens} is below the padded length of the longest example "
                f"({round_up(max(self.lengths), pad_to_multiple_of)}); raise it or lower the input length"
            )
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.pad_to_multiple_of = pad_to_multiple_of
        self.shuffle = shuffle
        self.group_by_length = group_by_length
        self.curriculum_epochs = curriculum_epochs
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.mega_batch_mult = mega_batch_mult
        self.epoch = 0
        self.skip = 0  # batches the next pass leaves out: set by ResumableDataLoader to resume mid-epoch
        self._cache: tuple[int, list[list[list[int]]]] | None = None

    @property
    def sampler(self) -> LengthGroupedBatchSampler:
        # Lightning calls `set_epoch` on `dataloader.batch_sampler.sampler` at every epoch start; pointing it
        # here reshuffles each epoch (and resumes with the right order) without a wrapper sampler.
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._steps()) if self.lengths else 0

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip = self.skip, 0
        for step in self._steps()[skip:]:
            yield step[self.rank]

    def _steps(self) -> list[list[list[int]]]:
        """All ranks' batches, one list of `num_replicas` batches per step (memoised per epoch)."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        batches = self._batches()
        if not batches:
            return []
        if self.max_tokens is None:
            steps = [self._split(batch) for batch in batches]
        else:
            missing = (-len(batches)) % self.num_replicas
            padded = batches + [batches[i % len(batches)] for i in range(missing)]
            steps = [padded[i : i + self.num_replicas] for i in range(0, len(padded), self.num_replicas)]
        if self.shuffle and self.epoch < self.curriculum_epochs:
            # Length curriculum: the epoch runs from its shortest steps to its longest. A model trained from scratch
            # learns to find and copy facts in short documents far sooner, and keeps the skill as they grow.
            steps.sort(key=lambda step: max(self.lengths[i] for batch in step for i in batch))
        elif self.shuffle:
            order = torch.randperm(len(steps), generator=self._generator(self.epoch + 1_000_003)).tolist()
            steps = [steps[i] for i in order]
        self._cache = (self.epoch, steps)
        return steps

    def _batches(self) -> list[list[int]]:
        """The epoch's batches before sharding (global batches with `batch_size`): identical on every rank."""
        n = len(self.lengths)
        if not self.shuffle:
            order = list(range(n))
            if self.group_by_length:
                order.sort(key=lambda i: -self.lengths[i])
            return self._cut(order)
        # Budget batches are composed once so their count is fixed; fixed-size ones are regrouped each epoch.
        composition_seed = self.seed if self.max_tokens is not None else self.seed + self.epoch
        order = torch.randperm(n, generator=self._generator(composition_seed)).tolist()
        if not self.group_by_length:
            return self._cut(order)
        mega = self.mega_batch_mult * self._examples_per_batch() * self.num_replicas
        batches: list[list[int]] = []
        for start in range(0, n, mega):
            chunk = sorted(order[start : start + mega], key=lambda i: -self.lengths[i])
            batches.extend(self._cut(chunk))
        return batches

    def _cut(self, order: list[int]) -> list[list[int]]:
        """Consecutive slices of `order`: `batch_size * num_replicas` each, or filling one rank's token budget."""
        if self.max_tokens is None:
            size = self.batch_size * self.num_replicas
            return [order[i : i + size] for i in range(0, len(order), size)]
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for index in order:
            candidate = max(longest, round_up(self.lengths[index], self.pad_to_multiple_of))
            if current and (len(current) + 1) * candidate > self.max_tokens:
                batches.append(current)
                current, candidate = [], round_up(self.lengths[index], self.pad_to_multiple_of)
            current.append(index)
            longest = candidate
        if current:
            batches.append(current)
        return batches

    def _split(self, batch: list[int]) -> list[list[int]]:
        """A global batch as `num_replicas` consecutive pieces whose sizes differ by at most one; a batch with
        fewer examples than ranks repeats its own examples so that every rank has one (DDP needs every rank
        to step)."""
        world = self.num_replicas
        if len(batch) < world:
            batch = batch + [batch[i % len(batch)] for i in range(world - len(batch))]
        size, extra = divmod(len(batch), world)
        bounds = [rank * size + min(rank, extra) for rank in range(world + 1)]
        return [batch[bounds[rank] : bounds[rank + 1]] for rank in range(world)]

    def _examples_per_batch(self) -> int:
        if self.max_tokens is None:
            return self.batch_size
        mean_len = sum(round_up(n, self.pad_to_multiple_of) for n in self.lengths) / max(1, len(self.lengths))
        return max(1, int(self.max_tokens // max(1.0, mean_len)))

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)


class ResumableDataLoader(DataLoader):
    """A DataLoader over a `LengthGroupedBatchSampler` whose place in the epoch is saved in Lightning checkpoints,
    so a run resumed mid-epoch trains on the batches an uninterrupted run would, not the epoch's first ones again.

    Lightning keeps `state_dict()` of a training loader that has `state_dict`/`load_state_dict` with the fit
    loop's state. The state is the epoch and how many of its batches were handed out; after `load_state_dict`,
    the pass over that same epoch starts after them (the sampler skips them: nothing is loaded for them).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch = 0
        self._handed_out = 0
        self._resume_at: tuple[int, int] | None = None  # (epoch, batches) from a checkpoint

    def __iter__(self) -> Iterator[Any]:
        # A generator: this body runs at the first `next`, after Lightning's `set_epoch` for the epoch.
        sampler = self.batch_sampler
        resume_at, self._resume_at = self._resume_at, None
        skip = resume_at[1] if resume_at is not None and resume_at[0] == sampler.epoch else 0
        sampler.skip = skip
        self._epoch, self._handed_out = sampler.epoch, skip
        with stop_signals_blocked(self.num_workers > 0):  # workers start here; SIGTERM is for the main process
            batches = super().__iter__()
        for batch in batches:
            self._handed_out += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches": self._handed_out}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_at = (int(state["epoch"]), int(state["batches"]))


# ---------------------------------------------------------------------------------------------- raw text
@dataclass(frozen=True)
class RawSource:
    """Where the untokenised text of each split lives: a Hub dataset, local files or a prepared directory."""

    kind: str  # "hub" | "files" | "prepared"
    name: str = ""  # Hub dataset id, or the prepared directory
    config_name: str | None = None
    files: dict[str, Path] = field(default_factory=dict)  # split -> file (files, prepared)
    data_id: str = ""  # content hash written by led.prepare

    @classmethod
    def resolve(
        cls, source: str | None, config_name: str | None = None, split_files: dict[str, str | None] | None = None
    ) -> RawSource:
        """Check the user's values and decide which kind of source they name."""
        files = {split: f for split, f in (split_files or {}).items() if f}
        if source and files:
            raise DataError(
                f"give either source= (got {source!r}) or train_file/validation_file/test_file (got {files}), not both"
            )
        if files:
            return cls("files", files={split: check_data_file(f"{split}_file", f) for split, f in files.items()})
        if not source:
            raise DataError(
                "no data given: set source= to a Hub dataset id (e.g. 'ccdv/pubmed-summarization') or a directory "
                "written by `python -m led.prepare`, or set train_file/validation_file/test_file"
            )
        path = Path(source).expanduser()
        if path.is_dir():
            return cls._prepared(path)
        if path.is_file():
            raise DataError(f"source={source!r} is a file; give data files as train_file=/validation_file=/test_file=")
        if source.startswith(("/", ".", "~")):
            raise DataError(f"source directory {source!r} does not exist")
        valid_configs = HUB_CONFIGS.get(source)
        if valid_configs and config_name not in valid_configs:
            raise DataError(f"Hub dataset {source!r} needs config_name in {list(valid_configs)}, got {config_name!r}")
        return cls("hub", name=source, config_name=config_name)

    @classmethod
    def _prepared(cls, directory: Path) -> RawSource:
        manifest = directory / PREPARED_MANIFEST
        if not manifest.is_file():
            raise DataError(
                f"source {str(directory)!r} is a directory without {PREPARED_MANIFEST}, so it was not written by "
                "`python -m led.prepare`; for plain data files use train_file=/validation_file=/test_file="
            )
        info = json.loads(manifest.read_text())
        files = {split: directory / relative for split, relative in info["splits"].items()}
        return cls("prepared", name=str(directory.resolve()), files=files, data_id=info["data_id"])

    def splits(self) -> tuple[str, ...]:
        """The splits this source has (a Hub dataset is assumed to have all three)."""
        return SPLITS if self.kind == "hub" else tuple(s for s in SPLITS if s in self.files)

    def describe(self, split: str) -> str:
        """The split's data as the user named it, for messages: `train_file='/data/train.jsonl'`."""
        if self.kind == "hub":
            config = f" ({self.config_name})" if self.config_name else ""
            return f"split {split!r} of Hub dataset {self.name!r}{config}"
        if self.kind == "prepared":
            return f"file {str(self.files[split])!r} (split {split!r} of source={self.name!r})"
        return f"{split}_file={str(self.files[split])!r}"

    def locator(self, split: str) -> Callable[[int], str]:
        """row of the raw split -> "line N" of its jsonl/csv file, or "record N"."""
        return record_locator(None if self.kind == "hub" else self.files[split])

    def identity(self, split: str) -> str:
        """A string that changes whenever the split's raw text may have changed (part of the cache key)."""
        if self.kind == "hub":
            return f"hub:{self.name}:{self.config_name}:{split}"
        if self.kind == "prepared":
            return f"prepared:{self.data_id}:{split}"
        stat = self.files[split].stat()
        return f"file:{self.files[split]}:{stat.st_size}:{stat.st_mtime_ns}"

    def load(self, split: str, cache_dir: Path, fields: Sequence[str] = ()) -> datasets.Dataset:
        """The raw split (downloaded once into the HF cache for a Hub dataset). `fields`: the text fields, named
        when a file cannot be read because of their values."""
        if self.kind == "hub":
            try:
                return datasets.load_dataset(self.name, self.config_name, split=split)
            except (OSError, ValueError) as error:  # offline, unreachable, unknown id or split
                raise hub_error(self.name, self.config_name, split, error) from error
        if split not in self.files:
            raise DataError(f"no {split!r} split: this source has {list(self.splits())}")
        path = self.files[split]
        if not path.is_file():
            raise DataError(f"{self.describe(split)} does not exist")
        fmt = FILE_FORMATS[path.suffix.lower()]
        try:
            # the json/csv loaders convert to Arrow once; keep that copy beside our own cache
            return datasets.load_dataset(
                fmt, data_files={split: str(path)}, split=split, cache_dir=str(cache_dir / "raw")
            )
        except Exception as error:  # the readers raise many types (ArrowInvalid, UnicodeDecodeError, pandas ...)
            raise explain_load_error(path, self.describe(split), error, fields) from error


# ---------------------------------------------------------------------------------------------- tokenising
@dataclass
class _Tokenize:
    """The `datasets.map` function: one batch of raw records -> the TOKENIZED_FEATURES columns, plus whether
    each source/summary was truncated (`source_truncated`, `summary_truncated`)."""

    tokenizer: LEDTokenizer
    source_field: str
    summary_field: str
    max_input_length: int
    max_target_length: int

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        summaries = batch[self.summary_field]
        # untruncated first, to count what truncation cuts (the tokenizer would encode in full anyway)
        sources = self.tokenizer.encode_batch(batch[self.source_field])
        targets = self.tokenizer.encode_batch(summaries)
        input_ids = [self.tokenizer._truncate(ids, self.max_input_length) for ids in sources]
        return {
            "input_ids": input_ids,
            "labels": [self.tokenizer._truncate(ids, self.max_target_length) for ids in targets],
            "length": [len(ids) for ids in input_ids],
            "id": list(indices),
            "reference": summaries,
            "source_truncated": [len(ids) > self.max_input_length for ids in sources],
            "summary_truncated": [len(ids) > self.max_target_length for ids in targets],
        }


def tokenize_split(
    raw: datasets.Dataset,
    tokenizer: LEDTokenizer,
    *,
    source_field: str,
    summary_field: str,
    max_input_length: int,
    max_target_length: int,
    num_proc: int | None = None,
    fingerprint: str | None = None,
    desc: str = "Tokenizing",
) -> datasets.Dataset:
    """Tokenise a raw split (truncating, `</s>` kept) into the TOKENIZED_FEATURES columns plus the truncation flags
    `source_truncated`/`summary_truncated`. The text fields must hold strings (see `check_records`)."""
    tokenize = _Tokenize(tokenizer, source_field, summary_field, max_input_length, max_target_length)
    return raw.map(
        tokenize,
        batched=True,
        with_indices=True,
        remove_columns=raw.column_names,
        features=_MAPPED_FEATURES,
        num_proc=num_proc if num_proc and num_proc > 1 else None,
        new_fingerprint=fingerprint,  # spares `datasets` hashing the tokenizer to name its cache file
        desc=desc,
    )


def _save_atomically(dataset: datasets.Dataset, path: Path, stats: dict[str, Any]) -> None:
    # Write beside the target, then rename: a crashed or concurrent run never leaves a half-written cache.
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    dataset.save_to_disk(str(tmp))
    (tmp / SPLIT_STATS).write_text(json.dumps(stats) + "\n")
    try:
        os.replace(tmp, path)
    except OSError:  # another process finished the same cache first
        shutil.rmtree(tmp, ignore_errors=True)


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
            _save_atomically(tokenized.remove_columns(flags), path, stats)
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
