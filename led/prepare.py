"""Download a summarization dataset once and write it for offline use (compute nodes without internet).

    python -m led.prepare dataset=ccdv/pubmed-summarization out=/shared/data/pubmed
    python -m led.prepare dataset=scientific_papers config_name=arxiv out=/shared/data/arxiv \\
        tokenizer=allenai/led-large-16384-arxiv max_input_length=16384 max_target_length=512 num_proc=16

Arguments are `key=value` pairs (as in the Hydra training command); the keys are the fields of
`PrepareConfig` below. `dataset` is anything `datasets.load_dataset` accepts: a Hub id or a local directory of
`train/validation/test` jsonl/json/parquet/csv files.

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
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from led.data.checks import check_fields
from led.data.datamodule import SummarizationDataModule
from led.data.sources import PREPARED_MANIFEST, SPLITS
from led.files import write_text_atomically
from led.models.tokenizer import LEDTokenizer


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
    tokenizer: str | LEDTokenizer | None = None,
    source_field: str = "article",
    summary_field: str = "abstract",
    max_input_length: int = 4096,
    max_target_length: int = 512,
    num_proc: int | None = None,
) -> Path:
    """Write `splits` (raw) and, with a tokenizer, their tokenised form to `out`; return `out`."""
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split name(s) {unknown}; valid: {list(SPLITS)}")
    out = Path(out).expanduser()
    for split, dataset in splits.items():  # fail before writing anything
        check_fields(dataset, [source_field, summary_field], f"{dataset_name} split {split!r}")
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
        if not isinstance(tokenizer, LEDTokenizer):
            tokenizer = LEDTokenizer.from_pretrained(tokenizer)
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


def load_splits(dataset: str, config_name: str | None, splits: Sequence[str]) -> dict[str, datasets.Dataset]:
    """Load the named splits with `datasets.load_dataset` (downloads a Hub dataset into the HF cache)."""
    loaded = datasets.load_dataset(dataset, config_name)
    missing = [s for s in splits if s not in loaded]
    if missing:
        raise ValueError(f"dataset {dataset!r} has no split(s) {missing}; it has {list(loaded)}")
    return {split: loaded[split] for split in splits}


def main(argv: Sequence[str] | None = None) -> Path:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg: PrepareConfig = OmegaConf.to_object(  # type: ignore[assignment]
            OmegaConf.merge(OmegaConf.structured(PrepareConfig), OmegaConf.from_dotlist(args))
        )
    except OmegaConfBaseException as error:  # missing/unknown key, wrong type: show it with the usage
        raise SystemExit(f"led.prepare: {str(error).splitlines()[0]}\n{__doc__}") from error
    out = prepare(
        load_splits(cfg.dataset, cfg.config_name, cfg.splits),
        cfg.out,
        dataset_name=cfg.dataset,
        config_name=cfg.config_name,
        tokenizer=cfg.tokenizer,
        source_field=cfg.source_field,
        summary_field=cfg.summary_field,
        max_input_length=cfg.max_input_length,
        max_target_length=cfg.max_target_length,
        num_proc=cfg.num_proc,
    )
    print(f"wrote {out} — train with data.source={out}")
    return out


if __name__ == "__main__":
    main()
