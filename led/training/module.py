"""`LEDSummarizer`: the LightningModule that trains and validates an LED summarizer.

It is built from plain values (a named size or a pretrained checkpoint, optimizer and scheduler settings),
so `save_hyperparameters()` stores values, never modules, and `load_from_checkpoint` rebuilds it alone.
Batches are the dicts of `led.data.SummarizationDataModule` (see docs/CONTRACTS.md).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from led.errors import UserError
from led.metrics import compute_rouge
from led.models.led.config import LEDConfig
from led.models.led.modeling import LEDForConditionalGeneration
from led.training.checkpointing import restore_rng_states, rng_states

log = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "adafactor")
SCHEDULERS = ("linear", "cosine", "constant")
ON_NONFINITE = ("stop", "skip")


class NonFiniteLossError(UserError, RuntimeError):
    """The training loss became NaN or infinite; raised before anything is saved over a good checkpoint."""


def build_model(size: str = "tiny", pretrained: str | None = None, attention_window: int | list[int] | None = None,
                vocab_size: int | None = None, overrides: dict[str, Any] | None = None) -> LEDForConditionalGeneration:
    """A pretrained checkpoint (directory or Hub id), or a randomly initialised model of a named size.

    `attention_window` and `overrides` (any LEDConfig field) change the named size; a pretrained model
    takes a new `attention_window` too (its weights do not depend on it).
    """
    overrides = dict(overrides or {})
    if attention_window is not None:
        overrides["attention_window"] = list(attention_window) if isinstance(attention_window, (list, tuple)) \
            else attention_window
    if pretrained:
        model = LEDForConditionalGeneration.from_pretrained(pretrained)
        if not overrides:
            return model
        # Windows and dropouts change the modules, not the weights: rebuild on the meta device, reuse the tensors.
        config = LEDConfig.from_dict({**model.config.to_dict(), **overrides})
        with torch.device("meta"):
            rebuilt = LEDForConditionalGeneration(config)
        rebuilt.load_state_dict(model.state_dict(), assign=True)
        rebuilt.tie_weights()
        return rebuilt
    if vocab_size is not None:
        overrides.setdefault("vocab_size", vocab_size)
    return LEDForConditionalGeneration(LEDConfig.from_name(size, **overrides))


class LEDSummarizer(L.LightningModule):
    """Teacher-forced training, validation loss and ROUGE (beam search) for `LEDForConditionalGeneration`.

    Args:
        model: `build_model` arguments (size, pretrained, attention_window, vocab_size, overrides) plus
            `gradient_checkpointing` (bool).
        optimizer: name ("adamw" | "adafactor"), lr, weight_decay, betas, eps.
        scheduler: name ("linear" | "cosine" | "constant"), warmup_steps (int) or warmup_ratio (float),
            min_lr_ratio (the floor of the decay, as a fraction of lr).
        generation: keyword arguments of `LEDForConditionalGeneration.generate` for validation ROUGE.
        tokenizer: the tokenizer directory (stored so evaluation finds it from the checkpoint).
        label_smoothing: of the training cross-entropy (validation loss is always unsmoothed).
        val_rouge_examples: validation examples summarised for ROUGE (0: loss only; -1: all).
        num_logged_samples: sample summaries logged at each validation.
        on_nonfinite: "stop" raises with the step and the batch's ids; "skip" drops the batch and counts it.
    """

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        generation: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        label_smoothing: float = 0.0,
        val_rouge_examples: int = 64,
        num_logged_samples: int = 3,
        on_nonfinite: str = "stop",
    ) -> None:
        super().__init__()
        _check_choice("optimizer.name", optimizer.get("name", "adamw"), OPTIMIZERS)
        _check_choice("scheduler.name", scheduler.get("name", "linear"), SCHEDULERS)
        _check_choice("on_nonfinite", on_nonfinite, ON_NONFINITE)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={label_smoothing} must be in [0, 1)")
        self.save_hyperparameters()
        model_args = {k: v for k, v in model.items() if k != "gradient_checkpointing"}
        self.model = build_model(**model_args)
        if model.get("gradient_checkpointing"):
            self.model.gradient_checkpointing_enable()
        self.generation = dict(generation or {})
        self.skipped_batches = 0
        self._predictions: dict[int, str] = {}
        self._rng_states_to_restore: list[dict[str, Any]] | None = None  # from a checkpoint, see on_train_start

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        loss_sum, tokens = self._loss_sum(batch, self.hparams.label_smoothing)
        # One all-reduce gives every rank the global batch's loss sum and target-token count, so every rank
        # logs, checks and normalises by the same numbers.
        (global_sum, global_tokens), world = _sum_over_ranks(torch.stack([loss_sum.detach(), tokens.to(loss_sum)]))
        loss = global_sum / global_tokens  # mean over the global batch's target tokens, as one process computes it
        # One host sync per step buys a clear stop at the first bad batch instead of NaN weights.
        if not torch.isfinite(loss):
            ids = batch["ids"].tolist()
            if self.hparams.on_nonfinite == "skip":  # every rank sees the same global loss: all skip together
                self.skipped_batches += 1
                log.warning("skipping batch with ids %s at step %d: loss is %s (%d skipped so far)",
                            ids, self.global_step, loss.item(), self.skipped_batches)
                self.log("train/skipped_batches", float(self.skipped_batches))
                return None
            raise NonFiniteLossError(
                f"the training loss is {loss.item()} at step {self.global_step} on the batch with ids {ids}; "
                "nothing was saved over the last checkpoint. Lower optimizer.lr, check those records, or set "
                "module.on_nonfinite=skip to drop such batches"
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        self.log("train/tokens", global_tokens, batch_size=1)
        # DDP averages the ranks' gradients; dividing each rank's sum by (global tokens / ranks) makes that average
        # the gradient of the global token mean, however unevenly the tokens fall over the ranks. One process:
        # sum / tokens, bit for bit the mean cross-entropy.
        return loss_sum / (global_tokens / world)

    def _loss_sum(self, batch: dict[str, Tensor], label_smoothing: float = 0.0) -> tuple[Tensor, Tensor]:
        """The cross-entropy summed over the batch's target tokens (labels != -100), and their count."""
        labels = batch["labels"]
        logits = self.model(batch["input_ids"], batch["attention_mask"], batch.get("global_attention_mask"),
                            decoder_input_ids=self._decoder_inputs(labels)).logits.float()
        total = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                                label_smoothing=label_smoothing, reduction="sum")
        return total, (labels != -100).sum()

    def _loss(self, batch: dict[str, Tensor], label_smoothing: float = 0.0) -> Tensor:
        """The mean cross-entropy over the batch's target tokens."""
        total, tokens = self._loss_sum(batch, label_smoothing)
        return total / tokens

    def _decoder_inputs(self, labels: Tensor) -> Tensor:
        from led.models.led.modeling import shift_tokens_right

        config = self.model.config
        return shift_tokens_right(labels, config.pad_token_id, config.decoder_start_token_id)

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._predictions = {}
        gather_weights = self._strategy_method("gather_weights")
        if gather_weights is not None:  # FSDP: generation must run without per-layer collectives
            gather_weights(self.model)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss = self._loss(batch)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch["input_ids"].shape[0])
        wanted = self.hparams.val_rouge_examples
        ids = batch["ids"]
        keep = ids < wanted if wanted >= 0 else torch.ones_like(ids, dtype=torch.bool)
        if self.tokenizer is None or not bool(keep.any()):
            return
        rows = keep.nonzero().squeeze(1)
        global_mask = batch.get("global_attention_mask")
        tokens = self.model.generate(batch["input_ids"][rows], batch["attention_mask"][rows],
                                     None if global_mask is None else global_mask[rows], **self.generation)
        for example_id, text in zip(ids[rows].tolist(), self.tokenizer.decode_batch(tokens.tolist())):
            self._predictions[example_id] = text.strip()

    def on_validation_epoch_end(self) -> None:
        release_weights = self._strategy_method("release_weights")
        if release_weights is not None:
            release_weights(self.model)
        predictions = _gather_predictions(self._predictions)
        if not predictions or self.trainer.sanity_checking:
            return
        references = self._references()
        ordered = sorted(predictions)
        scores = compute_rouge([predictions[i] for i in ordered], [references[i] for i in ordered], bootstrap=0)
        for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
            # Every rank computed the same numbers from the gathered predictions: no further reduction.
            self.log(f"val/{name}", scores[name], prog_bar=name == "rouge1", rank_zero_only=False)
        samples = [(i, predictions[i], references[i]) for i in ordered[: self.hparams.num_logged_samples]]
        self.validation_samples = samples
        if self.trainer.is_global_zero:
            for example_id, prediction, reference in samples:
                log.info("sample %d (step %d)\n  prediction: %s\n  reference:  %s", example_id, self.global_step,
                         prediction.replace("\n", " | "), reference.replace("\n", " | "))

    @property
    def tokenizer(self) -> Any:
        """The DataModule's tokenizer, for decoding generated summaries (None without a DataModule)."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        return getattr(datamodule, "tokenizer", None)

    def _references(self) -> list[str]:
        return self.trainer.datamodule.references("validation")

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Every rank's random states, for an exact resume (dropout); and the model's config, so `led.export`
        # rebuilds the model without the pretrained files it started from.
        checkpoint["rng_states"] = rng_states()
        checkpoint["led_config"] = self.model.config.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._rng_states_to_restore = checkpoint.get("rng_states")

    def on_train_start(self) -> None:
        # Restored at the last moment before the first step, so nothing run during setup can shift the streams.
        if self._rng_states_to_restore:
            restore_rng_states(self._rng_states_to_restore, self.global_rank, self.trainer.world_size)
            self._rng_states_to_restore = None

    # ------------------------------------------------------------------ optimisation
    def configure_model(self) -> None:
        # trainer=fsdp (led.training.distributed.LayerShardedStrategy) shards the layers here, before the optimizer is
        # built over the sharded parameters; every other strategy has no `shard_model` and nothing to do.
        shard_model = self._strategy_method("shard_model")
        if shard_model is not None:
            shard_model(self.model)

    def _strategy_method(self, name: str) -> Any:
        """A method of led.training.distributed.LayerShardedStrategy (trainer=fsdp); None under every other strategy."""
        return getattr(self.trainer.strategy, name, None) if self._trainer is not None else None

    def configure_optimizers(self) -> dict[str, Any]:
        settings = dict(self.hparams.optimizer)
        name = settings.pop("name", "adamw")
        lr = float(settings.pop("lr"))
        weight_decay = float(settings.pop("weight_decay", 0.0))
        groups = parameter_groups(self.model, weight_decay)
        if name == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=lr, **_plain(settings))
        else:
            optimizer = torch.optim.Adafactor(groups, lr=lr, **_plain(settings))
        total = int(self.trainer.estimated_stepping_batches)
        schedule = lr_lambda(total_steps=total, **dict(self.hparams.scheduler))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on weight matrices and embeddings, none on biases and LayerNorms."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            # The tied embedding appears under four modules (shared, both embed_tokens, lm_head): once only.
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            exempt = name.endswith("bias") or isinstance(module, torch.nn.LayerNorm)
            (no_decay if exempt else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(total_steps: int, name: str = "linear", warmup_steps: int | None = None,
              warmup_ratio: float | None = None, min_lr_ratio: float = 0.0) -> Any:
    """The multiplier of the base lr at each step: linear warmup, then linear / cosine decay or constant."""
    _check_choice("scheduler.name", name, SCHEDULERS)
    if warmup_steps is not None and warmup_ratio is not None:
        raise ValueError("set scheduler.warmup_steps or scheduler.warmup_ratio, not both")
    warmup = int(warmup_steps if warmup_steps is not None else round((warmup_ratio or 0.0) * total_steps))
    if warmup < 0 or not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"scheduler: warmup={warmup} must be >= 0 and min_lr_ratio={min_lr_ratio} in [0, 1]")
    total = max(total_steps, warmup + 1)

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if name == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        decay = 1.0 - progress if name == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return min_lr_ratio + (1.0 - min_lr_ratio) * decay

    return multiplier


def _gather_predictions(local: dict[int, str]) -> dict[int, str]:
    """Every rank's predictions, merged by example id (the DDP sampler may repeat a few examples)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return dict(local)
    gathered: list[dict[int, str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    merged: dict[int, str] = {}
    for part in gathered:
        merged.update(part or {})
    return merged


def _sum_over_ranks(values: Tensor) -> tuple[Tensor, int]:
    """`values` summed over the data-parallel ranks, and the number of ranks (1 without torch.distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values, 1
    values = values.clone()
    dist.all_reduce(values)
    return values, dist.get_world_size()


def _plain(settings: dict[str, Any]) -> dict[str, Any]:
    # Hydra hands lists for tuples (betas); torch optimizers want tuples.
    return {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(valid)}")
