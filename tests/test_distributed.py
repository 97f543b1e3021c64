"""Data-parallel training on two CPU processes (gloo): DDP (`python train.py trainer=ddp ...`) and FSDP2 under
torchrun (`trainer=fsdp`) train step for step like one process with the same global batch — the same logged
losses and the same final weights — and FSDP writes a sharded checkpoint and validates with beam search."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from test_training import FAMILIES, FAMILY_MODELS

from led.recipes.train import train

ROOT = Path(__file__).resolve().parents[1]

# 16 short reports: 4 global batches of 4 (one process) or 2 + 2 (two ranks); dropout off, so the only
# randomness left (initial weights, batch order) is seeded identically in every process. Validation (beam search)
# after step 2 and training after it: FSDP must come back from generating to sharded training. TINY[family]: with
# the family's tiny model (FSDP shards its layers(), whichever family it is).
COMMON = ["data.synthetic.train=16", "data.synthetic.short_train=0", "data.synthetic.validation=4",
          "data.synthetic.test=2", "data.synthetic.min_sentences=15", "data.synthetic.max_sentences=25",
          "data.tokenizer_vocab_size=400", "data.max_input_length=512", "data.eval_batch_size=2",
          "model.overrides.dropout=0.0", "trainer.max_steps=3", "trainer.val_check_interval=2",
          "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false", "module.val_rouge_examples=2",
          "generation.num_beams=2", "generation.max_new_tokens=6", "~callbacks.checkpoint"]
TINY = {family: [*FAMILY_MODELS[family], *COMMON] for family in FAMILIES}
GLOBAL_BATCH = 4
TWO_CPU_PROCESSES = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32",
                     f"data.batch_size={GLOBAL_BATCH // 2}"]


@pytest.fixture(scope="module")
def one_process_runs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """one_process_runs(family): the reference, one process, batch 4, run in this process (on first use); its corpus
    and tokenizer serve every run of the family."""
    runs: dict[str, Path] = {}

    def run_of(family: str) -> Path:
        if family not in runs:
            root = tmp_path_factory.mktemp(f"distributed_{family}")
            with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
                cfg = compose("config", overrides=[f"data.synthetic.dir={root / 'corpus'}", *TINY[family],
                                                   f"data.batch_size={GLOBAL_BATCH}"])
            with open_dict(cfg):
                cfg.run_dir = str(root / "one")
            train(cfg)
            runs[family] = root / "one"
        return runs[family]

    return run_of


def run_train(launcher: list[str], run_dir: Path, reference: Path, family: str, *overrides: str) -> None:
    corpus = reference.parent / "corpus"
    command = [*launcher, str(ROOT / "train.py"), f"data.synthetic.dir={corpus}", *TINY[family],
               f"data.tokenizer={reference / 'tokenizer'}", *overrides, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}  # one torch thread per process
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr[-3000:]


def logged_losses(run_dir: Path) -> dict[int, float]:
    with (run_dir / "csv" / "metrics.csv").open() as rows:
        return {int(row["step"]): float(row["train/loss"]) for row in csv.DictReader(rows) if row["train/loss"]}


def final_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    if checkpoint.is_dir():  # a sharded checkpoint, gathered whole
        from lightning.fabric.utilities.load import _load_distributed_checkpoint

        state = _load_distributed_checkpoint(checkpoint)["state_dict"]
    else:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    return {name: tensor for name, tensor in state.items() if name.startswith("model.")}


def assert_same_training(run_dir: Path, reference: Path) -> None:
    expected, losses = logged_losses(reference), logged_losses(run_dir)
    assert sorted(losses) == sorted(expected) == [0, 1, 2]
    for step, loss in expected.items():
        assert losses[step] == pytest.approx(loss, rel=1e-5, abs=0), step
    weights, expected_weights = final_weights(run_dir / "checkpoints" / "last.ckpt"), \
        final_weights(reference / "checkpoints" / "last.ckpt")
    assert weights.keys() == expected_weights.keys()
    for name, tensor in expected_weights.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


# DDP only averages gradients, whatever the model: PEGASUS-X's run is in the slow set.
@pytest.mark.parametrize("family", ["led", pytest.param("pegasus_x", marks=pytest.mark.slow)])
def test_ddp_on_two_cpu_processes_trains_like_one_process(family: str, one_process_runs: Any, tmp_path: Path) -> None:
    one_process = one_process_runs(family)
    run_train([sys.executable], tmp_path / "ddp", one_process, family, "trainer=ddp", *TWO_CPU_PROCESSES)
    assert_same_training(tmp_path / "ddp", one_process)


@pytest.mark.parametrize("family", FAMILIES)
def test_fsdp_under_torchrun_trains_like_one_process_and_shards_checkpoints(family: str, one_process_runs: Any,
                                                                             tmp_path: Path) -> None:
    one_process = one_process_runs(family)
    run_dir = tmp_path / "fsdp"
    # torchrun starts both processes; Lightning reads its environment (TorchElasticEnvironment).
    run_train([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"], run_dir,
              one_process, family, "trainer=fsdp", *TWO_CPU_PROCESSES)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.is_dir() and {"__0_0.distcp", "__1_0.distcp", "meta.pt"} <= {p.name for p in last.iterdir()}
    assert_same_training(run_dir, one_process)
    # Validation generated summaries with the weights gathered on both ranks, and ROUGE was computed on them.
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "rouge1" in metrics and metrics["global_step"] == 3
    assert len((run_dir / "samples.jsonl").read_text().splitlines()) == 2
