"""evaluate.py / led.recipes.evaluate: scoring a predictions file, its error messages, and the model path: generation
settings that follow the model, every conf/data option, and the run's own validation ROUGE reproduced exactly from
its checkpoint and from its export. (Bad files on every path: tests/test_data_errors.py.)"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from test_training import FAMILIES, FAMILY_MODELS, FEW_STEPS, TINY_CORPUS, make_config

from led.errors import DataError
from led.export import main as export_main
from led.metrics import compute_rouge
from led.recipes.evaluate import EvaluationError, evaluate, read_predictions
from led.recipes.train import train

ROOT = Path(__file__).resolve().parents[1]
RECORDS = [
    {"id": 0, "prediction": "We propose a sparse attention model. It scales linearly.",
     "reference": "A sparse attention model is proposed. Its cost grows linearly with length."},
    {"id": 1, "prediction": "The results show large gains on arXiv.",
     "reference": "Large gains are reported on arXiv. Running time is halved."},
    {"prediction": "dogs are loyal animals", "reference": "cats are independent animals. dogs are loyal."},
]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def predictions_file(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "predictions.jsonl", [json.dumps(r) for r in RECORDS])


def eval_config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="eval", overrides=list(overrides))


def test_scores_a_predictions_file(predictions_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    metrics = evaluate(eval_config(f"predictions={predictions_file}", f"output_dir={out}", "rouge.bootstrap=100"))
    expected = compute_rouge([r["prediction"] for r in RECORDS], [r["reference"] for r in RECORDS], bootstrap=100)
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert {k: metrics[k] for k in expected} == expected
    assert metrics["num_examples"] == 3 and metrics["source"] == str(predictions_file)
    assert metrics["bootstrap"] == {"resamples": 100, "seed": 0, "confidence": 0.95}
    assert not (out / "predictions.jsonl").exists()
    printed = capsys.readouterr().out
    assert "ROUGE-Lsum" in printed and f"{metrics['rougeLsum']:.2f}" in printed


def test_entry_point_writes_metrics(predictions_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), f"predictions={predictions_file}", f"output_dir={out}",
         "rouge.bootstrap=50"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_examples"] == 3
    assert metrics["rouge1_low"] <= metrics["rouge1"] <= metrics["rouge1_high"]
    assert (out / ".hydra" / "config.yaml").is_file()  # the resolved config sits beside the metrics
    assert "ROUGE-1" in result.stdout
    assert "Using default tokenizer" not in result.stdout + result.stderr  # rouge-score's notice, nothing about the run


def test_entry_point_prints_one_line_for_a_bad_file(tmp_path: Path) -> None:
    # A line the JSON reader refuses: it logs a raw error of its own, which must not reach the terminal.
    bad = write_lines(tmp_path / "bad.jsonl", ['{"prediction": "x", "reference": "y"}', '{"prediction": "x"'])
    command = [sys.executable, str(ROOT / "evaluate.py"), f"predictions={bad}", f"output_dir={tmp_path / 'out'}"]
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1
    error = result.stderr.strip()
    assert error == (f"error: predictions={str(bad)!r}, line 2: not valid JSON (Expecting ',' delimiter at column "
                     "19): '{\"prediction\": \"x\"'")
    # The full traceback on request.
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**env, "HYDRA_FULL_ERROR": "1"})
    assert result.returncode == 1 and "Traceback" in result.stderr and "DataError" in result.stderr


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"prediction": "a", "reference": "b"}', '{"prediction": "a", reference: "b"}'],
         r"bad\.jsonl', line 2: not valid JSON"),
        (['{"prediction": "a", "reference": "b"}', "", '{"prediction": "a", "ref": "b"}'],
         r"bad\.jsonl', line 3: field 'reference' is null or missing"),
        (['{"prediction": 3, "reference": "b"}'], r"bad\.jsonl', line 1: field 'prediction' holds a number \(3\)"),
        (["", "  "], r"bad\.jsonl' is empty"),
    ],
)
def test_bad_predictions_files_name_file_line_and_field(tmp_path: Path, lines: list[str], message: str) -> None:
    path = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DataError, match=message):
        read_predictions(path)


def test_blank_predictions_are_scored_not_skipped(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "p.jsonl", [json.dumps({"prediction": "", "reference": "a b"}),
                                              json.dumps({"id": 7, "prediction": "a b", "reference": "a b"})])
    assert read_predictions(path) == [{"prediction": "", "reference": "a b"}, {"prediction": "a b", "reference": "a b"}]
    metrics = evaluate(eval_config(f"predictions={path}", f"output_dir={tmp_path / 'out'}", "rouge.bootstrap=0"))
    assert metrics["num_examples"] == 2 and metrics["rouge1"] == 50.0 and "generation" not in metrics


def test_missing_file_and_missing_choice(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.jsonl' does not exist"):
        read_predictions(tmp_path / "nope.jsonl")
    with pytest.raises(EvaluationError, match="neither of predictions= and ckpt_path="):
        evaluate(eval_config(f"output_dir={tmp_path}"))
    with pytest.raises(EvaluationError, match="both of predictions= and ckpt_path="):
        evaluate(eval_config(f"output_dir={tmp_path}", "predictions=a.jsonl", "ckpt_path=b"))
    with pytest.raises(EvaluationError, match="needs data to evaluate on"):
        evaluate(eval_config(f"output_dir={tmp_path}", f"ckpt_path={tiny_model_dir}"))


# ---------------------------------------------------------------------------------------------- model path
ARTICLES = [
    "The model reads long documents. Attention is local within a window. A few tokens attend globally.",
    "We test the method on scientific papers. The summaries are short. Results improve over the baseline.",
    "Data comes from arXiv. Each paper has an abstract. The abstract serves as the reference summary.",
]
ABSTRACTS = ["A model for long documents.", "The method beats the baseline.", "Papers come from arXiv."]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny LED with a tokenizer trained on the test texts, saved in Hugging Face format."""
    import torch

    from led import LEDConfig, LEDForConditionalGeneration
    from led.models.tokenizer import LEDTokenizer

    tokenizer = LEDTokenizer.train(ARTICLES + ABSTRACTS, vocab_size=300, min_frequency=1)
    config = LEDConfig(vocab_size=tokenizer.vocab_size, d_model=32, encoder_layers=1, decoder_layers=1,
                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                       attention_window=8, max_encoder_position_embeddings=128, max_decoder_position_embeddings=32)
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny_led")
    LEDForConditionalGeneration(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_pegasus_x_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny PEGASUS-X with a Unigram tokenizer trained on the test texts, saved in Hugging Face format."""
    import torch

    from led.models.pegasus_x import (
        PegasusTokenizer,
        PegasusXConfig,
        PegasusXForConditionalGeneration,
    )

    tokenizer = PegasusTokenizer.train(ARTICLES + ABSTRACTS, vocab_size=200)
    config = PegasusXConfig.from_name("pegasus-x-tiny", vocab_size=tokenizer.vocab_size, d_model=32, encoder_layers=1,
                                      decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                                      encoder_ffn_dim=64, decoder_ffn_dim=64, block_size=8, num_global_tokens=2)
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny_pegasus_x")
    PegasusXForConditionalGeneration(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.mark.parametrize("family", FAMILIES)
def test_generates_with_a_hugging_face_directory(family: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # The directory's config.json names the family: evaluation builds that model and loads that tokenizer.
    model_dir = request.getfixturevalue({"led": "tiny_model_dir", "pegasus_x": "tiny_pegasus_x_dir"}[family])
    test_file = write_lines(tmp_path / "test.jsonl",
                            [json.dumps({"article": a, "abstract": s}) for a, s in zip(ARTICLES, ABSTRACTS)])
    out = tmp_path / "out"
    cfg = eval_config(
        f"ckpt_path={model_dir}", f"output_dir={out}", f"+data.test_file={test_file}",
        "+data.max_input_length=48", "+data.max_target_length=16", f"+data.cache_dir={tmp_path / 'cache'}",
        "+data.eval_batch_size=2", "device=cpu", "generation.num_beams=2", "generation.max_length=10",
        "generation.min_length=3", "rouge.bootstrap=20",
    )
    metrics = evaluate(cfg)
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [0, 1, 2]
    assert [r["reference"] for r in records] == ABSTRACTS
    assert all(isinstance(r["prediction"], str) for r in records)
    assert metrics["num_examples"] == 3 and metrics["source"] == str(model_dir)
    assert metrics["generation"] == {"num_beams": 2, "max_length": 10, "min_length": 3}  # the directory sets none
    lead = metrics["baselines"]["lead"]
    assert lead["num_examples"] == 3 and lead["rouge1"] > 0  # the lead sentences share words with the abstracts
    assert json.loads((out / "metrics.json").read_text()) == metrics


def test_bad_record_in_the_file_to_evaluate_on_is_an_evaluation_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    test_file = write_lines(tmp_path / "test.jsonl", [json.dumps({"article": ARTICLES[0], "abstract": ABSTRACTS[0]}),
                                                       '{"article": "a", abstract: "b"}'])
    cfg = eval_config(f"ckpt_path={tiny_model_dir}", f"output_dir={tmp_path / 'out'}", f"+data.test_file={test_file}",
                      f"+data.cache_dir={tmp_path / 'cache'}", "+data.max_input_length=48", "+data.max_target_length=16",
                      "device=cpu")
    # the DataError training gives for this file (evaluate.py prints it as one line)
    with pytest.raises(DataError, match=r"test_file='.*test\.jsonl', line 2: not valid JSON") as error:
        evaluate(cfg)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out" / "metrics.json").exists()


# ---------------------------------------------------------------------------------------------- generation settings
def test_generation_settings_follow_the_model(tmp_path: Path, tiny_model_dir: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    """An exported directory's generation_config.json is what evaluation generates with; the command line changes
    single settings, and a length replaces its pair (max_length would otherwise lose to the model's max_new_tokens)."""
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / "generation_config.json").write_text(json.dumps(
        {"num_beams": 3, "max_new_tokens": 5, "no_repeat_ngram_size": 2, "bos_token_id": 0, "eos_token_id": 2,
         "pad_token_id": 1, "decoder_start_token_id": 2}))
    test_file = write_lines(tmp_path / "test.jsonl",
                            [json.dumps({"article": a, "abstract": s}) for a, s in zip(ARTICLES, ABSTRACTS)])
    data = [f"+data.test_file={test_file}", "+data.max_input_length=48", "+data.max_target_length=16",
            f"+data.cache_dir={tmp_path / 'cache'}", "device=cpu", "rouge.bootstrap=0", "baseline=null"]
    own = evaluate(eval_config(f"ckpt_path={model_dir}", f"output_dir={tmp_path / 'own'}", *data))
    assert own["generation"] == {"num_beams": 3, "max_new_tokens": 5, "no_repeat_ngram_size": 2}
    assert "generation: max_new_tokens=5, num_beams=3, no_repeat_ngram_size=2 (those the model was validated with)" \
        in capsys.readouterr().out
    changed = evaluate(eval_config(f"ckpt_path={model_dir}", f"output_dir={tmp_path / 'changed'}", *data,
                                   "generation.num_beams=1", "generation.max_length=3"))
    assert changed["generation"] == {"num_beams": 1, "no_repeat_ngram_size": 2, "max_length": 3}
    assert "(num_beams, max_length from the command line, the rest the model's own)" in capsys.readouterr().out
    assert json.loads((tmp_path / "changed" / "metrics.json").read_text())["generation"] == changed["generation"]
    from led.models.tokenizer import LEDTokenizer

    tokenizer = LEDTokenizer.from_pretrained(model_dir)
    for line in (tmp_path / "changed" / "predictions.jsonl").read_text().splitlines():  # 2 tokens after the start
        assert len(tokenizer.encode(json.loads(line)["prediction"])) <= 2 + 2  # <s> and </s> added


def test_a_mistyped_generation_setting_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "ckpt_path=x", "generation.num_beam=4",
                             f"output_dir={tmp_path}"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == ("error: generation.num_beam is not a setting of led.models.generation.generate; "
                                     "did you mean generation.num_beams?"), result.stderr


# ---------------------------------------------------------------------------------------------- every conf/data option
DATA_OPTIONS = sorted(p.stem for p in (ROOT / "conf" / "data").glob("*.yaml"))


@pytest.fixture(scope="module")
def long_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny model with the published recipes' position tables (16,384 input, 512 target tokens), so every
    conf/data option's lengths fit it as they are."""
    import torch

    from led import LEDConfig, LEDForConditionalGeneration
    from led.models.tokenizer import LEDTokenizer

    config = LEDConfig.from_json_file(tiny_model_dir / "config.json")
    config.max_encoder_position_embeddings, config.max_decoder_position_embeddings = 16384, 512
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("long_led")
    LEDForConditionalGeneration(config).save_pretrained(directory)
    LEDTokenizer.from_pretrained(tiny_model_dir).save_pretrained(directory)
    return directory


@pytest.mark.parametrize("option", DATA_OPTIONS)
def test_every_data_option_composes_and_evaluates(option: str, tmp_path: Path, long_model_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`python evaluate.py ckpt_path=... data=NAME` for every conf/data option: it composes (the options' `seed` needs
    no training config), builds its DataModule with the model's tokenizer and generates. Hub datasets come from a
    stand-in loader: nothing is downloaded."""
    import datasets

    import led.data.sources

    hub_calls: list[tuple[str, str | None]] = []

    def hub_stand_in(name: str, config_name: str | None, split: str | None = None) -> datasets.Dataset:
        hub_calls.append((name, split))
        return datasets.Dataset.from_dict({"article": ARTICLES, "abstract": ABSTRACTS})

    monkeypatch.setattr(led.data.sources, "load_hub_dataset", hub_stand_in)
    test_file = write_lines(tmp_path / "test.jsonl",
                            [json.dumps({"article": a, "abstract": s}) for a, s in zip(ARTICLES, ABSTRACTS)])
    # Only what must change: where files go, a small corpus, and no worker processes (seconds, not minutes).
    overrides = {
        "synthetic": [f"data.synthetic.dir={tmp_path / 'corpus'}", "data.synthetic.train=2", "data.synthetic.test=2",
                      "data.synthetic.validation=2", "data.synthetic.short_train=0", "data.synthetic.min_sentences=15",
                      "data.synthetic.max_sentences=20"],
        "jsonl": [f"data.test_file={test_file}", f"data.cache_dir={tmp_path / 'cache'}"],
    }.get(option, [f"data.cache_dir={tmp_path / 'cache'}"])
    cfg = eval_config(f"ckpt_path={long_model_dir}", f"data={option}", *overrides, "data.num_workers=0",
                      "data.num_proc=null", "limit=2", "generation.max_new_tokens=3", "rouge.bootstrap=0",
                      "device=cpu", f"output_dir={tmp_path / 'out'}")
    metrics = evaluate(cfg)
    assert metrics["num_examples"] == 2 and metrics["baselines"]["lead"]["num_examples"] == 2
    hub = option in ("arxiv", "pubmed")
    assert hub_calls == ([(f"ccdv/{option}-summarization", "test")] * len(hub_calls) if hub else [])
    assert bool(hub_calls) == hub


# ---------------------------------------------------------------------------------------------- the run's own numbers
# A run whose validation summaries are words that differ between reports (fewer steps give one summary for all):
# 150 steps at a high rate (~10 s), ROUGE on the first 3 of 6 validation reports, in batches of 4 sorted by length,
# so the 3 sit beside reports that are not summarised.
RUN_DATA = [*TINY_CORPUS, "data.synthetic.validation=6", "data.max_target_length=64"]
RUN = [*FEW_STEPS, "trainer.max_steps=150", "trainer.val_check_interval=150", "optimizer.lr=3e-3",
       "module.val_rouge_examples=3", "module.num_logged_samples=3", "generation.max_new_tokens=24",
       "generation.no_repeat_ngram_size=2"]
# PEGASUS-X (its tiny size's 64-token blocks) gives one summary for all reports after those 150 steps, and diverges
# at 3e-3: 300 steps at 1e-3 give summaries that differ.
RUN_MODEL = {"led": FAMILY_MODELS["led"],
             "pegasus_x": ["model=pegasus_x_tiny", "optimizer.lr=1e-3", "trainer.max_steps=300",
                           "trainer.val_check_interval=300"]}


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """trained_runs(family): the run directory of the run above with the family's tiny model (trained on first use)."""
    runs: dict[str, Path] = {}

    def run_of(family: str) -> Path:
        if family not in runs:
            tmp = tmp_path_factory.mktemp(f"trained_{family}")
            train(make_config(tmp, f"data.synthetic.dir={tmp / 'corpus'}", *RUN_DATA, *RUN, *RUN_MODEL[family]))
            runs[family] = tmp / "run"
        return runs[family]

    return run_of


@pytest.fixture(scope="module")
def trained_run(trained_runs: Any) -> Path:
    return trained_runs("led")


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_and_export_reproduce_the_runs_validation_rouge(family: str, trained_runs: Any,
                                                                  tmp_path: Path) -> None:
    """`evaluate.py ckpt_path=RUN/checkpoints/last.ckpt split=validation limit=N` gives the summaries and the ROUGE the
    run reported on its N validation examples (module.val_rouge_examples), with no generation setting given; the
    exported directory gives the same on the same data. The checkpoint's model config says which family to build."""
    trained_run = trained_runs(family)
    reported = json.loads((trained_run / "metrics.json").read_text())
    samples = [json.loads(line) for line in (trained_run / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 and reported["rouge1"] > 0 and len({s["prediction"] for s in samples}) > 1
    checkpoint = trained_run / "checkpoints" / "last.ckpt"
    export_main([f"ckpt_path={checkpoint}", f"out={tmp_path / 'exported'}"])
    corpus = f"data.synthetic.dir={trained_run.parent / 'corpus'}"
    common = ["split=validation", "limit=3", "device=cpu", "rouge.bootstrap=0"]
    sources = {"checkpoint": [f"ckpt_path={checkpoint}"],
               "export": [f"ckpt_path={tmp_path / 'exported'}", "data=synthetic", corpus, *RUN_DATA]}
    for name, overrides in sources.items():
        metrics = evaluate(eval_config(*overrides, *common, f"output_dir={tmp_path / name}"))
        # The run logs ROUGE through a float32 tensor and writes it rounded to 4 places.
        assert {key: round(metrics[key], 4) for key in ("rouge1", "rouge2", "rougeL", "rougeLsum")} == \
            {key: reported[key] for key in ("rouge1", "rouge2", "rougeL", "rougeLsum")}, name
        predictions = [json.loads(line) for line in (tmp_path / name / "predictions.jsonl").read_text().splitlines()]
        assert [(p["id"], p["prediction"], p["reference"]) for p in predictions] == \
            [(s["id"], s["prediction"], s["reference"]) for s in samples], name
        assert metrics["generation"] == {"num_beams": 2, "max_new_tokens": 24, "length_penalty": 1.0,
                                         "no_repeat_ngram_size": 2, "early_stopping": True}, name


def test_a_checkpoint_evaluates_a_file_with_its_own_data_settings(trained_run: Path, tmp_path: Path) -> None:
    """`+data.test_file=` replaces the run's corpus and keeps its other data settings (fields, lengths, batch sizes):
    no lengths to repeat for the model to fit."""
    lines = (trained_run.parent / "corpus" / "validation.jsonl").read_text().splitlines()[:2]
    records = [json.loads(line) for line in lines]
    test_file = write_lines(tmp_path / "test.jsonl", lines)
    metrics = evaluate(eval_config(f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}",
                                   f"+data.test_file={test_file}", f"+data.cache_dir={tmp_path / 'cache'}",
                                   "device=cpu", "rouge.bootstrap=0", f"output_dir={tmp_path / 'out'}"))
    assert metrics["num_examples"] == 2
    saved = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [p["reference"] for p in saved] == [r["summary"] for r in records]
