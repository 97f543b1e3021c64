"""Score summaries with ROUGE: `python evaluate.py predictions=FILE.jsonl` or `ckpt_path=... data=...`.

Thin entry point: Hydra builds the config (conf/eval.yaml), `led.recipes.evaluate.evaluate` does the work. A
setting that cannot work is printed as one line (HYDRA_FULL_ERROR=1 shows the traceback).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from led.entry import run_job, run_main


# An absolute config path: Hydra finds conf/ however this file is loaded (script, module, test).
@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parent / "conf"), config_name="eval")
def main(cfg: DictConfig) -> None:
    from led.recipes.evaluate import evaluate

    # Hydra has already made (and resolved) its run directory; reuse it so a `${now:}` output_dir cannot
    # resolve to a second, later timestamp.
    cfg.output_dir = HydraConfig.get().runtime.output_dir
    run_job(evaluate, cfg)


if __name__ == "__main__":
    run_main(main)
