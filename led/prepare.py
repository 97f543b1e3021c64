"""Download a summarization dataset once and write it for offline use (compute nodes without internet).

    python -m led.prepare dataset=ccdv/pubmed-summarization config_name=document out=/shared/data/pubmed
    python -m led.prepare dataset=scientific_papers config_name=arxiv out=/shared/data/arxiv \\
        tokenizer=allenai/led-large-16384-arxiv max_input_length=16384 max_target_length=512 num_proc=16

Arguments are `key=value` pairs (as in the Hydra training command); the keys are the fields of
`PrepareConfig` below. `dataset` is anything `datasets.load_dataset` accepts: a Hub id or a local directory of
`train/validation/test` jsonl/json/parquet/csv files (`train.jsonl`, ...: read and checked as training reads a data
file, so a bad record is the same one-line error naming the file and line). A Hub dataset that is a loading script
(`scientific_papers`), which `datasets` >= 4 refuses to run, is read from the Hub's parquet export of it
(`led.data.sources.load_hub_dataset`).

The output directory holds
    raw/<split>.jsonl         every split, all fields, as downloaded
    tokenizer/                the tokenizer (tokenizer.json, vocab.json, merges.txt, ...)
    tokenized/<split>-<hash>/ the tokenised splits (`datasets.save_to_disk`), keyed like the DataModule's cache
    led_prepared.json         the manifest that marks the directory
Train with `data.source=<out>` (the tokenizer is then taken from `<out>/tokenizer`). The tokenised splits are
reused when the training config has the same `max_input_length`, `max_target_length`, `source_field` and
`summary_field` as given here; otherwise the training run tokenises the raw jsonl again (needs a writable
`data.cache_dir`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from omegaconf import MISSING

from led.cli import run
from led.data.checks import (
    check_blank_records,
    check_data_file,
    check_split,
    load_data_file,
)
from led.data.datamodule import SummarizationDataModule
from led.data.sources import PREPARED_MANIFEST, SPLITS, load_hub_dataset
from led.errors import DataError
from led.files import write_text_atomically
from led.models.families import load_tokenizer
from led.models.tokenizer_base import TokenizerBase


@dataclass
class PrepareConfig:
    dataset: str = MISSING  # Hub dataset id (or a local dataset directory)
    out: str = MISSING  # output directory (created)
    config_name: str | None = None  # e.g. "arxiv" / "pubmed" for scientific_papers
    tokenizer: str | None = "allenai/led-base-16384"  # None: write raw text only, no tokenised splits
    source_field: str = "article"
    summary_field: str = "abstract"
    max_input_length: int = 4096
    max_target_length: int = 512
    splits: list[str] = field(default_factory=lambda: list(SPLITS))
    num_proc: int | None = None  # processes for tokenising


def prepare(
    splits: Mapping[str, datasets.Dataset],
    out: str | Path,
    *,
    dataset_name: str,
    config_name: str | None = None,
    tokenizer: str | TokenizerBase | None = None,
    source_field: str = "article",
    summary_field: str = "abstract",
    max_input_length: int = 4096,
    max_target_length: int = 512,
    num_proc: int | None = None,
) -> Path:
    """Write `splits` (raw) and, with a tokenizer, their tokenised form to `out`; return `out`."""
    _check_split_names(splits)
    out = Path(out).expanduser()
    fields = [source_field, summary_field]
    for split, dataset in splits.items():  # fail before writing anything, with training's checks and messages
        where = f"{dataset_name} split {split!r}"
        blank = check_split(dataset, fields, where, None, prefix="")
        # Blank records stay in raw/, as downloaded: training skips them (or, with data.strict=true, refuses them).
        check_blank_records(blank, len(dataset), fields, where, None, strict=False)
    raw_files = _write_raw(splits, out)
    manifest = {
        "dataset": dataset_name,
        "config_name": config_name,
        "splits": {split: str(path.relative_to(out)) for split, path in raw_files.items()},
        "num_rows": {split: len(dataset) for split, dataset in splits.items()},
        "data_id": _content_hash(raw_files),
    }
    write_text_atomically(out / PREPARED_MANIFEST, json.dumps(manifest, indent=2) + "\n")
    if tokenizer is not None:
        if not isinstance(tokenizer, TokenizerBase):
            tokenizer = load_tokenizer(tokenizer)  # the family its files are (LED's BPE, PEGASUS-X's Unigram)
        tokenizer.save_pretrained(out / "tokenizer")
        # the DataModule itself tokenises, so the cache folders are exactly the ones training looks for
        SummarizationDataModule(
            source=str(out),
            source_field=source_field,
            summary_field=summary_field,
            max_input_length=max_input_length,
            max_target_length=max_target_length,
            num_proc=num_proc,
        ).prepare_data()
    return out


def _write_raw(splits: Mapping[str, datasets.Dataset], out: Path) -> dict[str, Path]:
    (out / "raw").mkdir(parents=True, exist_ok=True)
    files = {}
    for split, dataset in splits.items():
        files[split] = out / "raw" / f"{split}.jsonl"
        dataset.to_json(str(files[split]), lines=True, force_ascii=False)
    return files


def _content_hash(files: Mapping[str, Path]) -> str:
    """Hash of the raw files' bytes: names the data in the tokenised-cache key, wherever the folder moves."""
    digest = hashlib.sha256()
    for split in sorted(files):
        digest.update(split.encode())
        with open(files[split], "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:32]


def _check_split_names(splits: Sequence[str]) -> None:
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise DataError(f"splits={unknown}: unknown split name(s); valid: {list(SPLITS)}")


def has_split_files(directory: Path) -> bool:
    """Whether `directory` holds a `<split>.<ext>` file (or anything so named) for a split: read by
    `read_split_files`. Other layouts of data files are left to `datasets.load_dataset` (`load_splits`)."""
    return directory.is_dir() and any(path.stem in SPLITS for path in directory.iterdir())


def read_split_files(directory: Path, splits: Sequence[str], fields: Sequence[str]) -> dict[str, datasets.Dataset]:
    """The file `<split>.jsonl` (.json, .parquet, .csv) of each split in `directory`, read and checked as training
    reads a data file (led.data.checks): a bad file is the same one-line DataError, naming the file and line."""
    _check_split_names(splits)
    loaded = {}
    for split in splits:
        named = sorted(path for path in directory.iterdir() if path.stem == split)
        if len(named) != 1:
            found = "none" if not named else ", ".join(path.name for path in named)
            raise DataError(f"dataset={directory} needs one file for split {split!r}, named {split}.jsonl (or .json, "
                            f".parquet, .csv); found {found}. Leave a split out with splits=[...]")
        where = f"file {str(named[0])!r} (split {split!r} of dataset={directory})"
        path = check_data_file(split, str(named[0]), where)
        raw = load_data_file(path, where, fields)
        check_blank_records(check_split(raw, fields, where, path, prefix=""), len(raw), fields, where, path,
                            strict=False)
        loaded[split] = raw
    return loaded


def load_splits(dataset: str, config_name: str | None, splits: Sequence[str]) -> dict[str, datasets.Dataset]:
    """Load the named splits: a local directory of data files, or a Hub dataset (downloaded into the HF cache; a
    loading-script dataset from the Hub's parquet export of it, see `load_hub_dataset`)."""
    if Path(dataset).expanduser().is_dir():
        try:
            loaded = datasets.load_dataset(str(Path(dataset).expanduser()), config_name)
        except Exception as error:  # noqa: BLE001 - the readers raise many types; the user can fix the files
            detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise DataError(f"dataset={dataset}: the directory could not be read as train/validation/test data files "
                            f"({type(error).__name__}: {detail})") from error
    else:
        loaded = load_hub_dataset(dataset, config_name)
    missing = [s for s in splits if s not in loaded]
    if missing:
        raise DataError(f"dataset={dataset} has no split(s) {missing}; it has {list(loaded)}")
    return {split: loaded[split] for split in splits}


def main(argv: Sequence[str] | None = None) -> Path:
    def work(cfg: PrepareConfig) -> Path:
        directory = Path(cfg.dataset).expanduser()
        if cfg.dataset.startswith(("/", ".", "~")) and not directory.exists():  # a path, not a Hub id
            raise DataError(f"dataset={cfg.dataset!r} does not exist; give a directory of train/validation/test data "
                            "files or a Hub dataset id")
        if has_split_files(directory):
            splits = read_split_files(directory, cfg.splits, [cfg.source_field, cfg.summary_field])
        else:
            splits = load_splits(cfg.dataset, cfg.config_name, cfg.splits)
        out = prepare(splits, cfg.out, dataset_name=cfg.dataset,
                      config_name=cfg.config_name, tokenizer=cfg.tokenizer, source_field=cfg.source_field,
                      summary_field=cfg.summary_field, max_input_length=cfg.max_input_length,
                      max_target_length=cfg.max_target_length, num_proc=cfg.num_proc)
        print(f"wrote {out} — train with data.source={out}")
        return out

    return run("led.prepare", __doc__ or "", PrepareConfig, work, argv)


if __name__ == "__main__":
    main()
