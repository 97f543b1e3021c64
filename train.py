"""Train an LED summarizer: `python train.py` (the CPU default) or `python train.py experiment=arxiv_led_base`.

Thin entry point: Hydra composes conf/config.yaml, `led.recipes.train.train` does the work. A setting that
cannot work is printed as one line (HYDRA_FULL_ERROR=1 shows the traceback).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from led.entry import run_job, run_main


@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parent / "conf"), config_name="config")
def main(cfg: DictConfig) -> float | None:
    # Imported here, after Hydra composed the config: a mistyped override is reported in a second, not after
    # the ten it takes to import torch and Lightning.
    from led.recipes.train import train

    metrics = run_job(train, cfg)
    return metrics.get("rouge1")  # what a sweeper (e.g. Optuna) maximises


if __name__ == "__main__":
    run_main(main)
