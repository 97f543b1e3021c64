"""`generate` against `transformers`' `generate(do_sample=False)` on identical random weights, token for token.

The tiny models get `init_std=0.2` (with the default 0.02 the logits are almost only `final_logits_bias`,
so every step picks the same token) and a bias towards EOS on both sides, so that hypotheses end at
different lengths: finished beams, the stopping rules and the padding after EOS are all exercised.
"""

from __future__ import annotations

import copy
import functools
import json
import re

import pytest
import torch
from conftest import TINY_CONFIGS, make_batch, make_pair

from led import LEDForConditionalGeneration
from led.models.generation import GenerationConfig

EOS, PAD, START = 2, 1, 2
# Bias of the EOS logit, per config: EOS wins now and then, at different steps for different inputs.
EOS_BIAS = {"uniform": 4.0, "per_layer": 4.0, "gelu_new": 2.0}
BATCHES = {  # input lengths (padded batches), global attention
    "padded": ([40, 23, 31], "random"),
    "first": ([33, 64], "first"),
    "pair": ([17, 50], "none"),
    "single": ([45], "first"),  # one row: the CPU head's product takes another kernel for it
}
DEFAULT_MAX_LENGTH = 16

# id -> (config, batch, seed, generate() arguments, whether some returned output ends with EOS before the
# longest one). Seeds are picked so that outputs end at different lengths.
CASES = {
    "greedy": ("uniform", "first", 3, {}, True),
    "greedy-per_layer": ("per_layer", "padded", 3, {}, True),
    "greedy-gelu_new": ("gelu_new", "pair", 0, {}, True),
    "greedy-single": ("uniform", "single", 0, dict(min_new_tokens=24, max_new_tokens=24, no_repeat_ngram_size=1),
                      False),
    "beam3-single": ("gelu_new", "single", 0, dict(num_beams=3, min_new_tokens=24, max_new_tokens=24), False),
    "beam2": ("gelu_new", "padded", 0, dict(num_beams=2), True),
    "beam4": ("gelu_new", "padded", 3, dict(num_beams=4), True),
    "beam4-per_layer": ("per_layer", "padded", 0, dict(num_beams=4), True),
    "beam4-uniform": ("uniform", "first", 3, dict(num_beams=4), True),
    "length_penalty=0.5": ("uniform", "padded", 1, dict(num_beams=4, length_penalty=0.5), True),
    "length_penalty=2.0": ("gelu_new", "padded", 7, dict(num_beams=4, length_penalty=2.0), True),
    "length_penalty=-1.0": ("gelu_new", "padded", 5, dict(num_beams=3, length_penalty=-1.0), True),
    "no_repeat_ngram=3-greedy": ("uniform", "padded", 1, dict(no_repeat_ngram_size=3), True),
    "no_repeat_ngram=3-beam4": ("gelu_new", "padded", 0, dict(num_beams=4, no_repeat_ngram_size=3), True),
    "min_length=8-beam3": ("uniform", "first", 3, dict(num_beams=3, min_length=8), True),
    "min_new_tokens=6-greedy": ("gelu_new", "padded", 0, dict(min_new_tokens=6), True),
    "min_new_tokens=5-beam2": ("per_layer", "padded", 2, dict(num_beams=2, min_new_tokens=5), True),
    "max_new_tokens=12-beam4": ("uniform", "first", 3, dict(num_beams=4, max_new_tokens=12), True),
    "max_new_tokens=5-greedy": ("gelu_new", "pair", 1, dict(max_new_tokens=5), True),
    "early_stopping=True": ("gelu_new", "padded", 4, dict(num_beams=4, early_stopping=True), True),
    "early_stopping=False": ("per_layer", "padded", 0, dict(num_beams=4, early_stopping=False), True),
    "early_stopping=never": ("gelu_new", "padded", 0, dict(num_beams=4, early_stopping="never"), True),
    "early_stopping=never-length_penalty=2.0": (
        "uniform", "padded", 0, dict(num_beams=4, early_stopping="never", length_penalty=2.0), False),
    "num_return_sequences=3": ("uniform", "first", 3, dict(num_beams=4, num_return_sequences=3), True),
    "num_return_sequences=2-early_stopping=True": (
        "per_layer", "padded", 1, dict(num_beams=2, num_return_sequences=2, early_stopping=True), True),
    "forced_eos-greedy": ("gelu_new", "pair", 0, dict(forced_eos_token_id=EOS, max_length=10), True),
    "forced_eos-beam3": ("gelu_new", "padded", 0, dict(num_beams=3, forced_eos_token_id=EOS, max_length=10), True),
    "forced_bos-beam2": ("uniform", "padded", 1, dict(num_beams=2, forced_bos_token_id=0, max_length=10), True),
    "repetition_penalty=1.3-beam2": ("gelu_new", "padded", 1, dict(num_beams=2, repetition_penalty=1.3), True),
    "repetition_penalty=1.5-greedy": ("per_layer", "padded", 8, dict(repetition_penalty=1.5), True),
    "repetition_penalty=0.7-greedy": ("uniform", "padded", 2, dict(repetition_penalty=0.7), True),
    "two_eos_ids-beam5": ("uniform", "first", 1, dict(num_beams=5, eos_token_id=[EOS, 7]), True),
}


@functools.cache
def _pair(name: str):
    ours, hf = make_pair(name, init_std=0.2)
    with torch.no_grad():
        for model in (ours, hf):
            model.final_logits_bias[0, EOS] = EOS_BIAS[name]
    return ours, hf


def _inputs(name: str, batch: str, seed: int = 0) -> dict:
    lengths, globals_ = BATCHES[batch]
    inputs = make_batch(TINY_CONFIGS[name]["vocab_size"], lengths, 4, globals_, seed=seed)
    inputs.pop("labels")
    return inputs


def _both(ours, hf, inputs: dict, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    return ours.generate(**inputs, **kwargs), hf.generate(**inputs, **kwargs, do_sample=False)


@pytest.mark.parametrize("case", list(CASES))
def test_generate_matches_transformers(case):
    name, batch, seed, kwargs, ends_early = CASES[case]
    if "max_length" not in kwargs and "max_new_tokens" not in kwargs:
        kwargs = {**kwargs, "max_length": DEFAULT_MAX_LENGTH}
    ours, hf = _pair(name)
    inputs = _inputs(name, batch, seed)
    out, ref = _both(ours, hf, inputs, **kwargs)
    assert out.shape == ref.shape, f"{tuple(out.shape)} vs transformers {tuple(ref.shape)}"
    assert torch.equal(out, ref), f"\nours:\n{out}\ntransformers:\n{ref}"
    returned = kwargs.get("num_return_sequences", 1)
    assert out.shape[0] == inputs["input_ids"].shape[0] * returned
    assert (out[:, 0] == START).all()
    if ends_early:  # the case exercises finished hypotheses: some output ends with EOS before the longest one
        eos = torch.tensor(kwargs.get("eos_token_id", EOS))
        assert torch.isin(out[:, 1:-1], eos).any(), f"no output ended early:\n{out}"


def test_greedy_pads_after_eos():
    ours, hf = _pair("uniform")
    out, ref = _both(ours, hf, _inputs("uniform", "padded", seed=1), max_length=DEFAULT_MAX_LENGTH)
    assert torch.equal(out, ref)
    ended = (out[:, 1:] == EOS).int().cumsum(1) > 0  # at or after the first EOS
    after_eos = ended[:, :-1] & ended[:, 1:]
    assert after_eos.any() and (out[:, 2:][after_eos] == PAD).all()


def test_all_positions_of_the_decoder_can_be_used():
    ours, hf = _pair("gelu_new")  # 32 decoder positions: the start token plus 32 new tokens
    out, ref = _both(ours, hf, _inputs("gelu_new", "pair"), max_new_tokens=32, min_new_tokens=32)
    assert out.shape == (2, 33) and torch.equal(out, ref)


def test_cached_generation_equals_uncached_decoding():
    """Greedy decoding that re-runs the whole decoder on the whole prefix at every step, without a cache."""
    ours, _ = _pair("per_layer")
    inputs = _inputs("per_layer", "padded")
    out = ours.generate(**inputs, max_length=12, min_length=12)  # EOS banned: every row runs 11 steps
    ids = out[:, :1]
    with torch.no_grad():
        encoded = ours.encode(**inputs)
        for _ in range(11):
            logits = ours.decode(ids, encoded, inputs["attention_mask"])[:, -1]
            logits[:, EOS] = -float("inf")
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], 1)
    assert torch.equal(ids, out)


# --- defaults from a checkpoint ---------------------------------------------------------------------

SETTINGS = dict(num_beams=3, max_length=14, min_length=4, no_repeat_ngram_size=3, length_penalty=2.0,
                early_stopping=True, num_return_sequences=2)


def test_defaults_come_from_generation_config_json(tmp_path):
    transformers = pytest.importorskip("transformers")
    _, hf = _pair("gelu_new")
    hf.save_pretrained(tmp_path)
    generation_config = copy.deepcopy(hf.generation_config)
    generation_config.update(**SETTINGS)
    generation_config.save_pretrained(tmp_path)
    ours = LEDForConditionalGeneration.from_pretrained(tmp_path).eval()
    reference = transformers.LEDForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert {k: getattr(ours.generation_config, k) for k in SETTINGS} == SETTINGS

    inputs = _inputs("gelu_new", "padded", seed=3)
    out, ref = _both(ours, reference, inputs)  # every setting from the file
    assert out.shape[0] == 3 * 2 and torch.equal(out, ref)
    out, ref = _both(ours, reference, inputs, num_beams=1, num_return_sequences=1)  # arguments win
    assert out.shape[0] == 3 and torch.equal(out, ref)

    # save_pretrained writes the defaults back, for us and for transformers.
    ours.save_pretrained(tmp_path / "again")
    saved = json.loads((tmp_path / "again" / "generation_config.json").read_text())
    assert {k: saved[k] for k in SETTINGS} == SETTINGS
    assert LEDForConditionalGeneration.from_pretrained(tmp_path / "again").generation_config == ours.generation_config
    reloaded = transformers.LEDForConditionalGeneration.from_pretrained(tmp_path / "again").eval()
    out, ref = _both(ours, reloaded, inputs)
    assert out.shape[0] == 3 * 2 and torch.equal(out, ref)


def test_defaults_of_an_old_config_json_without_generation_config(tmp_path):
    """Older checkpoints keep their generation settings in config.json; transformers still reads them there."""
    transformers = pytest.importorskip("transformers")
    _, hf = _pair("uniform")
    hf.save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").unlink()
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(num_beams=2, max_length=12, no_repeat_ngram_size=2)
    (tmp_path / "config.json").write_text(json.dumps(config))
    ours = LEDForConditionalGeneration.from_pretrained(tmp_path).eval()
    reference = transformers.LEDForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert (ours.generation_config.num_beams, ours.generation_config.max_length) == (2, 12)
    out, ref = _both(ours, reference, _inputs("uniform", "pair", seed=4))
    assert out.shape[1] <= 12 and torch.equal(out, ref)


def test_a_fresh_model_saves_no_generation_config(tmp_path):
    ours, _ = _pair("uniform")
    ours.save_pretrained(tmp_path)
    assert not (tmp_path / "generation_config.json").exists()
    assert LEDForConditionalGeneration.from_pretrained(tmp_path).generation_config == GenerationConfig(
        bos_token_id=0, eos_token_id=EOS, pad_token_id=PAD, decoder_start_token_id=START)


# --- bf16 and bad arguments -------------------------------------------------------------------------

def _check_valid(out: torch.Tensor, rows: int, max_length: int, vocab: int) -> None:
    assert out.dtype == torch.long and out.shape[0] == rows and 2 <= out.shape[1] <= max_length
    assert (out[:, 0] == START).all() and out.min() >= 0 and out.max() < vocab


def test_bf16_weights_and_autocast_generate():
    ours, _ = _pair("uniform")
    inputs, vocab = _inputs("uniform", "padded"), TINY_CONFIGS["uniform"]["vocab_size"]
    bf16 = copy.deepcopy(ours).to(torch.bfloat16)
    _check_valid(bf16.generate(**inputs, max_length=12), 3, 12, vocab)
    _check_valid(bf16.generate(**inputs, max_length=12, num_beams=3, num_return_sequences=2), 6, 12, vocab)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _check_valid(ours.generate(**inputs, max_length=12, num_beams=2), 3, 12, vocab)


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_length=1), "max_length=1 leaves no room after the decoder start token"),
    (dict(max_new_tokens=0), "max_new_tokens=0 is invalid: it must be an integer >= 1"),
    (dict(max_length=34), "max_length=34 needs 33 decoder positions but the model has 32"),
    (dict(max_new_tokens=33), "set max_length <= 33"),
    (dict(num_beams=0), "num_beams=0 is invalid"),
    (dict(num_beams=2, num_return_sequences=3), "num_return_sequences=3 is larger than num_beams=2"),
    (dict(early_stopping="sometimes"), "early_stopping='sometimes' is invalid: use True, False or 'never'"),
    (dict(repetition_penalty=0.0), "repetition_penalty=0.0 is invalid"),
    (dict(do_sample=True), "sampling is not implemented"),
])
def test_bad_arguments_are_rejected(kwargs, message):
    ours, _ = _pair("gelu_new")
    with pytest.raises(ValueError, match=re.escape(message)):
        ours.generate(**_inputs("gelu_new", "pair"), **kwargs)
