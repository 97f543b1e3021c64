"""What every encoder-decoder family (LED, PEGASUS-X) gives the shared code, and what it gets from it.

A family subclasses `EncoderDecoderModel` and implements the abstract methods below; generation
(`led.models.generation`) and checkpoint I/O (`led.models.checkpoint`) use only these, so they are written once
for every family. The shared methods (`generate`, `from_pretrained`, `save_pretrained`, ...) are defined here.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from led.models.checkpoint import load_pretrained, save_pretrained
from led.models.generation import GenerationConfig, generate


class ModelConfig(Protocol):
    """What the shared code reads of a family's config: it maps to and from a Hugging Face `config.json`."""

    model_type: ClassVar[str]  # config.json's "model_type": the family (led.models.families)
    vocab_size: int
    pad_token_id: int
    bos_token_id: int
    eos_token_id: int
    decoder_start_token_id: int
    init_std: float  # the standard deviation of the initial weights
    extra: dict[str, Any]  # other keys of config.json, e.g. the generation settings of older checkpoints

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> Self: ...

    def save(self, directory: str | os.PathLike) -> None: ...


def shift_tokens_right(labels: Tensor, pad_token_id: int, decoder_start_token_id: int) -> Tensor:
    """Teacher-forcing decoder inputs: labels shifted one step right, start token first, -100 -> pad."""
    shifted = labels.new_full(labels.shape, decoder_start_token_id)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == -100, pad_token_id)


@dataclass
class Seq2SeqOutput:
    logits: Tensor  # (B, T, V)
    encoder_last_hidden_state: Tensor  # (B, S, d_model)
    loss: Tensor | None = None  # mean cross-entropy over labels != -100


class DecodingCache(Protocol):
    """The key/value cache of incremental decoding; rows are the sequences being decoded."""

    def reorder(self, index: Tensor) -> None:
        """Keep rows `index` (N,), e.g. the parent beam of every new beam."""


class EncoderDecoderModel(nn.Module, ABC):
    """An encoder-decoder summarizer with a tied token embedding; parameter names are a Hugging Face format's."""

    # The family's config class: `config_class.from_json_file(dir / "config.json")` builds it.
    config_class: ClassVar[type[ModelConfig]]
    # The state-dict names of the one shared embedding matrix. The first is the one a saved file holds; files
    # may hold any subset of them (`transformers` often omits some), the others are copies of it.
    tied_keys: ClassVar[tuple[str, ...]] = ()
    # Whether `encode` takes a `global_attention_mask` (LED's global attention on chosen tokens). A family with
    # learned global tokens (PEGASUS-X) refuses one, and the framework builds none for it.
    takes_global_attention_mask: ClassVar[bool] = False

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        # generate()'s defaults from a checkpoint (generation_config.json / config.json); None: the config's ids.
        self.generation_config: GenerationConfig | None = None

    # --- shared forward and initialisation ------------------------------------------------------

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                global_attention_mask: Tensor | None = None, decoder_input_ids: Tensor | None = None,
                decoder_attention_mask: Tensor | None = None, labels: Tensor | None = None,
                encoder_hidden_states: Tensor | None = None) -> Seq2SeqOutput:
        """input_ids (B, S); labels (B, T) with -100 where no loss is wanted; `global_attention_mask` goes to
        `encode` when given (a family without global attention refuses it there).

        Returns logits (B, T, V), the encoder output (B, S, d_model) and, with labels, the mean
        cross-entropy over labels != -100. Without decoder_input_ids they are the labels shifted right.
        """
        if encoder_hidden_states is None:
            if input_ids is None:
                raise ValueError("forward() needs input_ids (or precomputed encoder_hidden_states)")
            encoder_kwargs = {} if global_attention_mask is None else {"global_attention_mask": global_attention_mask}
            encoder_hidden_states = self.encode(input_ids, attention_mask, **encoder_kwargs)
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("forward() needs decoder_input_ids or labels to build the decoder inputs")
            decoder_input_ids = shift_tokens_right(labels, self.config.pad_token_id,
                                                   self.config.decoder_start_token_id)
        logits = self.decode(decoder_input_ids, encoder_hidden_states, attention_mask,
                             decoder_attention_mask=decoder_attention_mask)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.reshape(-1),
                                   ignore_index=-100)
        return Seq2SeqOutput(logits=logits, encoder_last_hidden_state=encoder_hidden_states, loss=loss)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """`transformers`' initialisation of these families: N(0, init_std) weights, zero biases (and padding
        embedding rows), unit LayerNorms."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, std)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, std)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()

    # --- what a family implements ---------------------------------------------------------------

    @abstractmethod
    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None, **encoder_kwargs: Any) -> Tensor:
        """(B, S) token ids, attention_mask (B, S) 1 token / 0 pad -> encoder hidden states (B, S, D)."""

    @abstractmethod
    def decode(self, decoder_input_ids: Tensor, encoder_hidden_states: Tensor | None,
               encoder_attention_mask: Tensor | None = None, cache: Any = None,
               decoder_attention_mask: Tensor | None = None) -> Tensor:
        """(B, T) decoder ids -> logits (B, T, V). With a cache, only the new tokens are given."""

    @abstractmethod
    def new_cache(self, encoder_hidden_states: Tensor) -> DecodingCache:
        """A decoding cache over (B, S, D) encoder outputs: cross-attention keys/values computed once."""

    @abstractmethod
    def decode_step(self, tokens: Tensor, cache: DecodingCache, encoder_attention_mask: Tensor | None) -> Tensor:
        """(N,) newest token of every row -> the decoder's last hidden state (N, D); the cache grows by one.

        N may be a multiple of the cache's B cross-attention rows (beams of an input consecutive);
        encoder_attention_mask is (B, S) or None (no padding)."""

    @abstractmethod
    def output_layer(self) -> tuple[Tensor, Tensor | None]:
        """The output head: its weight (V, D) and a bias (1, V) or None; logits = hidden @ weight.T + bias."""

    @property
    @abstractmethod
    def max_target_positions(self) -> int | None:
        """How many tokens the decoder takes, its start token included (generate checks max_length against
        it); None: no limit."""

    @property
    @abstractmethod
    def max_source_positions(self) -> int | None:
        """How many input tokens the encoder takes; None: no limit (sinusoidal positions)."""

    @property
    @abstractmethod
    def input_multiple(self) -> int:
        """The encoder pads its input to a multiple of this (LED: its largest attention window; PEGASUS-X: its
        block size); batches padded so already waste no work inside it."""

    @abstractmethod
    def layers(self) -> list[nn.Module]:
        """Every encoder layer, then every decoder layer: the units FSDP shards one by one."""

    @abstractmethod
    def tie_weights(self) -> None:
        """Make every name in `tied_keys` refer to one Parameter (after `load_state_dict(..., assign=True)`)."""

    def adapt_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """A checkpoint file's tensors under this model's names: a family renames other layouts of its format and
        fills entries files may omit here (the tied copies are completed by the caller)."""
        return state

    # --- shared -------------------------------------------------------------------------------

    def generate(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                 global_attention_mask: Tensor | None = None, **settings: Any) -> Tensor:
        """Greedy or beam-search outputs (B * num_return_sequences, T), token for token those of `transformers`'
        `generate(do_sample=False)`.

        `settings` (num_beams, max_length, max_new_tokens, min_length, length_penalty, no_repeat_ngram_size,
        early_stopping, ...) are those of `led.models.generation.generate`; global_attention_mask (B, S) goes to
        `encode`, for families whose encoder takes one (LED).
        """
        return generate(self, input_ids, attention_mask, global_attention_mask, **settings)

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike, dtype: torch.dtype | None = None,
                        device: str | torch.device = "cpu") -> Self:
        """Load a Hugging Face checkpoint of this family from a local directory or the Hub (weights in fp32
        unless `dtype` says otherwise); `generation_config` is set from the checkpoint."""
        return load_pretrained(cls, path_or_hub_id, dtype=dtype, device=device)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write `config.json` + `model.safetensors` (+ `generation_config.json` when `self.generation_config`
        is set) that `transformers` and `from_pretrained` load."""
        save_pretrained(self, directory)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def gradient_checkpointing_enable(self) -> None:
        """Recompute every encoder and decoder layer in the backward pass instead of storing activations."""
        self._set_gradient_checkpointing(True)

    def gradient_checkpointing_disable(self) -> None:
        self._set_gradient_checkpointing(False)

    def _set_gradient_checkpointing(self, enabled: bool) -> None:
        # The layer stacks (encoder, decoder) carry the flag their forward reads.
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = enabled


__all__ = ["EncoderDecoderModel", "ModelConfig", "DecodingCache"]
