"""Report pages (led/report/, led/stats.py): train.py and evaluate.py write report.html by themselves, evaluate.py
records what the evaluation page needs, a failure to draw never fails a run, and every kind of page (run,
evaluation, sweep, stats) renders its charts in a real headless browser: a non-blank screenshot, every image
decoded, no script error. The browser tests need Debian's chromium (.ci/run installs it) and skip without it."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_training import FAMILY_MODELS, FEW_STEPS, TINY_CORPUS, TINY_MODEL, make_config

from led.metrics import rouge_by_length
from led.recipes.evaluate import evaluate
from led.recipes.train import train
from led.report import REPORT_FILE, write_report, write_report_safely
from led.stats import main as stats_main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: `apt-get install -y chromium` "
                                                            "(.ci/run does) to check the pages render")
SUMMARY_CSV = """job,status,optimizer.lr,model.size,rouge1,rouge2,rougeL,rougeLsum,loss,lead_rouge1,global_step,train_minutes,run_dir,overrides,error
0,completed,1e-05,tiny,10.5,2.0,9.0,9.5,5.1,12.0,3,0.1,/x/0,optimizer.lr=1e-05 model.size=tiny,
1,completed,0.0003,tiny,14.25,3.0,12.0,12.5,4.9,12.0,3,0.1,/x/1,optimizer.lr=0.0003 model.size=tiny,
2,failed,0.001,huge,,,,,,,,,/x/2,optimizer.lr=0.001 model.size=huge,ConfigError: model.size=huge is not a size
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny training run and an evaluation of its checkpoint, with the pages they write themselves."""
    tmp = tmp_path_factory.mktemp("report")
    cfg = make_config(tmp, f"data.synthetic.dir={tmp / 'corpus'}", *TINY_CORPUS, *TINY_MODEL, *FEW_STEPS)
    train(cfg)
    eval_cfg = make_eval_config(tmp / "run" / "checkpoints" / "last.ckpt", tmp / "eval")
    evaluate(eval_cfg)
    sweep = tmp / "sweep"
    sweep.mkdir()
    (sweep / "summary.csv").write_text(SUMMARY_CSV)
    write_report(sweep)
    stats_main([f"data.synthetic.dir={tmp / 'corpus'}", *TINY_CORPUS, *TINY_MODEL, f"output_dir={tmp / 'stats'}"])
    return {"run": tmp / "run" / REPORT_FILE, "evaluation": tmp / "eval" / REPORT_FILE, "sweep": sweep / REPORT_FILE,
            "stats": tmp / "stats" / "stats.html"}


def make_eval_config(ckpt: Path, out: Path):  # type: ignore[no-untyped-def]
    from hydra import compose, initialize_config_dir
    from test_training import ROOT

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("eval", overrides=[f"ckpt_path={ckpt}", f"output_dir={out}", "split=validation",
                                          "rouge.bootstrap=20", "generation.num_beams=1",
                                          "generation.max_new_tokens=6"])


def test_runs_write_their_pages_and_evaluation_records_per_example(finished: dict[str, Path]) -> None:
    for kind in ("run", "evaluation", "stats"):
        assert finished[kind].is_file(), kind
    evaluation = finished["evaluation"].parent
    records = [json.loads(line) for line in (evaluation / "predictions.jsonl").read_text().splitlines()]
    for record in records:
        assert {"input_tokens", "truncated", "document_start", "rouge1", "rougeLsum"} <= set(record)
        assert record["truncated"] == (record["input_tokens"] > 512)  # TINY_CORPUS's max_input_length
    buckets = json.loads((evaluation / "metrics.json").read_text())["by_length"]
    assert sum(bucket["count"] for bucket in buckets) == len(records)
    assert {"model", "lead"} == set(buckets[0]["systems"]) and "rouge1_low" in buckets[0]["systems"]["lead"]
    stats = json.loads((finished["stats"].parent / "stats.json").read_text())
    assert stats["source"]["p50"] <= stats["source"]["p99"] <= stats["source"]["max"]
    assert stats["padding"]["length_grouped"] <= stats["padding"]["random"]


def test_stats_of_a_pegasus_x_config_use_its_tokenizer_and_block_size(finished: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    """`python -m led.stats model=pegasus_x_tiny ...`: lengths in the tokens of the Unigram trained for it, padding
    to its blocks (the model's family and limits come from its config alone)."""
    corpus = finished["run"].parent.parent / "corpus"
    stats_main([f"data.synthetic.dir={corpus}", *TINY_CORPUS, *FAMILY_MODELS["pegasus_x"],
                "model.overrides.block_size=48", f"output_dir={tmp_path}"])
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["pad_to_multiple_of"] == 48
    assert json.loads((tmp_path / "tokenizer" / "tokenizer.json").read_text())["model"]["type"] == "Unigram"
    led_stats = json.loads((finished["stats"].parent / "stats.json").read_text())
    assert stats["pad_to_multiple_of"] != led_stats["pad_to_multiple_of"]
    assert stats["source"]["max"] != led_stats["source"]["max"]  # another tokenizer, other lengths


def test_rouge_by_length_buckets_by_quartile() -> None:
    scores = {"model": np.arange(16, dtype=float).reshape(4, 4).repeat(2, axis=0)}  # (8, 4)
    buckets = rouge_by_length([10, 20, 30, 40, 50, 60, 70, 80], scores, bootstrap=0)
    assert [(b["low"], b["high"], b["count"]) for b in buckets] == [(10, 20, 2), (30, 40, 2), (50, 60, 2), (70, 80, 2)]
    assert buckets[-1]["systems"]["model"]["rouge1"] == 12.0


def test_a_page_that_cannot_be_drawn_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    (tmp_path / "metrics.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="led.report"):
        assert write_report_safely(tmp_path) is None
    assert "could not write report.html" in caplog.text and not (tmp_path / REPORT_FILE).exists()


def test_the_report_command_names_a_directory_it_cannot_read(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "led.report", str(tmp_path)], capture_output=True, text=True, check=False)
    assert result.returncode == 2 and result.stderr.startswith("led.report: error: path=")


@needs_browser
@pytest.mark.parametrize("kind", ["run", "evaluation", "sweep", "stats"])
def test_page_renders_its_charts_in_a_browser(kind: str, finished: dict[str, Path], tmp_path: Path) -> None:
    page = finished[kind]
    screenshot = tmp_path / f"{kind}.png"
    browser(f"--screenshot={screenshot}", page)
    pixels = _read_png(screenshot)
    assert pixels.std() > 0.05, f"{kind} page screenshot is blank"
    dom = browser("--dump-dom", page)
    images = len(re.findall(r"<img ", dom))
    assert images >= 1, f"{kind} page has no chart"
    assert f'data-charts="{images}"' in dom, f"{kind} page: not every chart decoded"
    assert re.search(r'<pre id="page-errors"></pre>', dom), f"{kind} page raised a script error"


def browser(action: str, page: Path) -> str:
    """Run headless chromium once on `page` (a file: URL, no network) and return what it prints."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               "--window-size=1366,900", "--virtual-time-budget=2000", action, page.resolve().as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _read_png(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    return np.asarray(imread(path))
