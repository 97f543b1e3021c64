"""evaluate.py / led.recipes.evaluate: scoring a predictions file, its error messages, and the model path."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from led.metrics import compute_rouge
from led.recipes.evaluate import EvaluationError, evaluate, read_predictions

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


def test_entry_point_prints_one_line_for_a_bad_file(tmp_path: Path) -> None:
    bad = write_lines(tmp_path / "bad.jsonl", ['{"prediction": "x"}'])
    command = [sys.executable, str(ROOT / "evaluate.py"), f"predictions={bad}", f"output_dir={tmp_path / 'out'}"]
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1
    error = result.stderr.strip()
    assert len(error.splitlines()) == 1 and "bad.jsonl, line 1: missing field 'reference'" in error
    # The full traceback on request.
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**env, "HYDRA_FULL_ERROR": "1"})
    assert result.returncode == 1 and "Traceback" in result.stderr and "EvaluationError" in result.stderr


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"prediction": "a", "reference": "b"}', '{"prediction": "a", reference: "b"}'],
         r"bad\.jsonl, line 2: not valid JSON"),
        (['{"prediction": "a", "reference": "b"}', "", '{"prediction": "a", "ref": "b"}'],
         r"bad\.jsonl, line 3: missing field 'reference' \(fields present: \['prediction', 'ref'\]\)"),
        (['{"prediction": 3, "reference": "b"}'], r"bad\.jsonl, line 1: field 'prediction' must be a string, got int"),
        (['["a", "b"]'], r"bad\.jsonl, line 1: expected a JSON object, got list"),
        ([], r"bad\.jsonl' is empty"),
        (["", "  "], r"bad\.jsonl' is empty"),
    ],
)
def test_bad_predictions_files_name_file_line_and_field(tmp_path: Path, lines: list[str], message: str) -> None:
    path = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(EvaluationError, match=message) as error:
        read_predictions(path)
    # Every message shows what a valid line looks like.
    assert "string fields 'prediction' and 'reference'" in str(error.value)


def test_missing_file_and_missing_choice(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(EvaluationError, match=r"nope\.jsonl' does not exist"):
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


def test_generates_with_a_hugging_face_directory(tmp_path: Path, tiny_model_dir: Path) -> None:
    model_dir = tiny_model_dir
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
    records = read_predictions(out / "predictions.jsonl")
    assert [r["id"] for r in records] == [0, 1, 2]
    assert [r["reference"] for r in records] == ABSTRACTS
    assert all(isinstance(r["prediction"], str) for r in records)
    assert metrics["num_examples"] == 3 and metrics["source"] == str(model_dir)
    lead = metrics["baselines"]["lead"]
    assert lead["num_examples"] == 3 and lead["rouge1"] > 0  # the lead sentences share words with the abstracts
    assert json.loads((out / "metrics.json").read_text()) == metrics


def test_bad_record_in_the_file_to_evaluate_on_is_an_evaluation_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    test_file = write_lines(tmp_path / "test.jsonl", [json.dumps({"article": ARTICLES[0], "abstract": ABSTRACTS[0]}),
                                                       '{"article": "a", abstract: "b"}'])
    cfg = eval_config(f"ckpt_path={tiny_model_dir}", f"output_dir={tmp_path / 'out'}", f"+data.test_file={test_file}",
                      f"+data.cache_dir={tmp_path / 'cache'}", "+data.max_input_length=48", "+data.max_target_length=16",
                      "device=cpu")
    # evaluate.py prints an EvaluationError as one line (a DataError would have been a traceback)
    with pytest.raises(EvaluationError, match=r"test\.jsonl.*line 2: not valid JSON") as error:
        evaluate(cfg)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out" / "metrics.json").exists()
