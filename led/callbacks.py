"""Lightning callbacks of the training framework."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L


class LogSamples(L.Callback):
    """After each validation, hand the module's sample summaries to every logger that can show text.

    wandb gets a table (step, id, prediction, reference), TensorBoard a text entry per sample; every run
    also appends them to `<run_dir>/samples_during_training.jsonl`, so CSV-only runs keep them too.
    """

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        samples = getattr(pl_module, "validation_samples", None)
        if not samples or trainer.sanity_checking or not trainer.is_global_zero:
            return
        step = trainer.global_step
        rows = [[step, example_id, prediction, reference] for example_id, prediction, reference in samples]
        for logger in trainer.loggers:
            kind = type(logger).__name__
            if kind == "WandbLogger":
                logger.log_text(key="val/samples", columns=["step", "id", "prediction", "reference"], data=rows)
            elif kind == "TensorBoardLogger":
                for _, example_id, prediction, reference in rows:
                    text = f"**prediction**\n\n{prediction}\n\n**reference**\n\n{reference}"
                    logger.experiment.add_text(f"val/sample_{example_id}", text, global_step=step)
        if trainer.default_root_dir:
            path = Path(trainer.default_root_dir) / "samples_during_training.jsonl"
            with path.open("a", encoding="utf-8") as out:
                for row in rows:
                    out.write(json.dumps(dict(zip(("step", "id", "prediction", "reference"), row))) + "\n")

    def state_dict(self) -> dict[str, Any]:
        return {}
