"""Score summaries with ROUGE: `python evaluate.py predictions=FILE.jsonl` or `ckpt_path=... data=...`.

Thin entry point: Hydra builds the config (conf/eval.yaml), `led.recipes.evaluate.evaluate` does the work.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from led.errors import UserError
from led.recipes.evaluate import evaluate


# An absolute config path: Hydra finds conf/ however this file is loaded (script, module, test).
@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parent / "conf"), config_name="eval")
def main(cfg: DictConfig) -> None:
    # Hydra has already made (and resolved) its run directory; reuse it so a `${now:}` output_dir cannot
    # resolve to a second, later timestamp.
    cfg.output_dir = HydraConfig.get().runtime.output_dir
    try:
        evaluate(cfg)
    except UserError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
