"""Evaluate summaries with ROUGE: score a predictions file, or generate them with a model first.

`evaluate(cfg)` is what `evaluate.py` runs (config: conf/eval.yaml). Two ways in:

- `predictions=FILE.jsonl`: score an existing file, one JSON object per line with string fields `prediction`
  and `reference` (an `id` is allowed and ignored). No model is loaded.
- `ckpt_path=PATH`: load a Lightning checkpoint written by `led.training.module.LEDSummarizer` or a Hugging Face-format
  directory (config.json + weights + tokenizer files), run beam search over a split of the DataModule
  (`data`), and write `predictions.jsonl` (`id` = row of the split, `prediction`, `reference`).

Both write `metrics.json` to `output_dir`: ROUGE-1/2/L/Lsum F1 ×100 (mean over examples), their bootstrap
confidence intervals and the number of examples; the model path adds a lead baseline on the same documents.
Problems a user can fix raise `EvaluationError`, which `evaluate.py` prints as one line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from led.errors import DataError, UserError
from led.files import write_text_atomically
from led.metrics import compute_rouge, format_table, lead_baseline

if TYPE_CHECKING:
    from led.models.led.modeling import LEDForConditionalGeneration

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"
REQUIRED_FIELDS = ("prediction", "reference")
_LINE_FORMAT = (
    "each line must be a JSON object with string fields 'prediction' and 'reference' (an 'id' field is optional), "
    'e.g. {"id": 0, "prediction": "...", "reference": "..."}'
)


class EvaluationError(UserError, ValueError):
    """A problem with evaluation inputs that the user can fix (bad file, missing setting)."""


# ---------------------------------------------------------------------------------------------- files
def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """The records of a predictions file (JSON lines); blank lines are skipped.

    Raises EvaluationError naming the file, the line number and the field for a missing or empty file,
    a line that is not a JSON object, a missing field or a field that is not a string.
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"predictions file {str(path)!r} does not exist; {_LINE_FORMAT}")
    records = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                records.append(_parse_line(line, f"{path}, line {number}"))
    if not records:
        raise EvaluationError(f"predictions file {str(path)!r} is empty; {_LINE_FORMAT}")
    return records


def _parse_line(line: str, where: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise EvaluationError(f"{where}: not valid JSON ({error.msg} at column {error.colno}); {_LINE_FORMAT}") from None
    if not isinstance(record, dict):
        raise EvaluationError(f"{where}: expected a JSON object, got {type(record).__name__}; {_LINE_FORMAT}")
    for name in REQUIRED_FIELDS:
        if name not in record:
            raise EvaluationError(
                f"{where}: missing field {name!r} (fields present: {sorted(record)}); {_LINE_FORMAT}"
            )
        if not isinstance(record[name], str):
            raise EvaluationError(
                f"{where}: field {name!r} must be a string, got {type(record[name]).__name__}; {_LINE_FORMAT}"
            )
    return record


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    write_text_atomically(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


# ---------------------------------------------------------------------------------------------- entry
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run the evaluation `cfg` (conf/eval.yaml) describes; returns what it writes to metrics.json."""
    if bool(cfg.predictions) == bool(cfg.ckpt_path):
        given = "both" if cfg.predictions else "neither"
        raise EvaluationError(
            f"{given} of predictions= and ckpt_path= given: set exactly one, e.g. "
            "`python evaluate.py predictions=outputs/eval/RUN/predictions.jsonl` to score a file, or "
            "`python evaluate.py ckpt_path=PATH data=NAME` to generate with a checkpoint or HF-format directory"
        )
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    baselines: dict[str, list[str]] = {}
    if cfg.predictions:
        records = read_predictions(cfg.predictions)
        source = str(Path(cfg.predictions).resolve())
    else:
        records, baselines = predict(cfg)
        write_jsonl(output_dir / PREDICTIONS_FILE, records)
        source = str(cfg.ckpt_path)

    references = [r["reference"] for r in records]
    rouge = _plain(cfg.rouge)
    systems = {"model": compute_rouge([r["prediction"] for r in records], references, **rouge)}
    for name, outputs in baselines.items():
        systems[name] = compute_rouge(outputs, references, **rouge)
    metrics: dict[str, Any] = {
        **systems["model"],
        "source": source,
        "bootstrap": {"resamples": rouge["bootstrap"], "seed": rouge["seed"], "confidence": rouge["confidence"]},
    }
    if baselines:
        metrics["baselines"] = {name: systems[name] for name in baselines}

    write_text_atomically(output_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    confidence = round(rouge["confidence"] * 100)
    print(f"ROUGE F1 x100, mean over examples [{confidence}% bootstrap interval] for {source}")
    print(format_table(systems))
    print(f"wrote {output_dir / METRICS_FILE}")
    return metrics


# ---------------------------------------------------------------------------------------------- model path
def predict(cfg: DictConfig) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Generate summaries of `cfg.split` with the model at `cfg.ckpt_path`.

    Returns the prediction records (sorted by id) and, when `cfg.baseline == "lead"`, the lead baseline's
    output for the same examples.
    """
    # Imported here so that scoring a predictions file never pays for torch/datasets/lightning imports.
    import torch

    if cfg.baseline not in (None, "lead"):  # checked before hours of generation, not after
        raise EvaluationError(f"baseline={cfg.baseline!r} is not known: use 'lead' or null")
    device = torch.device(_resolve_device(str(cfg.device)))
    dtype = _resolve_dtype(str(cfg.dtype))
    loaded = load_model(str(cfg.ckpt_path))
    datamodule = build_datamodule(cfg, loaded)
    model = loaded.model.to(device=device, dtype=dtype).eval()


    try:
        dataset = datamodule.dataset(cfg.split)
    except DataError as error:  # a bad record in the file to evaluate on: one line from evaluate.py too
        raise EvaluationError(str(error)) from error
    if cfg.limit is not None:
        dataset = dataset.select(range(min(int(cfg.limit), len(dataset))))
    references = list(dataset["reference"])
    generation = _plain(cfg.generation)
    predictions = generate_summaries(model, datamodule, dataset, generation, device)
    records = [{"id": i, "prediction": predictions[i], "reference": references[i]} for i in range(len(references))]

    baselines: dict[str, list[str]] = {}
    if cfg.baseline == "lead":
        documents = datamodule.documents(cfg.split)
        baselines["lead"] = [lead_baseline(documents[i], references[i]) for i in range(len(references))]
    return records, baselines


def generate_summaries(
    model: LEDForConditionalGeneration, datamodule: Any, dataset: Any, generation: dict[str, Any], device: Any
) -> list[str]:
    """Beam-search summaries of every row of the tokenised `dataset`, returned in row order."""
    import torch
    from torch.utils.data import DataLoader

    from led.data.batching import LengthGroupedBatchSampler
    from led.models.generation import generate

    # Longest first, so an out-of-memory error shows on the first batch rather than hours in.
    sampler = LengthGroupedBatchSampler(
        list(dataset["length"]), datamodule.eval_batch_size, pad_to_multiple_of=datamodule.pad_to_multiple_of,
        shuffle=False,
    )
    loader = DataLoader(dataset.select_columns(["input_ids", "labels", "id"]), batch_sampler=sampler,
                        collate_fn=datamodule.collator)
    tokenizer = datamodule.tokenizer
    outputs: dict[int, str] = {}
    for step, batch in enumerate(loader, start=1):
        with torch.inference_mode():
            tokens = generate(model, batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                              global_attention_mask=batch["global_attention_mask"].to(device), **generation)
        # `ids` is the row of the raw split; rows of a `limit`ed dataset are its first rows, so they agree.
        for row, text in zip(batch["ids"].tolist(), tokenizer.decode_batch(tokens.tolist())):
            outputs[row] = text.strip()
        log.info("generated %d/%d summaries (batch %d/%d)", len(outputs), len(dataset), step, len(loader))
    return [outputs[i] for i in range(len(dataset))]


@dataclass
class LoadedModel:
    """A model to evaluate, with what its checkpoint says about its tokenizer and training data."""

    model: LEDForConditionalGeneration
    tokenizer: str | None  # directory or Hub id of its tokenizer, when known
    data: dict[str, Any] | None = None  # the DataModule settings it was trained with (Lightning checkpoints)


def load_model(ckpt_path: str) -> LoadedModel:
    """The model at `ckpt_path`: a Lightning checkpoint file of `led.training.module.LEDSummarizer`, otherwise a
    Hugging Face-format directory or Hub id (whose tokenizer files sit beside the weights)."""
    from led.models.led.modeling import LEDForConditionalGeneration

    path = Path(ckpt_path).expanduser()
    if path.is_file():
        return _load_lightning_checkpoint(path)
    # Hub ids never end in .ckpt: a missing Lightning checkpoint is not looked up on the Hub.
    if not path.is_dir() and (ckpt_path.startswith(("/", ".", "~")) or path.suffix == ".ckpt"):
        raise EvaluationError(
            f"ckpt_path={ckpt_path!r} does not exist; give a Lightning checkpoint file (.ckpt), "
            "a directory with config.json + model.safetensors + tokenizer files, or a Hub id"
        )
    try:
        model = LEDForConditionalGeneration.from_pretrained(ckpt_path)
    except (OSError, ValueError) as error:
        raise EvaluationError(f"could not load a model from ckpt_path={ckpt_path!r}: {error}") from error
    return LoadedModel(model, tokenizer=ckpt_path)


def _load_lightning_checkpoint(path: Path) -> LoadedModel:
    import torch

    from led.training.module import LEDSummarizer

    try:
        module = LEDSummarizer.load_from_checkpoint(str(path), map_location="cpu")
        # Lightning stores the DataModule's save_hyperparameters() beside the module's; mmap avoids a 2nd copy.
        checkpoint = torch.load(str(path), map_location="cpu", mmap=True, weights_only=False)
    except (OSError, RuntimeError, KeyError, ValueError) as error:
        raise EvaluationError(f"could not load {str(path)!r} as a Lightning checkpoint of LEDSummarizer: {error}") from error
    hparams = dict(module.hparams)
    tokenizer = next((hparams[k] for k in _TOKENIZER_HPARAMS if isinstance(hparams.get(k), str)), None)
    data = checkpoint.get("datamodule_hyper_parameters")
    return LoadedModel(module.model, tokenizer=tokenizer, data=dict(data) if data else None)


# Module hyper-parameters that may name the tokenizer (or the pretrained directory that holds it), in order.
_TOKENIZER_HPARAMS = ("tokenizer", "tokenizer_path", "pretrained", "model_name_or_path")


def build_datamodule(cfg: DictConfig, loaded: LoadedModel) -> Any:
    """The DataModule for `cfg.data` (else the checkpoint's training data), with the model's tokenizer and
    attention window."""
    from led.data.datamodule import SummarizationDataModule

    data = cfg.get("data")  # absent unless a conf/data/ option or `+data.KEY=` overrides chose one
    if data is None and loaded.data is None:
        raise EvaluationError(
            "ckpt_path= needs data to evaluate on: choose a data config (data=NAME, see conf/data/) "
            "or give a file, e.g. +data.test_file=test.jsonl +data.source_field=article +data.summary_field=abstract"
        )
    settings = _plain(data) if data is not None else dict(loaded.data or {})
    settings.pop("_target_", None)
    # The model fixes the vocabulary and the padding multiple; data settings only choose the text and lengths.
    if loaded.tokenizer is not None:
        settings["tokenizer"] = loaded.tokenizer
    config = loaded.model.config
    settings.update(pad_to_multiple_of=config.max_window, max_encoder_positions=config.max_encoder_position_embeddings,
                    max_decoder_positions=config.max_decoder_position_embeddings, model_vocab_size=config.vocab_size)
    try:
        return SummarizationDataModule(**settings)
    except (TypeError, ValueError) as error:
        raise EvaluationError(f"data settings {settings}: {error}") from error


def _plain(node: Any) -> dict[str, Any]:
    """A config section as a plain dict with interpolations resolved."""
    container = OmegaConf.to_container(node, resolve=True)
    if not isinstance(container, dict):
        raise EvaluationError(f"expected a config section with keys, got {container!r}")
    return {str(k): v for k, v in container.items()}


def _resolve_dtype(name: str) -> Any:
    import torch

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise EvaluationError(f"dtype={name!r} is not supported: use one of {sorted(dtypes)}")
    return dtypes[name]


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EvaluationError(f"device={device!r} but no CUDA device is available; use device=cpu or device=auto")
    return device
