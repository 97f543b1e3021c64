"""Evaluate summaries with ROUGE: score a predictions file, or generate them with a model first.

`evaluate(cfg)` is what `evaluate.py` runs (config: conf/eval.yaml). Two ways in:

- `predictions=FILE.jsonl`: score an existing file, one record per line with text fields `prediction` and
  `reference` (an `id` is allowed and ignored). No model is loaded. The file is read and checked as training reads a
  data file (led.data.checks), so a bad file gets the same one-line DataError as it would there.
- `ckpt_path=PATH`: load a Lightning checkpoint written by `led.training.module.LEDSummarizer` or a Hugging Face-format
  directory (config.json + weights + tokenizer files), run beam search over a split of the DataModule
  (`data`), and write `predictions.jsonl` (`id` = row of the split, `prediction`, `reference`).

The model path follows the model: its generation settings are those it was validated with (a Lightning checkpoint's
`generation` hyper-parameters, an exported directory's generation_config.json) under what `generation.KEY=V` sets,
and a Lightning checkpoint's data settings (lengths, fields, batch sizes, the corpus) are used under any
`+data.KEY=V`. Generation runs over the batches validation runs over (`SummarizationDataModule.eval_dataloader`), so
`ckpt_path=RUN/checkpoints/last.ckpt split=validation limit=<module.val_rouge_examples>` gives the run's validation
summaries and ROUGE exactly.

Both write `metrics.json` to `output_dir`: ROUGE-1/2/L/Lsum F1 ×100 (mean over examples), their bootstrap
confidence intervals and the number of examples; the model path adds the generation settings and a lead baseline on
the same documents. Problems a user can fix raise a `UserError` (`EvaluationError` for evaluation's own settings,
`DataError` for data), which `evaluate.py` prints as one line.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import MISSING, DictConfig, OmegaConf

from led.errors import ConfigError, UserError
from led.files import write_text_atomically
from led.metrics import (
    ROUGE_TYPES,
    corpus_rouge,
    format_table,
    lead_baseline,
    rouge_by_length,
    rouge_per_example,
)
from led.report import write_report_safely

if TYPE_CHECKING:
    from led.data.datamodule import SummarizationDataModule
    from led.models.base import EncoderDecoderModel

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"
PREDICTION_FIELDS = ("prediction", "reference")
DOCUMENT_START_CHARS = 600  # of each document, in predictions.jsonl: enough to see what the summary is about
_FIELDS_HINT = ("A predictions file holds one record per line with text fields 'prediction' and 'reference' (an "
                "'id' is optional)")

# The DataModule settings that choose the text; a `+data.` override naming one replaces the checkpoint's source.
SOURCE_KEYS = ("source", "config_name", "train_file", "validation_file", "test_file", "synthetic")
DATAMODULE = "led.data.datamodule.SummarizationDataModule"
GENERATE = "led.models.generation.generate"
# Generation keys that stay with the model (its vocabulary's ids), not shown among the settings.
_TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "forced_bos_token_id",
              "forced_eos_token_id")
# `generate` lets max_new_tokens win over max_length (and min_new_tokens over min_length): a length given on the
# command line replaces the model's value of its pair, which would otherwise win over it unseen.
_PAIRED = {"max_length": "max_new_tokens", "max_new_tokens": "max_length", "min_length": "min_new_tokens",
           "min_new_tokens": "min_length"}


class EvaluationError(UserError, ValueError):
    """A problem with evaluation's own settings that the user can fix (a missing choice, a model that won't load)."""


# ---------------------------------------------------------------------------------------------- files
def read_predictions(path: str | Path) -> list[dict[str, str]]:
    """The `prediction` and `reference` of every record of a predictions file (JSON lines; .json, .parquet and .csv
    are read too); blank lines are skipped, blank texts kept (an empty summary is scored, as zero).

    A missing, empty or unreadable file, a line that is not a JSON object, a missing field, or a value that is not
    text is one DataError naming the file, the line and the field, worded as for a training file.
    """
    # Imported here so that `import led.recipes.evaluate` stays light; `datasets` is the reader training uses.
    import datasets

    from led.data.checks import check_data_file, check_split, load_data_file

    file = check_data_file("predictions", str(path))
    where = f"predictions={str(file)!r}"
    bars = not datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # the one line an error prints stays one line
    try:
        with tempfile.TemporaryDirectory() as cache:  # the reader's Arrow copy: nothing left behind in ~/.cache
            raw = load_data_file(file, where, PREDICTION_FIELDS, Path(cache))
            check_split(raw, PREDICTION_FIELDS, where, file, hint=_FIELDS_HINT)
            columns = [raw[name] for name in PREDICTION_FIELDS]
    finally:
        if bars:
            datasets.enable_progress_bars()
    # An empty CSV cell loads as null: an empty text.
    return [{name: value or "" for name, value in zip(PREDICTION_FIELDS, row)} for row in zip(*columns)]


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
    if cfg.predictions:
        predicted = Predicted(read_predictions(cfg.predictions))
        source = str(Path(cfg.predictions).resolve())
    else:
        predicted = predict(cfg)
        source = str(cfg.ckpt_path)

    references = [r["reference"] for r in predicted.records]
    rouge = _plain(cfg.rouge)
    # Per example, kept: predictions.jsonl records them and the by-length table buckets them.
    scores = {"model": rouge_per_example([r["prediction"] for r in predicted.records], references)}
    for name, outputs in predicted.baselines.items():
        scores[name] = rouge_per_example(outputs, references)
    systems = {name: corpus_rouge(system, **rouge) for name, system in scores.items()}
    if not cfg.predictions:
        for record, row in zip(predicted.records, scores["model"]):
            record.update({name: round(float(value), 2) for name, value in zip(ROUGE_TYPES, row)})
        write_jsonl(output_dir / PREDICTIONS_FILE, predicted.records)
    metrics: dict[str, Any] = {
        **systems["model"],
        "source": source,
        "bootstrap": {"resamples": rouge["bootstrap"], "seed": rouge["seed"], "confidence": rouge["confidence"]},
    }
    if predicted.generation is not None:
        metrics["generation"] = predicted.generation
    if predicted.baselines:
        metrics["baselines"] = {name: systems[name] for name in predicted.baselines}
    if predicted.records and all("input_tokens" in r for r in predicted.records):
        metrics["by_length"] = rouge_by_length([r["input_tokens"] for r in predicted.records], scores, **rouge)

    write_text_atomically(output_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    confidence = round(rouge["confidence"] * 100)
    print(f"ROUGE F1 x100, mean over examples [{confidence}% bootstrap interval] for {source}")
    print(format_table(systems))
    print(f"wrote {output_dir / METRICS_FILE}")
    write_report_safely(output_dir)
    return metrics


# ---------------------------------------------------------------------------------------------- model path
@dataclass
class Predicted:
    """What is scored: the records (`prediction`, `reference`, with `id` when generated), the baselines' outputs
    for the same examples, and the generation settings that produced the predictions (None for a file)."""

    records: list[dict[str, Any]]
    baselines: dict[str, list[str]] = field(default_factory=dict)
    generation: dict[str, Any] | None = None


def predict(cfg: DictConfig) -> Predicted:
    """Generate summaries of the first `cfg.limit` examples (all when null) of `cfg.split` with the model at
    `cfg.ckpt_path`; with `cfg.baseline == "lead"`, the lead baseline's output for the same examples too."""
    # Imported here so that scoring a predictions file never pays for torch/lightning imports.
    import torch

    if cfg.baseline not in (None, "lead"):  # checked before hours of generation, not after
        raise EvaluationError(f"baseline={cfg.baseline!r} is not known: use 'lead' or null")
    device = torch.device(_resolve_device(str(cfg.device)))
    dtype = _resolve_dtype(str(cfg.dtype))
    loaded = load_model(str(cfg.ckpt_path))
    given = _user_generation(cfg)
    settings = data_settings(cfg, loaded)
    check_settings(settings, given)
    generation = generation_settings(loaded.generation, given, loaded.model.max_target_positions)
    datamodule = build_datamodule(settings, loaded.model)
    print(f"generation: {describe_generation(generation, given)}")
    model = loaded.model.to(device=device, dtype=dtype).eval()

    references = datamodule.references(cfg.split)
    count = len(references) if cfg.limit is None else min(int(cfg.limit), len(references))
    predictions = generate_summaries(model, datamodule, cfg.split, count, generation, device)
    documents = datamodule.documents(cfg.split)[:count]
    # Untruncated lengths: the share the model never saw, and the by-length table's buckets.
    input_tokens = [len(ids) for ids in datamodule.tokenizer.encode_batch(documents)]
    records = [{"id": i, "prediction": predictions[i], "reference": references[i], "input_tokens": input_tokens[i],
                "truncated": input_tokens[i] > datamodule.max_input_length,
                "document_start": documents[i][:DOCUMENT_START_CHARS]} for i in range(count)]
    baselines: dict[str, list[str]] = {}
    if cfg.baseline == "lead":
        baselines["lead"] = [lead_baseline(documents[i], references[i]) for i in range(count)]
    return Predicted(records, baselines, generation)


def generate_summaries(model: EncoderDecoderModel, datamodule: SummarizationDataModule, split: str,
                       count: int, generation: dict[str, Any], device: Any) -> list[str]:
    """Summaries of the split's examples with ids below `count`, returned in id order.

    They are generated over the batches validation runs over (`eval_dataloader`: by length, longest first), each
    example padded with the same neighbours and generated beside the same rows as in the run's validation (which
    also summarises only the ids below module.val_rouge_examples): a different padding or batch changes the floats,
    and with them, where beams are close, the summary.
    """
    import torch

    from led.models.generation import generate

    tokenizer = datamodule.tokenizer
    outputs: dict[int, str] = {}
    for batch in datamodule.eval_dataloader(split):
        rows = (batch["ids"] < count).nonzero().squeeze(1)
        if len(rows) == 0:
            continue
        global_mask = batch.get("global_attention_mask")  # LED's; none for PEGASUS-X
        with torch.inference_mode():
            tokens = generate(model, batch["input_ids"][rows].to(device),
                              batch["attention_mask"][rows].to(device),
                              None if global_mask is None else global_mask[rows].to(device), **generation)
        for example_id, text in zip(batch["ids"][rows].tolist(), tokenizer.decode_batch(tokens.tolist())):
            outputs[example_id] = text.strip()
        log.info("generated %d/%d summaries", len(outputs), count)
    return [outputs[i] for i in range(count)]


# ---------------------------------------------------------------------------------------------- generation settings
def _user_generation(cfg: DictConfig) -> dict[str, Any]:
    """The generation settings given in conf/eval.yaml or on the command line (those not left null)."""
    node = cfg.get("generation")  # absent after `~generation`
    given = _plain(node) if node is not None else {}
    return {key: value for key, value in given.items() if not key.startswith("_") and value is not None}


def model_generation_settings(model: EncoderDecoderModel, run_settings: dict[str, Any]) -> dict[str, Any]:
    """The generation settings the model was validated with: its checkpoint's own defaults (generation_config.json,
    config.json) under `run_settings` (a training run's `generation` node). The model keeps only its token ids, so
    the settings `generate` is called with are all the settings there are."""
    from led.models.generation import GenerationConfig

    defaults = (model.generation_config or GenerationConfig.from_model_config(model.config)).to_dict()
    model.generation_config = GenerationConfig.from_dict({k: defaults.pop(k) for k in _TOKEN_IDS if k in defaults})
    run = {key: value for key, value in run_settings.items() if not key.startswith("_") and value is not None}
    return {**defaults, **run}


def generation_settings(from_model: dict[str, Any], given: dict[str, Any],
                        positions: int | None = None) -> dict[str, Any]:
    """The model's settings under those `given` on the command line (a given length replaces its pair), checked
    now, before the data is read: their values, and the output length against the model's `positions`."""
    from led.models.generation import GenerationConfig

    settings = {key: value for key, value in from_model.items() if _PAIRED.get(key) not in given}
    settings.update(given)
    try:
        GenerationConfig.from_dict(settings)
    except ValueError as error:
        raise EvaluationError(f"generation settings {settings}: {error}") from None
    # generate's own rule (led.models.generation), checked before the data is read rather than after.
    if "max_new_tokens" in settings:
        key, new_tokens = "max_new_tokens", settings["max_new_tokens"]
    elif "max_length" in settings:
        key, new_tokens = "max_length", settings["max_length"] - 1  # it counts the decoder start token
    else:
        return settings
    if positions is not None and new_tokens > positions:
        raise EvaluationError(f"generation.{key}={settings[key]} needs {new_tokens} decoder positions but the model "
                              f"has {positions}: set generation.max_new_tokens<={positions}")
    return settings


def describe_generation(settings: dict[str, Any], given: dict[str, Any]) -> str:
    """`num_beams=4, max_new_tokens=64 (num_beams from the command line, the rest the model's own)`."""
    shown = ", ".join(f"{key}={value}" for key, value in settings.items()) or "generate's defaults"
    if not given:
        return f"{shown} (those the model was validated with)"
    rest = ", the rest the model's own" if set(settings) - set(given) else ""
    return f"{shown} ({', '.join(given)} from the command line{rest})"


# ---------------------------------------------------------------------------------------------- loading
@dataclass
class LoadedModel:
    """A model to evaluate, with what its checkpoint says about its tokenizer, training data and generation."""

    model: EncoderDecoderModel
    tokenizer: str | None  # directory or Hub id of its tokenizer, when known
    data: dict[str, Any] | None = None  # the DataModule settings it was trained with (Lightning checkpoints)
    generation: dict[str, Any] = field(default_factory=dict)  # the settings it was validated with


def load_model(ckpt_path: str) -> LoadedModel:
    """The model at `ckpt_path`: a Lightning checkpoint file of `led.training.module.LEDSummarizer`, otherwise a
    Hugging Face-format directory or Hub id (whose tokenizer files sit beside the weights) of any family: its
    config.json's model_type says which."""
    from led.models.families import load_model as load_pretrained_model
    from led.models.hub import looks_like_local_path

    path = Path(ckpt_path).expanduser()
    if path.is_file():
        from led.training.checkpointing import checkpoint_problem, corrupt_checkpoint_message

        problem = checkpoint_problem(path)  # one line naming the damage, not what torch.load makes of it
        if problem is not None:
            raise EvaluationError(corrupt_checkpoint_message(path, problem, resuming=False))
        return _load_lightning_checkpoint(path)
    # Hub ids never end in .ckpt: a missing Lightning checkpoint is not looked up on the Hub.
    if not path.is_dir() and (looks_like_local_path(ckpt_path) or path.suffix == ".ckpt"):
        raise EvaluationError(
            f"ckpt_path={ckpt_path!r} does not exist; give a Lightning checkpoint file (.ckpt), "
            "a directory with config.json + model.safetensors + tokenizer files, or a Hub id"
        )
    try:
        model = load_pretrained_model(ckpt_path)
    except (OSError, ValueError) as error:
        raise EvaluationError(f"could not load a model from ckpt_path={ckpt_path!r}: {error}") from error
    return LoadedModel(model, tokenizer=ckpt_path, generation=model_generation_settings(model, {}))


def _load_lightning_checkpoint(path: Path) -> LoadedModel:
    import torch

    from led.training.checkpointing import run_tokenizer, saved_model
    from led.training.module import LEDSummarizer

    try:
        # Lightning stores the DataModule's save_hyperparameters() beside the module's; mmap avoids a 2nd copy.
        checkpoint = torch.load(str(path), map_location="cpu", mmap=True, weights_only=False)
        # The model is built from the config the checkpoint stores: the files it was fine-tuned from are not read.
        module = LEDSummarizer.load_from_checkpoint(str(path), map_location="cpu",
                                                    saved_model=saved_model(checkpoint))
    except UserError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError) as error:
        raise EvaluationError(f"could not load {str(path)!r} as a Lightning checkpoint of LEDSummarizer: {error}") from error
    hparams = dict(module.hparams)
    # The run's tokenizer/ (trained for it, or copied there from the pretrained model); a checkpoint written before
    # runs kept a copy names the pretrained model's own.
    tokenizer = run_tokenizer(path, hparams.get("tokenizer"))
    data = checkpoint.get("datamodule_hyper_parameters")
    # The run's `generation` node: generate's keywords beside Hydra's `_target_` and `_partial_`.
    generation = model_generation_settings(module.model, dict(hparams.get("generation") or {}))
    return LoadedModel(module.model, tokenizer=tokenizer, data=dict(data) if data else None, generation=generation)


def data_settings(cfg: DictConfig, loaded: LoadedModel) -> dict[str, Any]:
    """The DataModule's settings: a conf/data option (`data=NAME`, with any overrides) as it is; otherwise those the
    checkpoint was trained with under any `+data.KEY=V`, whose source (a file, a dataset) replaces the checkpoint's."""
    node = cfg.get("data")  # absent unless a conf/data/ option or `+data.KEY=` overrides chose one
    given = {} if node is None else _plain(node, skip_missing=True)
    if "_target_" in given or not loaded.data:
        settings = given
    else:
        settings = dict(loaded.data)
        if any(given.get(key) for key in SOURCE_KEYS):
            settings = {key: value for key, value in settings.items() if key not in SOURCE_KEYS}
        settings.update(given)
    if not any(settings.get(key) for key in SOURCE_KEYS):
        raise EvaluationError(
            "ckpt_path= needs data to evaluate on: choose a data config (data=NAME, see conf/data/) "
            "or give a file, e.g. +data.test_file=test.jsonl +data.source_field=article +data.summary_field=abstract"
        )
    settings.pop("_target_", None)  # built here, with the model's tokenizer
    # The model fixes the vocabulary and the padding multiple; data settings only choose the text and lengths.
    if loaded.tokenizer is not None:
        settings["tokenizer"] = loaded.tokenizer
    settings.pop("tokenizer_dir", None)  # where the run trained or copied its tokenizer: evaluation writes none
    return settings


def check_settings(data: dict[str, Any], generation: dict[str, Any]) -> None:
    """The data settings and the command line's generation settings against the signatures that receive them
    (led/config_check.py): `+data.max_input_lenght=` or `+generation.num_beam=` is one line naming the setting."""
    from led.config_check import setting_problems

    problems = setting_problems(OmegaConf.create({
        "data": {"_target_": DATAMODULE, **data},
        "generation": {"_target_": GENERATE, "_partial_": True, **generation},
    }))
    if problems:
        raise ConfigError("; ".join(problems))


def build_datamodule(settings: dict[str, Any], model: EncoderDecoderModel) -> SummarizationDataModule:
    """The DataModule of `settings` (`data_settings`), matched to the model: padding multiple, lengths against its
    positions and the vocabulary against its embeddings, checked before any data is read."""
    from led.data.datamodule import SummarizationDataModule

    datamodule = SummarizationDataModule(**settings)
    datamodule.match_model(model)
    return datamodule


def _plain(node: Any, skip_missing: bool = False) -> dict[str, Any]:
    """A config section as a plain dict with interpolations resolved (`skip_missing`: without its ??? values, which
    evaluation does not need, e.g. conf/data/jsonl.yaml's train_file)."""
    container = OmegaConf.to_container(node, resolve=True)  # a ??? value stays "???"
    if not isinstance(container, dict):
        raise EvaluationError(f"expected a config section with keys, got {container!r}")
    return {str(k): v for k, v in container.items() if not (skip_missing and v == MISSING)}


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
