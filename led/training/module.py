"""`LEDSummarizer`: the LightningModule that trains and validates a summarizer of any family (LED, PEGASUS-X).

It is built from plain values: the config nodes of the model, the optimizer, the schedule and the generation
settings, each naming what it builds with `_target_` (conf/model, conf/optimizer, conf/scheduler, `generation` in
conf/config.yaml). So `save_hyperparameters()` stores values, never modules, and `load_from_checkpoint` rebuilds it
alone. Batches are the dicts of `led.data.datamodule.SummarizationDataModule` (see docs/CONTRACTS.md).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from functools import partial
from typing import Annotated, Any, Literal, get_args

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from led.errors import ConfigError, UserError
from led.instantiate import build, receiving
from led.metrics import compute_rouge
from led.models.base import EncoderDecoderModel, shift_tokens_right
from led.models.families import FAMILIES, Family, config_of_checkpoint, family, family_of_size
from led.models.generation import GenerationConfig, generate
from led.models.led.config import LEDConfig
from led.models.pegasus_x.config import PegasusXConfig
from led.training.checkpointing import restore_rng_states, rng_states
from led.training.distributed import gather_objects, sum_over_ranks

log = logging.getLogger(__name__)

OnNonFinite = Literal["stop", "skip"]


class NonFiniteLossError(UserError, RuntimeError):
    """The training loss became NaN or infinite; raised before anything is saved over a good checkpoint."""


def build_model(size: str = "tiny", pretrained: str | None = None, attention_window: int | list[int] | None = None,
                vocab_size: int | None = None,
                # Annotated: the keys are fields of the family's config; led.config_check checks them against these.
                overrides: Annotated[dict[str, Any] | None, LEDConfig, PegasusXConfig] = None,
                gradient_checkpointing: bool = False) -> EncoderDecoderModel:
    """A pretrained checkpoint of any family (directory or Hub id; its config.json's model_type says which), or a
    randomly initialised model of a named size (`tiny`, `led-base-16384`, `pegasus-x-tiny`, `pegasus-x-base`, ...;
    the name says the family).

    `overrides` (any field of the family's config) change the named size or the pretrained model's config (dropouts,
    LED's windows, PEGASUS-X's block size: the weights do not depend on them); `attention_window` is LED's window.
    `gradient_checkpointing` recomputes each layer's activations in the backward pass instead of keeping them.
    """
    model = _build_model(size, pretrained, attention_window, vocab_size, dict(overrides or {}))
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def _build_model(size: str, pretrained: str | None, attention_window: int | list[int] | None, vocab_size: int | None,
                 overrides: dict[str, Any]) -> EncoderDecoderModel:
    family, config = model_config(size, pretrained, attention_window, vocab_size, overrides)
    if not pretrained:
        return family.model_class(config)
    model = family.model_class.from_pretrained(pretrained)
    if not overrides:
        return model
    # Windows, blocks and dropouts change the modules, not the weights: rebuild on the meta device, reuse the tensors.
    with torch.device("meta"):
        rebuilt = family.model_class(config)
    rebuilt.load_state_dict(model.state_dict(), assign=True)
    rebuilt.tie_weights()
    rebuilt.generation_config = model.generation_config
    return rebuilt


def model_config(size: str = "tiny", pretrained: str | None = None,
                 attention_window: int | list[int] | None = None, vocab_size: int | None = None,
                 overrides: dict[str, Any] | None = None) -> tuple[Family, Any]:
    """The family and config `build_model` builds with these arguments, without any weights: a pretrained model's
    from its config.json alone."""
    saved = config_of_checkpoint(pretrained) if pretrained else None
    family = _family_of_size(size) if saved is None else FAMILIES[saved.model_type]
    overrides = _node_overrides(family, attention_window, overrides)
    if saved is not None:
        return family, family.config({**saved.to_dict(), **overrides}) if overrides else saved
    if vocab_size is not None:
        overrides.setdefault("vocab_size", vocab_size)
    return family, family.config_of_size(size, **overrides)


def model_skeleton(model: dict[str, Any]) -> EncoderDecoderModel:
    """The model a conf/model node describes, on the meta device: its family, structure and limits, with no weights
    read or allocated (tools that need only those, e.g. led.stats)."""
    settings = {key: value for key, value in model.items()
                if not key.startswith("_") and key != "gradient_checkpointing"}
    family, config = model_config(**settings)
    with torch.device("meta"):
        return family.model_class(config)


def model_of_checkpoint(model: dict[str, Any], saved_config: dict[str, Any]) -> EncoderDecoderModel:
    """The model of a checkpoint that stores its config (`saved_config`, config.json's keys), for the checkpoint's
    weights to be loaded into: built from that config, with the `model` node's overrides and gradient checkpointing,
    and no weights read or initialised (its tensors are allocated, not filled). A run fine-tuned from a pretrained
    directory or Hub id resumes, evaluates and exports without it."""
    settings = {key: value for key, value in model.items() if not key.startswith("_")}
    try:
        found = family(str(saved_config.get("model_type", "led")))
    except ValueError as e:
        raise ConfigError(f"the checkpoint's model config: {e}") from None
    overrides = _node_overrides(found, settings.get("attention_window"), settings.get("overrides"))
    with torch.device("meta"):
        built = found.model_class(found.config({**saved_config, **overrides}))
    built.to_empty(device="cpu")
    built.tie_weights()  # to_empty gave each place of the shared embedding a tensor of its own
    if settings.get("gradient_checkpointing"):
        built.gradient_checkpointing_enable()
    return built


def _node_overrides(family: Family, attention_window: int | list[int] | None,
                    overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The config fields a model node changes: its `overrides` and LED's `attention_window`, each checked against
    the family's config."""
    overrides = dict(overrides or {})
    if attention_window is not None:
        if family.model_type != "led":
            raise ConfigError(f"model.attention_window={attention_window} is LED's sliding window; {family.name} "
                              f"attends within blocks instead: set model.overrides.block_size")
        overrides["attention_window"] = list(attention_window) if isinstance(attention_window, (list, tuple)) \
            else attention_window
    _check_fields(overrides, family)
    return overrides


def _family_of_size(size: str) -> Family:
    try:
        return family_of_size(size)
    except ValueError as e:
        raise ConfigError(f"model.size={size!r}: {e}") from None


def _check_fields(overrides: dict[str, Any], family: Family) -> None:
    """Each override must be a field of the family's config (a config.json would keep an unknown key silently)."""
    fields = [f.name for f in dataclasses.fields(family.config_class) if f.name != "extra"]
    for key in overrides:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
            hint = f"; did you mean model.overrides.{close[0]}?" if close else f" (its fields: {', '.join(fields)})"
            raise ConfigError(f"model.overrides.{key} is not a field of {family.name}'s config "
                              f"({family.config_class.__name__}){hint}")


class LEDSummarizer(L.LightningModule):
    """Teacher-forced training, validation loss and ROUGE (beam search) for a model of any family (LED, PEGASUS-X).

    The first five arguments are what the recipe hands it (led.recipes.train): config nodes, as plain dicts, that
    name what they build with `_target_`:

    Args:
        model: builds the model, e.g. `{_target_: led.training.module.build_model, size: tiny, ...}`.
        optimizer: a `_partial_` optimizer class, called with `parameter_groups(model, weight_decay)`, e.g.
            `{_target_: torch.optim.AdamW, _partial_: true, lr: 5e-4, weight_decay: 0.01}`.
        scheduler: a `_partial_` schedule (led.training.schedules), called with `total_steps`.
        generation: a `_partial_` of `led.models.generation.generate` (its keyword arguments) for validation
            ROUGE; None: its defaults.
        tokenizer: the tokenizer directory or Hub id (stored so evaluation finds it from the checkpoint).
        label_smoothing: of the training cross-entropy (validation loss is always unsmoothed).
        val_rouge_examples: validation examples summarised for ROUGE (0: loss only; -1: all).
        num_logged_samples: sample summaries logged at each validation.
        on_nonfinite: "stop" raises with the step and the batch's ids; "skip" drops the batch and counts it.
        saved_model: what a checkpoint of this module stores of its model (led.training.checkpointing.saved_model:
            its config and generation defaults), when that checkpoint is loaded next: the model is built from it
            (`model_of_checkpoint`), not by `model`'s builder, so resuming, evaluating and exporting a fine-tuned run
            need no pretrained files.
    """

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        generation: dict[str, Any] | None,
        tokenizer: str | None,
        label_smoothing: float = 0.0,
        val_rouge_examples: int = 64,
        num_logged_samples: int = 3,
        on_nonfinite: OnNonFinite = "stop",
        saved_model: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if on_nonfinite not in get_args(OnNonFinite):
            raise ConfigError(f"module.on_nonfinite={on_nonfinite!r} is not one of {', '.join(get_args(OnNonFinite))}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"module.label_smoothing={label_smoothing} must be in [0, 1)")
        self.save_hyperparameters(ignore=["saved_model"])
        if saved_model is None:
            self.model = build("model", model, _convert_="all")
        else:  # its checkpoint's weights are loaded next: the pretrained ones are neither needed nor read
            self.model = model_of_checkpoint(model, saved_model["config"])
            if saved_model.get("generation_config") is not None:
                self.model.generation_config = GenerationConfig.from_dict(saved_model["generation_config"])
        self._generate = build("generation", generation, _convert_="all") if generation else partial(generate)
        self.skipped_batches = 0
        self._predictions: dict[int, str] = {}
        self._rng_states_to_restore: list[dict[str, Any]] | None = None  # from a checkpoint, see on_train_start
        self.validated_at_step: int | None = None  # global step of the last validation with ROUGE (not sanity)
        self._step_scale: Tensor | None = None  # global target tokens of the step's first micro-batch
        self._step_tokens: Tensor | None = None  # ... and of all its micro-batches so far

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        loss_sum, tokens = self._loss_sum(batch, self.hparams.label_smoothing)
        # One all-reduce gives every rank the global batch's loss sum and target-token count, so every rank
        # logs, checks and normalises by the same numbers.
        (global_sum, global_tokens), world = sum_over_ranks(torch.stack([loss_sum.detach(), tokens.to(loss_sum)]))
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
        # The optimizer step's gradient is that of the mean over all its target tokens: every rank's and every
        # accumulated micro-batch's. DDP averages the ranks' gradients, Lightning divides what is returned here by
        # the micro-batches per step, and the step's token count is known only after its last micro-batch; so each
        # micro-batch's sum is divided by the first micro-batch's global count (`_step_scale`), and
        # `on_before_optimizer_step` corrects by first count / all counts. Without accumulation that factor is
        # exactly 1 and this is sum / tokens, bit for bit the mean cross-entropy.
        if self._step_scale is None:
            self._step_scale, self._step_tokens = global_tokens, global_tokens.new_zeros(())
        self._step_tokens = self._step_tokens + global_tokens
        micro_batches = self._trainer.accumulate_grad_batches if self._trainer is not None else 1
        return loss_sum * micro_batches / (self._step_scale / world)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Before gradient clipping (Lightning clips right after this hook): see training_step.
        if self._step_scale is not None:
            factor = (self._step_scale / self._step_tokens).item()
            if factor != 1.0:
                for parameter in self.model.parameters():
                    if parameter.grad is not None:
                        parameter.grad.mul_(factor)
        self._step_scale = self._step_tokens = None

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
        tokens = self._generate(self.model, batch["input_ids"][rows], batch["attention_mask"][rows],
                               None if global_mask is None else global_mask[rows])
        for example_id, text in zip(ids[rows].tolist(), self.tokenizer.decode_batch(tokens.tolist())):
            self._predictions[example_id] = text.strip()

    def on_validation_epoch_end(self) -> None:
        release_weights = self._strategy_method("release_weights")
        if release_weights is not None:
            release_weights(self.model)
        if not self.trainer.sanity_checking:
            self.validated_at_step = self.global_step
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
        # Every rank's random states, for an exact resume (dropout); and the model's config and generation
        # defaults, so that resume, evaluate.py and led.export rebuild the model without the files it started from.
        checkpoint["rng_states"] = rng_states()
        checkpoint["model_config"] = self.model.config.to_dict()  # config.json's keys, model_type included
        # generate()'s defaults from the pretrained model's generation_config.json, which validation ran with
        generation = self.model.generation_config
        checkpoint["generation_config"] = generation.to_dict() if generation is not None else None

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
        make_optimizer = build("optimizer", settings, _convert_="all")
        # Hydra hands lists; torch optimizers take their pairs (AdamW's betas) as tuples.
        tuples = {key: tuple(value) for key, value in make_optimizer.keywords.items() if isinstance(value, list)}
        groups = parameter_groups(self.model, float(settings.get("weight_decay", 0.0)))
        with receiving("optimizer", settings):  # the optimizer checks its values only now, given the parameters
            optimizer = make_optimizer(groups, **tuples)
        scheduler_settings = dict(self.hparams.scheduler)
        with receiving("scheduler", scheduler_settings):
            schedule = build("scheduler", scheduler_settings)(total_steps=int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer groups: weight decay on weight matrices and embeddings, none on biases and LayerNorms."""
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


def _gather_predictions(local: dict[int, str]) -> dict[int, str]:
    """Every rank's predictions, merged by example id (the DDP sampler may repeat a few examples)."""
    merged: dict[int, str] = {}
    for part in gather_objects(local):
        merged.update(part)
    return merged
