"""Raw text of each split (`RawSource`: a Hub dataset, local files or a `led.prepare` directory) and its tokenisation
into the cached TOKENIZED_FEATURES columns (`tokenize_split`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from led.data.checks import (
    DataError,
    check_data_file,
    hub_error,
    load_data_file,
    record_locator,
    script_dataset_error,
)
from led.errors import first_line
from led.models.hub import looks_like_local_path
from led.models.tokenizer_base import TokenizerBase

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
HUB_CONFIGS = {"scientific_papers": ("arxiv", "pubmed")}  # Hub datasets that need a config name
PREPARED_MANIFEST = "led_prepared.json"  # marks a directory written by led.prepare
CACHE_FORMAT = 2  # bump when the tokenised content changes (2: empty records skipped), so old caches are not reused
SPLIT_STATS = "led_split_stats.json"  # beside a tokenised split: record, skip and truncation counts
SCRIPT_REFUSED = "Dataset scripts are no longer supported"  # datasets >= 4's RuntimeError for a loading script
PARQUET_EXPORT = "refs/convert/parquet"  # the Hub's branch holding a parquet copy of a dataset, a folder per config

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
        if looks_like_local_path(source):
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
        try:
            info = json.loads(manifest.read_text(encoding="utf-8"))
            files = {split: directory / relative for split, relative in info["splits"].items()}
            return cls("prepared", name=str(directory.resolve()), files=files, data_id=str(info["data_id"]))
        except (ValueError, KeyError, TypeError, AttributeError) as error:  # not JSON or UTF-8, or keys missing
            raise DataError(f"source {str(directory)!r}: its {PREPARED_MANIFEST} cannot be read "
                            f"({type(error).__name__}: {first_line(error)}); write the directory again with "
                            "`python -m led.prepare`") from None

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
            return load_hub_dataset(self.name, self.config_name, split)  # type: ignore[return-value]
        if split not in self.files:
            raise DataError(f"no {split!r} split: this source has {list(self.splits())}")
        path = self.files[split]
        if not path.is_file():
            raise DataError(f"{self.describe(split)} does not exist")
        # the json/csv loaders' Arrow copy is kept beside our own cache
        return load_data_file(path, self.describe(split), fields, cache_dir / "raw", split)


def load_hub_dataset(name: str, config_name: str | None,
                     split: str | None = None) -> datasets.Dataset | datasets.DatasetDict:
    """A Hub dataset as it is on the Hub: one split, or (`split=None`) all of them. The training DataModule and
    `python -m led.prepare` both load through here.

    `datasets` >= 4 refuses datasets that are a loading script (`scientific_papers` is one) with a RuntimeError; the
    Hub keeps a parquet copy of most of them on the branch `refs/convert/parquet`, one folder per config, which is
    loaded instead (one log line says so). Any failure, whatever the library raises, is one `DataError` line.
    """
    try:
        return datasets.load_dataset(name, config_name, split=split)
    except Exception as error:  # noqa: BLE001 - offline, unknown id or split, gated, a script, ...: all one line
        if not (isinstance(error, RuntimeError) and SCRIPT_REFUSED in str(error)):
            raise hub_error(name, config_name, split, error) from error
        script_error = error
    config = f" ({config_name})" if config_name else ""
    log.warning("Hub dataset %r%s is a loading script, which datasets %s no longer runs: loading the Hub's parquet "
                "export of it instead (revision %s%s)", name, config, datasets.__version__, PARQUET_EXPORT,
                f", folder {config_name}" if config_name else "")
    try:
        # The export has no dataset card naming its configs, only a folder per config: hence data_dir, not the
        # config name (which the parquet loader would refuse as an unknown config).
        loaded = datasets.load_dataset(name, split=split, revision=PARQUET_EXPORT, data_dir=config_name)
    except Exception as error:  # noqa: BLE001 - as above
        raise script_dataset_error(name, config_name, script_error, error) from error
    counts = {split: len(loaded)} if split else {key: len(value) for key, value in loaded.items()}
    # The Hub converts only the first part of a very large dataset: the counts show what arrived.
    log.info("loaded the parquet export of %r%s: %s records", name, config,
             ", ".join(f"{key} {count:,}" for key, count in counts.items()))
    return loaded


# ---------------------------------------------------------------------------------------------- tokenising
@dataclass
class _Tokenize:
    """The `datasets.map` function: one batch of raw records -> the TOKENIZED_FEATURES columns, plus whether
    each source/summary was truncated (`source_truncated`, `summary_truncated`)."""

    tokenizer: TokenizerBase
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
    tokenizer: TokenizerBase,
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
