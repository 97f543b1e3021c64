"""What a run prints: each log line once, no adverts, no meaningless totals.

Warnings raised inside dependencies are filtered by the entry points (led/entry.py), where they are named.
"""

from __future__ import annotations

import importlib.util
import logging

from lightning.pytorch.callbacks import Callback, RichProgressBar


def quiet_logging() -> None:
    """Each Lightning line once, without the advert. Idempotent."""
    root_handlers = logging.getLogger().handlers
    if root_handlers:
        # Lightning gives "lightning", "lightning.pytorch" and "lightning.fabric" console handlers of their own; with
        # Hydra's root handlers (console and train.log) every line appeared twice, once per format. Keep the root's:
        # they also write the lines to train.log.
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                if type(handler) is logging.StreamHandler:
                    logger.removeHandler(handler)
            logger.propagate = True
    # A filter on a logger sees only the records created on that logger, not its children's: filter at the handlers.
    for handler in [*root_handlers, *logging.getLogger("lightning.pytorch").handlers]:
        if not any(isinstance(f, _DropAdverts) for f in handler.filters):
            handler.addFilter(_DropAdverts())


class _DropAdverts(logging.Filter):
    """Lightning's "💡 Tip: ... try installing litlogger" lines: a product advert, nothing about this run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "💡 Tip" not in record.getMessage()


def progress_bar() -> Callback | None:
    """Lightning's default (Rich) progress bar, without the "Epoch 0/-2" that runs bounded by max_steps show."""
    # Lightning picks the Rich bar when `rich` is installed, the tqdm one (no such total) otherwise.
    return _StepBoundedRichProgressBar() if importlib.util.find_spec("rich") is not None else None


class _StepBoundedRichProgressBar(RichProgressBar):
    def _get_train_description(self, current_epoch: int) -> str:
        # Lightning writes "Epoch {e}/{max_epochs - 1}", i.e. "/-2" when max_epochs is -1 (no epoch limit).
        description = super()._get_train_description(current_epoch)
        if self.trainer.max_epochs is not None and self.trainer.max_epochs < 0:
            description = description.replace(f"/{self.trainer.max_epochs - 1}", "")
        return description
