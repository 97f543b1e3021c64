"""Greedy and beam-search generation for any encoder-decoder family (`led.models.base.EncoderDecoderModel`).

The outputs equal `transformers`' `generate(do_sample=False)` token for token: same defaults, same
logits processors in the same order, and the same (vectorised) beam-search bookkeeping, including
how `length_penalty` and `early_stopping` (True / False / "never") rank finished hypotheses and stop
the search. What differs is the work done: the encoder runs once, cross-attention keys/values are
computed once on the B input rows and shared by the beams of each input (never repeated per beam),
and every step feeds only the newest token to the decoder, whose self-attention keys/values are cached.
Logits differ from `transformers`' by float rounding (~1e-6), so a token could only differ where two
candidates score within about that much of each other.

Lengths follow `transformers`: `max_length` / `min_length` count the decoder start token, while
`max_new_tokens` / `min_new_tokens` count generated tokens only. With nothing set anywhere, 20 new
tokens are generated.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from led.files import write_text_atomically

if TYPE_CHECKING:  # the model imports this module, never the other way round
    from led.models.base import DecodingCache, EncoderDecoderModel, ModelConfig

# A logits processor maps (sequences so far (N, t), scores (N, V)) to new scores (N, V).
LogitsProcessor = Callable[[Tensor, Tensor], Tensor]

# Used where neither the call, the checkpoint's generation config nor config.json sets a value
# (the global defaults of `transformers`' GenerationConfig).
DEFAULTS: dict[str, Any] = dict(max_length=20, min_length=0, num_beams=1, num_return_sequences=1,
                                length_penalty=1.0, early_stopping=False, no_repeat_ngram_size=0,
                                repetition_penalty=1.0, do_sample=False)

# Generation keys of `transformers` we do not implement; a checkpoint that sets one gets a warning.
_UNSUPPORTED = ("bad_words_ids", "suppress_tokens", "begin_suppress_tokens", "encoder_no_repeat_ngram_size",
                "exponential_decay_length_penalty", "num_beam_groups", "diversity_penalty", "constraints",
                "force_words_ids", "sequence_bias", "penalty_alpha")


@dataclass
class GenerationConfig:
    """Generation settings; None means "not set here" (a lower-priority source, then DEFAULTS, decides).

    Field meanings are those of `transformers.GenerationConfig`.
    """

    max_length: int | None = None  # total length, decoder start token included
    max_new_tokens: int | None = None  # generated tokens; wins over max_length
    min_length: int | None = None  # EOS is forbidden while the sequence is shorter than this
    min_new_tokens: int | None = None  # same, counting generated tokens only; wins over min_length
    num_beams: int | None = None
    num_return_sequences: int | None = None  # best hypotheses returned per input (<= num_beams)
    # Finished hypotheses are ranked by sum(log p) / generated_length ** length_penalty:
    # > 0 favours longer sequences, < 0 shorter ones.
    length_penalty: float | None = None
    # True: stop an input as soon as num_beams hypotheses are finished. False: stop when a heuristic
    # says no running beam can beat the finished ones. "never": only stop when that is certain.
    early_stopping: bool | str | None = None
    no_repeat_ngram_size: int | None = None  # no n-gram of this size occurs twice in an output
    repetition_penalty: float | None = None  # CTRL-style penalty on tokens already generated
    forced_bos_token_id: int | None = None  # forced as the first generated token
    forced_eos_token_id: int | list[int] | None = None  # forced as the last token when max_length is reached
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None  # fills finished sequences; defaults to the first EOS id
    decoder_start_token_id: int | None = None  # first decoder token; defaults to bos_token_id
    do_sample: bool | None = None  # only False (deterministic decoding) is implemented

    def __post_init__(self) -> None:
        for name in ("max_length", "max_new_tokens", "num_beams", "num_return_sequences"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("min_length", "min_new_tokens", "no_repeat_ngram_size"):
            _check_int(name, getattr(self, name), minimum=0)
        if self.early_stopping not in (None, True, False, "never"):
            raise ValueError(f"GenerationConfig.early_stopping={self.early_stopping!r} is invalid: "
                             f"use True, False or 'never'")
        if self.repetition_penalty is not None and not self.repetition_penalty > 0:
            raise ValueError(f"GenerationConfig.repetition_penalty={self.repetition_penalty!r} is invalid: "
                             f"it must be a positive float (1.0 = no penalty)")
        if self.do_sample:
            raise ValueError("GenerationConfig.do_sample=True: sampling is not implemented; "
                             "use do_sample=False (greedy or beam search)")
        if self.num_beams and self.num_return_sequences and self.num_return_sequences > self.num_beams:
            raise ValueError(f"GenerationConfig.num_return_sequences={self.num_return_sequences} is larger than "
                             f"num_beams={self.num_beams}: return at most num_beams sequences")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationConfig:
        """Keep the keys this class knows; warn about generation features that would be ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        ignored = [k for k in _UNSUPPORTED if data.get(k) not in (None, 0, 1, 0.0, [], False)]
        if ignored:
            warnings.warn(f"generation settings {ignored} are not implemented by led.models.generation and are ignored",
                          stacklevel=2)
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_model_config(cls, config: ModelConfig) -> GenerationConfig:
        """Special token ids of the model config, plus generation keys an old config.json carries."""
        ids = dict(bos_token_id=config.bos_token_id, eos_token_id=config.extra.get("eos_token_ids",
                   config.eos_token_id), pad_token_id=config.pad_token_id,
                   decoder_start_token_id=config.decoder_start_token_id)
        return cls.from_dict({**config.extra, **ids})

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set (not None)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def save(self, directory: str | os.PathLike) -> None:
        """Write the set fields as `generation_config.json`, which `transformers` reads as well."""
        write_text_atomically(os.path.join(directory, "generation_config.json"),
                              json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def update(self, other: GenerationConfig) -> GenerationConfig:
        """A copy where every field `other` sets (not None) replaces ours."""
        changes = {f.name: getattr(other, f.name) for f in dataclasses.fields(other)
                   if getattr(other, f.name) is not None}
        return dataclasses.replace(self, **changes)

    def with_defaults(self) -> GenerationConfig:
        """A copy with DEFAULTS filled in where nothing was set."""
        return dataclasses.replace(self, **{k: v for k, v in DEFAULTS.items() if getattr(self, k) is None})


def _check_int(name: str, value: Any, minimum: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        raise ValueError(f"GenerationConfig.{name}={value!r} is invalid: it must be an integer >= {minimum}")


def load_generation_config(directory: str | os.PathLike) -> GenerationConfig:
    """The generation defaults of a checkpoint directory.

    `generation_config.json` when present; keys it lacks (and every key, without it) come from
    `config.json`, whose special token ids and old-style generation keys are used.
    """
    config: dict[str, Any] = {}
    for name in ("config.json", "generation_config.json"):  # later files win
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                config.update({k: v for k, v in json.load(f).items() if v is not None})
    return GenerationConfig.from_dict(config)


# --- logits processors (the order of `transformers`' _get_logits_processor) -----------------------

def _repetition_penalty(penalty: float) -> LogitsProcessor:
    def process(ids: Tensor, scores: Tensor) -> Tensor:
        seen = scores.gather(1, ids)
        seen = torch.where(seen < 0, seen * penalty, seen / penalty)
        return scores.scatter(1, ids, seen)
    return process


def _no_repeat_ngram(n: int) -> LogitsProcessor:
    def process(ids: Tensor, scores: Tensor) -> Tensor:
        length = ids.shape[1]
        if length < n:
            return scores
        # The next token completes an n-gram that starts with the last n-1 tokens; every earlier
        # n-gram with that same prefix bans its last token.
        prefix = ids[:, length + 1 - n:]  # (N, n-1)
        windows = ids.unfold(1, n, 1)  # (N, length-n+1, n)
        matches = (windows[..., :-1] == prefix[:, None]).all(-1)
        vocab = scores.shape[1]
        # Windows that do not match write into a spare column, so they cannot ban anything.
        banned = scores.new_zeros((scores.shape[0], vocab + 1), dtype=torch.bool)
        banned.scatter_(1, torch.where(matches, windows[..., -1], vocab), True)
        return scores.masked_fill(banned[:, :vocab], -math.inf)
    return process


def _ban_eos_below(min_length: int, eos_mask: Tensor) -> LogitsProcessor:
    def process(ids: Tensor, scores: Tensor) -> Tensor:
        return scores.masked_fill(eos_mask, -math.inf) if ids.shape[1] < min_length else scores
    return process


def _force_at(length: int, token_ids: list[int]) -> LogitsProcessor:
    """At sequence length `length`, only `token_ids` may follow (score 0, everything else -inf)."""
    def process(ids: Tensor, scores: Tensor) -> Tensor:
        if ids.shape[1] != length:
            return scores
        forced = torch.full_like(scores, -math.inf)
        forced[:, token_ids] = 0
        return forced
    return process


def _processors(cfg: GenerationConfig, max_length: int, min_length: int, eos: list[int] | None,
                vocab: int, device: torch.device) -> list[LogitsProcessor]:
    processors: list[LogitsProcessor] = []
    if cfg.repetition_penalty != 1.0:
        processors.append(_repetition_penalty(cfg.repetition_penalty))
    if cfg.no_repeat_ngram_size > 0:
        processors.append(_no_repeat_ngram(cfg.no_repeat_ngram_size))
    if eos is not None and min_length > 0:
        eos_mask = torch.zeros(vocab, dtype=torch.bool, device=device)
        eos_mask[eos] = True
        processors.append(_ban_eos_below(min_length, eos_mask))
    if cfg.forced_bos_token_id is not None:
        processors.append(_force_at(1, [cfg.forced_bos_token_id]))
    if cfg.forced_eos_token_id is not None:
        processors.append(_force_at(max_length - 1, _as_list(cfg.forced_eos_token_id)))
    return processors


def _apply(processors: list[LogitsProcessor], ids: Tensor, scores: Tensor) -> Tensor:
    for process in processors:
        scores = process(ids, scores)
    return scores


def _as_list(token_ids: int | list[int] | None) -> list[int] | None:
    return None if token_ids is None else [token_ids] if isinstance(token_ids, int) else list(token_ids)


# --- settings ---------------------------------------------------------------------------------------

@dataclass
class _Plan:
    """Everything the decoding loops need, resolved once."""

    cfg: GenerationConfig
    max_length: int
    min_length: int
    start: int
    eos: list[int] | None
    pad: int | None


def _resolve(model: EncoderDecoderModel, generation_config: GenerationConfig | None,
             overrides: dict[str, Any]) -> _Plan:
    """Call arguments > `generation_config` > the model's generation defaults > DEFAULTS."""
    base = model.generation_config or GenerationConfig.from_model_config(model.config)
    cfg = base.update(generation_config or GenerationConfig()).update(GenerationConfig(**overrides))
    default_max_length = cfg.max_length is None
    cfg = cfg.with_defaults()
    if cfg.max_new_tokens is not None:
        max_length = cfg.max_new_tokens + 1
    elif default_max_length:  # the global default means "20 new tokens"
        max_length = cfg.max_length + 1
    else:
        max_length = cfg.max_length
    min_length = cfg.min_new_tokens + 1 if cfg.min_new_tokens is not None else cfg.min_length
    if max_length <= 1:
        raise ValueError(f"max_length={max_length} leaves no room after the decoder start token: "
                         f"set max_length >= 2 or max_new_tokens >= 1")
    positions = model.max_target_positions
    if positions is not None and max_length - 1 > positions:
        raise ValueError(f"max_length={max_length} needs {max_length - 1} decoder positions but the model has "
                         f"{positions}: set max_length <= {positions + 1}")
    start = cfg.decoder_start_token_id if cfg.decoder_start_token_id is not None else cfg.bos_token_id
    if start is None:
        raise ValueError("decoder_start_token_id (or bos_token_id) must be set to start decoding")
    eos = _as_list(cfg.eos_token_id)
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else (eos[0] if eos else None)
    return _Plan(cfg, max_length, min_length, start, eos, pad)


# --- decoding ---------------------------------------------------------------------------------------

@torch.inference_mode()
def generate(
    model: EncoderDecoderModel,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    global_attention_mask: Tensor | None = None,
    num_beams: int | None = None,
    max_length: int | None = None,
    max_new_tokens: int | None = None,
    min_length: int | None = None,
    min_new_tokens: int | None = None,
    length_penalty: float | None = None,
    no_repeat_ngram_size: int | None = None,
    early_stopping: bool | str | None = None,
    num_return_sequences: int | None = None,
    repetition_penalty: float | None = None,
    forced_bos_token_id: int | None = None,
    forced_eos_token_id: int | list[int] | None = None,
    bos_token_id: int | None = None,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    decoder_start_token_id: int | None = None,
    do_sample: bool | None = None,
    generation_config: GenerationConfig | None = None,
) -> Tensor:
    """Summaries for a batch of documents, as `transformers`' `generate(do_sample=False)` returns them.

    input_ids, attention_mask (1 token / 0 pad): (B, S). global_attention_mask (B, S; 1 = global) is passed
    on to `model.encode` when given, for families whose encoder takes one (LED).
    Arguments left None come from `generation_config`, then `model.generation_config` (set from a
    checkpoint's generation_config.json / config.json), then the model config's token ids, then DEFAULTS.

    Returns token ids (B * num_return_sequences, T): decoder start token first, pad_token_id after EOS,
    T the longest output of the batch.
    """
    overrides = {k: v for k, v in locals().items()
                 if k not in ("model", "input_ids", "attention_mask", "global_attention_mask", "generation_config")
                 and v is not None}
    plan = _resolve(model, generation_config, overrides)
    encoder_kwargs = {} if global_attention_mask is None else {"global_attention_mask": global_attention_mask}
    encoded = model.encode(input_ids, attention_mask, **encoder_kwargs)  # (B, S, D), once
    step = _Step(model, model.new_cache(encoded), attention_mask)
    device = input_ids.device
    processors = _processors(plan.cfg, plan.max_length, plan.min_length, plan.eos, model.config.vocab_size, device)
    search = _greedy if plan.cfg.num_beams == 1 else _beam_search
    return search(step, plan, processors, input_ids.shape[0], device)


class _Step:
    """One decoding step: the newest token of every row -> fp32 logits (N, V) of the next one.

    The cache holds one cross-attention row per input; rows of the self-attention cache are B (greedy)
    or B * num_beams (beam search, the beams of an input consecutive), which the decoder groups onto
    the B cross-attention rows.
    """

    def __init__(self, model: EncoderDecoderModel, cache: DecodingCache, encoder_attention_mask: Tensor | None):
        if encoder_attention_mask is not None and bool(encoder_attention_mask.all()):
            # Without padding the mask changes nothing, and without it SDPA skips turning it into an
            # additive mask in every layer at every step.
            encoder_attention_mask = None
        self.model, self.cache, self.encoder_attention_mask = model, cache, encoder_attention_mask
        self.weight, self.bias = model.output_layer()  # (V, D), (1, V) or None

    def __call__(self, last_tokens: Tensor) -> Tensor:
        """(N,) newest tokens -> (N, V) fp32 logits; the cache grows by one position."""
        hidden = self.model.decode_step(last_tokens, self.cache, self.encoder_attention_mask)  # (N, D)
        if hidden.device.type != "cpu":
            products = hidden @ self.weight.t()
        else:
            # On CPU the product streams the (V, D) weight (98 MB for PEGASUS-X) from memory at every step, and
            # which MKL kernel does it decides the time. weight @ rows.T, rows (N, D) contiguous with N >= 2, is a
            # matrix product that reads the weight once at full memory bandwidth (PEGASUS-X's head, 2 threads:
            # 1.9 ms); one row takes MKL's single-threaded matrix-vector path instead (7.8 ms as hidden @ weight.T,
            # 3.5 ms on a transposed copy), and so does a stride-0 or column-major second operand (9 ms). So a
            # single row is stacked on a copy of itself.
            rows = hidden.contiguous() if len(hidden) > 1 else torch.cat([hidden, hidden])
            products = (self.weight @ rows.t()).t()[:len(hidden)].contiguous()
        return (products if self.bias is None else products + self.bias).float()


def _greedy(step: _Step, plan: _Plan, processors: list[LogitsProcessor], batch: int,
            device: torch.device) -> Tensor:
    ids = torch.full((batch, plan.max_length), plan.pad if plan.pad is not None else 0, dtype=torch.long,
                     device=device)
    ids[:, 0] = plan.start
    eos = None if plan.eos is None else torch.tensor(plan.eos, device=device)
    unfinished = torch.ones(batch, dtype=torch.bool, device=device)
    length = 1
    while length < plan.max_length:
        tokens = _apply(processors, ids[:, :length], step(ids[:, length - 1])).argmax(-1)
        if eos is not None:  # finished sequences continue with padding
            tokens = torch.where(unfinished, tokens, plan.pad)
            unfinished &= ~torch.isin(tokens, eos)
        ids[:, length] = tokens
        length += 1
        if eos is not None and not bool(unfinished.any()):  # the one host sync per step
            break
    return ids[:, :length]


@dataclass
class _Beams:
    """Beam-search state of B inputs with K = num_beams beams each (the layout of `transformers`)."""

    running: Tensor  # (B, K, max_length) live hypotheses
    running_scores: Tensor  # (B, K) summed log-probs; -1e9 for beams that have not started
    finished: Tensor  # (B, K, max_length) best finished hypotheses, best first
    finished_scores: Tensor  # (B, K) length-penalised scores; -1e9 in empty slots
    finished_lengths: Tensor  # (B, K) generated tokens of each finished hypothesis; 0 in empty slots
    is_finished: Tensor  # (B, K) the slot holds a finished hypothesis
    can_improve: Tensor  # (B, 1) some live beam may still beat the finished ones (stop heuristic)

    @classmethod
    def start(cls, batch: int, beams: int, plan: _Plan, device: torch.device) -> _Beams:
        # Empty positions hold pad (or, as in transformers, the first EOS id when pad is 0).
        fill = (plan.pad or plan.eos[0]) if plan.eos is not None else -1
        running = torch.full((batch, beams, plan.max_length), fill, dtype=torch.long, device=device)
        running[:, :, 0] = plan.start
        # Only the first beam is live at first, so the K beams do not all pick the same token.
        running_scores = torch.zeros((batch, beams), device=device)
        running_scores[:, 1:] = -1e9
        return cls(running, running_scores, running.clone(), torch.full((batch, beams), -1e9, device=device),
                   torch.zeros((batch, beams), dtype=torch.long, device=device),
                   torch.zeros((batch, beams), dtype=torch.bool, device=device),
                   torch.ones((batch, 1), dtype=torch.bool, device=device))


def _beam_search(step: _Step, plan: _Plan, processors: list[LogitsProcessor], batch: int,
                 device: torch.device) -> Tensor:
    beams = plan.cfg.num_beams
    state = _Beams.start(batch, beams, plan, device)
    # Keep 2K candidates (more with several EOS ids) so that K stay live even if K of them end here.
    keep = max(2, 1 + len(plan.eos or [])) * beams
    eos = None if plan.eos is None else torch.tensor(plan.eos, device=device)
    length = 1
    while True:
        last = state.running[:, :, length - 1].reshape(-1)
        log_probs = F.log_softmax(step(last), dim=-1)
        log_probs = _apply(processors, state.running[:, :, :length].reshape(batch * beams, length), log_probs)
        parents, all_ended = _beam_step(state, log_probs, length, keep, eos, plan)
        length += 1
        _update_stop_heuristic(state, length, plan)
        early_stopping = plan.cfg.early_stopping is True
        done = ~state.can_improve.any() | (state.is_finished.all() & early_stopping) | all_ended
        if bool(done):  # the one host sync per step
            break
        step.cache.reorder(parents)
    returned = plan.cfg.num_return_sequences
    sequences = state.finished[:, :returned].reshape(batch * returned, plan.max_length)
    return sequences[:, :1 + int(state.finished_lengths[:, :returned].max())]


def _beam_step(state: _Beams, log_probs: Tensor, length: int, keep: int, eos: Tensor | None,
               plan: _Plan) -> tuple[Tensor, Tensor]:
    """Extend every beam by one token in place. log_probs: (B*K, V) processed next-token log-probs.

    Returns the flat row (in B*K) each new live beam continues, for reordering the cache, and whether
    every candidate ended (EOS or max_length), which ends the search.
    """
    batch, beams = state.running_scores.shape
    vocab = log_probs.shape[-1]
    scores = (log_probs.view(batch, beams, vocab) + state.running_scores[:, :, None]).view(batch, -1)
    top_scores, top_index = torch.topk(scores, keep)  # (B, 2K) best continuations over all beams
    parent = top_index // vocab
    candidates = torch.take_along_dim(state.running, parent[:, :, None], dim=1)  # (B, 2K, max_length)
    candidates[:, :, length] = top_index % vocab
    ended = torch.full_like(parent, length + 1 >= plan.max_length, dtype=torch.bool)
    if eos is not None:
        ended |= torch.isin(candidates[:, :, length], eos)

    # Live beams: the K best candidates that did not end.
    live_scores = top_scores + ended.to(torch.float32) * -1.0e9
    chosen = torch.topk(live_scores, k=beams)[1]
    state.running = torch.take_along_dim(candidates, chosen[:, :, None], dim=1)
    state.running_scores = torch.take_along_dim(live_scores, chosen, dim=1)
    offsets = torch.arange(batch, device=parent.device)[:, None] * beams
    parents = (torch.take_along_dim(parent, chosen, dim=1) + offsets).view(-1)

    _add_finished(state, candidates, top_scores, ended, length, plan)
    return parents, ended.all()


def _add_finished(state: _Beams, candidates: Tensor, top_scores: Tensor, ended: Tensor, length: int,
                  plan: _Plan) -> None:
    """Merge the candidates that just ended into the K best finished hypotheses of each input."""
    beams = state.running_scores.shape[1]
    cfg = plan.cfg
    # Only the K best candidates may finish; the other K are spares that keep K beams live.
    top_k = torch.arange(candidates.shape[1], device=ended.device) < beams
    just_finished = ended & top_k[None, :]
    generated = length  # tokens after the decoder start token, the new one included
    # The float ops below mirror transformers' exactly (same order, -1e9 for "impossible"), so that
    # equal scores are ranked the same way by topk.
    penalised = top_scores / (generated ** cfg.length_penalty)
    full = state.is_finished.all(-1, keepdim=True) & (cfg.early_stopping is True)
    penalised += full.to(torch.float32) * -1.0e9
    penalised += (~state.can_improve).to(torch.float32) * -1.0e9
    penalised += (~just_finished) * -1.0e9

    scores = torch.cat((state.finished_scores, penalised), dim=1)
    best = torch.topk(scores, k=beams)[1]
    state.finished = torch.take_along_dim(torch.cat((state.finished, candidates), 1), best[:, :, None], dim=1)
    state.finished_scores = torch.take_along_dim(scores, best, dim=1)
    lengths = torch.cat((state.finished_lengths, torch.full_like(ended, generated, dtype=torch.long)), 1)
    state.finished_lengths = torch.take_along_dim(lengths, best, dim=1)
    state.is_finished = torch.take_along_dim(torch.cat((state.is_finished, just_finished), 1), best, dim=1)


def _update_stop_heuristic(state: _Beams, length: int, plan: _Plan) -> None:
    """Clear `can_improve` for inputs whose best live beam can no longer beat their worst finished one.

    The best live score is estimated at the current length (at max_length for early_stopping="never"
    with a positive length penalty, where longer can only be better); empty finished slots count as -1e9.
    """
    penalty = plan.cfg.length_penalty
    if plan.cfg.early_stopping == "never" and penalty > 0.0:
        best_length = plan.max_length - 1
    else:
        best_length = length - 1
    best_live = state.running_scores[:, :1] / (best_length ** penalty)
    worst_finished = torch.where(state.is_finished, torch.min(state.finished_scores, dim=1, keepdim=True)[0],
                                 -1.0e9)
    state.can_improve = state.can_improve & torch.any(best_live > worst_finished, dim=-1, keepdim=True)
