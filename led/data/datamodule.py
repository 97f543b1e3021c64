"""Summarization data for both families (LED, PEGASUS-X): raw text -> tokenised, cached splits -> length-grouped
padded batches.

`SummarizationDataModule` is built from plain values (Hydra's `conf/data/*.yaml`, whose `_target_` names it). Where
the text comes from:

- a Hub dataset: `source="ccdv/pubmed-summarization"`, `"ccdv/arxiv-summarization"`, or
  `source="scientific_papers", config_name="arxiv"|"pubmed"`;
- local files: `train_file=`, `validation_file=`, `test_file=` (`.jsonl`/`.json`/`.parquet`/`.csv`);
- the synthetic corpus (`synthetic=`, `led.data.synthetic.write_corpus` arguments): generated on first use, then
  its files are the splits;
- a directory written by `python -m led.prepare` (raw jsonl + tokenizer + tokenised splits, for compute nodes
  without internet): `source=DIR`.

The tokenizer is a directory or Hub id, or, for a model trained from scratch, one of the model's family (LED:
byte-level BPE; PEGASUS-X: SentencePiece Unigram) of `tokenizer_vocab_size` tokens trained on the training split
into `tokenizer_dir`: the directory is known when the DataModule is built (the run records it before the model
exists), the training happens on first use, after
`match_model(model)` has checked the lengths against the model (the padding multiple, the position tables and the
embedding rows), so a setting that cannot work stops the run before any work.

Each split is tokenised once (`datasets.map`, batched, `num_proc` processes) and saved under `cache_dir` in a
folder named by a hash of the tokenizer's content, the lengths, the field names and the raw data's identity;
a later run with the same values loads it instead of tokenising again.

Batches follow docs/CONTRACTS.md ("Batches"): `input_ids`, `attention_mask`, `global_attention_mask` (B, S),
`labels` (B, T) with -100 at padding, `ids` (B,) = record index in its split (among the records kept). S is
padded to a multiple of `pad_to_multiple_of` (the model's largest attention window). `references(split)[id]` is
the raw summary.

Bad data is caught before training starts (led/data/checks.py): every problem raises one `DataError` naming
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
from typing import TYPE_CHECKING, Annotated, Any

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
    check_blank_records,
    check_model_limits,
    check_sizes,
    check_split,
    check_vocab,
    empty_records_error,
)
from led.data.sources import CACHE_FORMAT, SPLIT_STATS, RawSource, tokenize_split
from led.data.synthetic import ensure_corpus, write_corpus
from led.errors import UserError, first_line
from led.files import write_directory_atomically
from led.models.families import FAMILIES, family, load_tokenizer, tokenizer_family
from led.models.tokenizer_base import TokenizerBase

if TYPE_CHECKING:
    from led.models.base import EncoderDecoderModel

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- the module
class SummarizationDataModule(L.LightningDataModule):
    """Tokenised, cached summarization splits served as length-grouped, padded batches for a model of any family.

    Args (all plain values):
        source: Hub dataset id or a `led.prepare` directory (or None with `*_file`).
        tokenizer: tokenizer directory or Hub id; may be left out for a `led.prepare` directory.
        config_name: Hub dataset config (`scientific_papers` needs "arxiv" or "pubmed").
        train_file, validation_file, test_file: local `.jsonl`/`.json`/`.parquet`/`.csv` files.
        source_field, summary_field: record fields holding the document and its summary.
        max_input_length, max_target_length: truncation lengths in tokens, `<s>`/`</s>` included.
        pad_to_multiple_of: inputs are padded to a multiple of it: what the model's encoder pads to (LED's largest
            attention window, PEGASUS-X's block size), which `match_model` sets (1 until then: no assumption).
        batch_size: training examples per batch; eval_batch_size: the same for validation/test
            (defaults to batch_size).
        max_tokens_per_batch: training batches hold as many examples as keep `count * padded input length`
            within this budget (batch_size is then unused for training).
        group_by_length: training batches of similar length (evaluation is always sorted by length).
        curriculum_epochs: the first N training epochs go from the shortest batches to the longest (a length
            curriculum: models trained from scratch learn to find facts in short documents first).
        global_attention: for LED: "first" (the `<s>` token), "none", or a list of token ids made global as well
            as the first token (e.g. section markers). A family without a global attention mask (PEGASUS-X: learned
            global tokens) gets none, whatever this says.
        num_workers: DataLoader workers; num_proc: processes for tokenising.
        cache_dir: where tokenised splits are stored (default: `<prepared dir>/tokenized`, else
            `<HF datasets cache>/led-tokenized`).
        seed: shuffling seed, shared by all ranks.
        strict: records with an empty or whitespace-only source or summary raise a DataError instead of being
            skipped (and counted in the log).
        max_encoder_positions, max_decoder_positions: the model's position-table sizes; when given, lengths
            that would not fit raise a DataError here rather than a shape error mid-training.
        model_vocab_size: the model's embedding rows; a larger tokenizer vocabulary raises a DataError.
        synthetic: `led.data.synthetic.write_corpus` arguments (dir, split sizes, seed, ...): the corpus is
            generated in dir unless it already is (with these values); its files are the three splits' files.
        tokenizer_vocab_size, tokenizer_training_docs, tokenizer_dir: with tokenizer=None, a tokenizer of the model's
            family (LED: byte-level BPE, PEGASUS-X: Unigram) of tokenizer_vocab_size tokens is trained on the first
            tokenizer_training_docs usable training records (all when None; read and checked as every split is)
            and saved in tokenizer_dir when the tokenizer is first needed; a directory that holds one already keeps
            it (a resumed run). With a tokenizer given, tokenizer_dir receives a copy of it on first use (the run's
            tokenizer/, which its checkpoints name), unless it holds one already.
    The recipes hand the model's family, pad_to_multiple_of and the three model limits over with
    `match_model(model)`; the tokenizer is that family's (without match_model: the family its files are).
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
        pad_to_multiple_of: int = 1,
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
        # Annotated: the keys are write_corpus's arguments; led.config_check checks them against it.
        synthetic: Annotated[dict[str, Any] | None, write_corpus] = None,
        tokenizer_vocab_size: int | None = None,
        tokenizer_training_docs: int | None = None,
        tokenizer_dir: str | None = None,
    ) -> None:
        super().__init__()
        check_sizes(max_input_length, max_target_length, pad_to_multiple_of, batch_size, eval_batch_size,
                    max_tokens_per_batch, num_workers)
        check_model_limits(max_input_length, max_target_length, pad_to_multiple_of, max_encoder_positions,
                           max_decoder_positions)
        self.source = RawSource.resolve(source, config_name,
                                        _split_files(synthetic, train_file, validation_file, test_file))
        # A tokenizer to train is only named here (its directory); `tokenizer` trains it on first use, so that the
        # checks that need no data (match_model's lengths against the model) stop a run before that work.
        self._tokenizer_training: tuple[int, int | None] | None = None
        if not tokenizer and tokenizer_vocab_size:
            tokenizer = _tokenizer_dir_to_train(self.source, tokenizer_dir, tokenizer_vocab_size)
            self._tokenizer_training = (tokenizer_vocab_size, tokenizer_training_docs)
        tokenizer = self.tokenizer_path = _resolve_tokenizer_path(tokenizer, self.source)
        # A tokenizer taken from elsewhere (a pretrained model, a Hub id, a prepared directory) is copied into
        # tokenizer_dir on first use, and the run records that copy: its checkpoints need nothing outside it.
        self._tokenizer_copy_from: str | None = None
        if tokenizer_dir and self._tokenizer_training is None and not _same_path(tokenizer, tokenizer_dir):
            self._tokenizer_copy_from, tokenizer = tokenizer, tokenizer_dir
            self.tokenizer_path = tokenizer_dir
        # Saved now: save_hyperparameters reads the arguments' current values, so `tokenizer` is the directory to
        # train into or the one found, as the LightningModule records it (Lightning's loggers insist that shared keys
        # agree).
        self.save_hyperparameters()
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
        self.cache_dir = _cache_dir(cache_dir, self.source)
        self.model_type: str | None = None  # the model's family, from match_model
        self._tokenizer: TokenizerBase | None = None
        self._datasets: dict[str, datasets.Dataset] = {}

    @property
    def tokenizer(self) -> TokenizerBase:
        if self._tokenizer is None:
            if self._tokenizer_training is not None:
                self._train_tokenizer(*self._tokenizer_training)
            if self._tokenizer_copy_from is not None:
                self._copy_tokenizer(self._tokenizer_copy_from)
            self._tokenizer = self._load_tokenizer(self.tokenizer_path)
        return self._tokenizer

    @property
    def collator(self) -> SummarizationCollator:
        return SummarizationCollator(self.tokenizer.pad_token_id, self.pad_to_multiple_of,
                                     self.global_attention if self._global_mask else None)

    @property
    def _global_mask(self) -> bool:
        """Whether batches carry a global attention mask: only for a family that takes one (LED; before
        match_model, when the family is not known, they do)."""
        return self.model_type is None or family(self.model_type).model_class.takes_global_attention_mask

    def match_model(self, model: EncoderDecoderModel) -> None:
        """The model these batches are for: its family's tokenizer; inputs padded to a multiple of what its encoder
        pads to; lengths and vocabulary checked against its position limits and embeddings now, a DataError before
        any tokenising, instead of a shape error mid-training. train.py and evaluate.py both call it."""
        if self._tokenizer is not None and self.model_type != model.config.model_type:
            self._tokenizer = None  # loaded before the family was known: load it again as this family's
        self.model_type = model.config.model_type
        limits = {"pad_to_multiple_of": model.input_multiple,
                  "max_encoder_positions": model.max_source_positions,
                  "max_decoder_positions": model.max_target_positions,
                  "model_vocab_size": model.config.vocab_size}
        check_sizes(self.max_input_length, self.max_target_length, limits["pad_to_multiple_of"], self.batch_size,
                    self.eval_batch_size, self.max_tokens_per_batch, self.num_workers)
        check_model_limits(self.max_input_length, self.max_target_length, limits["pad_to_multiple_of"],
                           limits["max_encoder_positions"], limits["max_decoder_positions"])
        self.pad_to_multiple_of, self.model_vocab_size = limits["pad_to_multiple_of"], limits["model_vocab_size"]
        self.hparams.update(limits)  # the checkpoint's datamodule_hyper_parameters: what these batches were
        if self._tokenizer is not None:
            check_vocab(self._tokenizer.vocab_size, self.model_vocab_size, self.tokenizer_path)

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
        return self.eval_dataloader("validation")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")

    def eval_dataloader(self, split: str) -> DataLoader:
        """The batches of a split as validation sees them: sorted by length (longest first), `eval_batch_size` each,
        no randomness. evaluate.py generates over these too: the same rows padded together give the same summaries."""
        return self._dataloader(split, shuffle=False)

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
        try:
            stats = json.loads(stats_file.read_text()) if stats_file.is_file() else None
            tokenized = datasets.load_from_disk(str(path))
        except Exception as error:  # noqa: BLE001 - a damaged folder: datasets and pyarrow raise many types
            raise DataError(f"the tokenised {split} split {path} cannot be read ({type(error).__name__}: "
                            f"{first_line(error)}); delete that folder to tokenise {self.source.describe(split)} "
                            "again") from None
        if stats is not None:
            if self.strict and stats["skipped"]:  # a cache built without strict
                raise self._empty_records_error(split, stats["skipped"], stats["records"], stats["first_skipped"])
            if self._replicas()[1] == 0:
                self._log_stats(split, stats)
        return tokenized

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
        """The raw split checked (led.data.checks.check_split: fields, types, no nulls) without its empty records,
        and the record counts. Tokenising and tokenizer training both read a split through here."""
        where, fields = self.source.describe(split), [self.source_field, self.summary_field]
        raw = self.source.load(split, self.cache_dir, fields)
        path = None if self.source.kind == "hub" else self.source.files[split]
        empty = check_split(raw, fields, where, path)
        check_blank_records(empty, len(raw), fields, where, path, self.strict)
        stats = {"records": len(raw), "skipped": len(empty), "first_skipped": empty[0] if empty else None}
        if empty:
            empty_set = set(empty)
            raw = raw.select([i for i in range(len(raw)) if i not in empty_set])
        return raw, stats

    def _train_tokenizer(self, vocab_size: int, training_docs: int | None) -> None:
        """A tokenizer of the model's family (LED before match_model) trained on the first `training_docs` usable
        training records (documents and summaries), saved in `tokenizer_path`; one saved there already is kept (a
        resumed run keeps its vocabulary)."""
        out_dir = Path(self.tokenizer_path)
        if not (out_dir / "tokenizer.json").is_file():
            raw, _ = self._usable_raw("train")
            limit = min(len(raw), int(training_docs or len(raw)))
            fields = [self.source_field, self.summary_field]
            texts = (record[field] for record in raw.select(range(limit)) for field in fields)
            trained_for = FAMILIES[self.model_type or "led"]
            try:
                tokenizer = trained_for.tokenizer_class.train(texts, vocab_size=vocab_size)
            except ValueError as e:  # a vocabulary too small for the family's special tokens
                raise DataError(f"tokenizer_vocab_size={vocab_size}: {e}") from None
            tokenizer.save_pretrained(out_dir)
            log.info("trained a %d-token %s tokenizer on %d documents of %s -> %s", tokenizer.vocab_size,
                     trained_for.name, limit, self.source.describe("train"), out_dir)
        self._tokenizer_training = None

    def _load_tokenizer(self, path: str) -> TokenizerBase:
        """The tokenizer at `path`, of the model's family, its vocabulary checked against the embeddings."""
        try:
            tokenizer = load_tokenizer(path, self.model_type)
        except UserError:  # a file that cannot be read: its message names it
            raise
        except ValueError as e:  # another family's tokenizer, or a directory that holds none
            raise DataError(f"tokenizer={path}: {e}") from None
        check_vocab(tokenizer.vocab_size, self.model_vocab_size, path)
        return tokenizer

    def _copy_tokenizer(self, source: str) -> None:
        """The tokenizer at `source` (checked as when it is used directly, so a refused run leaves no copy) saved in
        `tokenizer_path`, the run's tokenizer/; one saved there already is kept (a resumed run needs no source)."""
        out_dir = Path(self.tokenizer_path)
        if tokenizer_family(out_dir) is None:
            tokenizer = self._load_tokenizer(source)
            write_directory_atomically(out_dir, tokenizer.save_pretrained, keep_existing=True)
            log.info("copied the tokenizer of %s into %s: the run's checkpoints name this copy", source, out_dir)
        self._tokenizer_copy_from = None

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


def _split_files(synthetic: dict[str, Any] | None, train_file: str | None, validation_file: str | None,
                 test_file: str | None) -> dict[str, str | None]:
    """The file of each split: those given, or those of the synthetic corpus `synthetic` describes (generated first
    unless they exist)."""
    files = {"train": train_file, "validation": validation_file, "test": test_file}
    if not synthetic:
        return files
    if any(files.values()):
        raise DataError(f"give either synthetic= (a generated corpus) or train_file/validation_file/test_file "
                        f"(got {files}), not both")
    return {split: str(path) for split, path in ensure_corpus(**synthetic).items()}


def _cache_dir(cache_dir: str | None, source: RawSource) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    if source.kind == "prepared":
        return Path(source.name) / "tokenized"
    return Path(datasets.config.HF_DATASETS_CACHE) / "led-tokenized"


def _tokenizer_dir_to_train(source: RawSource, out_dir: str | None, vocab_size: int) -> str:
    """Where the tokenizer `tokenizer_vocab_size` asks for will be trained; checked now, before any work: the
    directory must be set, and, unless it holds one already (a resumed run), there must be a training file."""
    if not out_dir:
        raise DataError(f"tokenizer_vocab_size={vocab_size} asks for a tokenizer trained on the training file, but "
                        "tokenizer_dir (where it is saved) is not set; set tokenizer_dir=DIR, or tokenizer=DIR")
    if not (Path(out_dir) / "tokenizer.json").is_file() and (source.kind == "hub" or "train" not in source.files):
        raise DataError(f"no tokenizer given and no training file to train one on: set tokenizer= to a directory or "
                        f"Hub id (e.g. the pretrained model's), or train_file= (tokenizer_vocab_size={vocab_size})")
    return out_dir


def _same_path(a: str, b: str) -> bool:
    """Whether two tokenizer locations are one directory (a Hub id is never a local directory)."""
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _resolve_tokenizer_path(tokenizer: str | None, source: RawSource) -> str:
    if tokenizer:
        return tokenizer
    prepared = Path(source.name) / "tokenizer"
    if source.kind == "prepared" and prepared.is_dir():
        return str(prepared)
    raise DataError(
        "no tokenizer given: set tokenizer= to a directory or Hub id (e.g. 'allenai/led-base-16384'), or "
        "tokenizer_vocab_size= to train one on train_file; only a `led.prepare` directory that holds tokenizer/ can "
        "go without it"
    )
