"""Train an LED summarizer: `python train.py` (the CPU default) or `python train.py experiment=arxiv_led_base`.

Thin entry point: Hydra composes conf/config.yaml, `led.recipes.train.train` does the work. A setting that
cannot work is printed as one line (HYDRA_FULL_ERROR=1 shows the traceback).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parent / "conf"), config_name="config")
def main(cfg: DictConfig) -> float | None:
    # Imported here, after Hydra composed the config: a mistyped override is reported in a second, not after
    # the ten it takes to import torch and Lightning.
    from led.errors import UserError
    from led.recipes.train import train

    try:
        metrics = train(cfg)
    except UserError as error:
        # In a sweep (-m) the error goes to Hydra, which records the job as failed (led/sweep.py's table) and
        # runs the next one; sys.exit would end the whole sweep.
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    # A sweeper (e.g. Optuna) maximises what main returns.
    return metrics.get("rouge1")


if __name__ == "__main__":
    main()
