"""Our PEGASUS-X against `transformers`' on identical weights: forward (logits, loss, encoder output, gradients),
generation token for token, checkpoints both ways, and the config."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from conftest import perturb_vectors

from led import PegasusXConfig, PegasusXForConditionalGeneration
from led.models.pegasus_x.attention import PegasusXGlobalLocalAttention

transformers = pytest.importorskip("transformers")

EOS, PAD, START = 1, 0, 0
TINY = {  # block sizes and global counts small enough that the test inputs span several blocks
    "relu": dict(vocab_size=300, d_model=64, encoder_layers=3, decoder_layers=2, encoder_attention_heads=4,
                 decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=96, block_size=16,
                 num_global_tokens=5, activation_function="relu"),
    "gelu": dict(vocab_size=200, d_model=48, encoder_layers=2, decoder_layers=3, encoder_attention_heads=3,
                 decoder_attention_heads=2, encoder_ffn_dim=80, decoder_ffn_dim=64, block_size=8,
                 num_global_tokens=3, activation_function="gelu", scale_embedding=False),
}


def make_pair(name: str, seed: int = 0, eos_bias: float = 0.0, decoder_gain: float = 1.0, **overrides):
    """(ours, transformers') PEGASUS-X in eval mode with identical random weights; 1-D parameters and the global
    embeddings perturbed (initialised to 0/1 and N(0, init_std), a misplaced one would not show).

    For generation: `eos_bias` is added to the EOS logit through the decoder's final LayerNorm bias (there is no
    logits bias), and `decoder_gain` scales the decoder's projection matrices, whose outputs would otherwise be
    small beside the tied token embedding, so that random models mostly repeat their last token; together they
    make outputs end at different lengths."""
    kwargs = {**TINY[name], "dropout": 0.0, **overrides}
    torch.manual_seed(seed)
    hf = transformers.PegasusXForConditionalGeneration(transformers.PegasusXConfig(**kwargs)).eval()
    perturb_vectors(hf)
    with torch.no_grad():
        hf.model.encoder.embed_global.weight.normal_(0.0, 1.0)
        for param_name, param in hf.model.decoder.named_parameters():
            if param.dim() == 2 and "embed_tokens" not in param_name:
                param.mul_(decoder_gain)
        eos_row = hf.lm_head.weight[EOS]
        hf.model.decoder.layer_norm.bias.add_(eos_bias * eos_row / eos_row.square().sum())
    ours = PegasusXForConditionalGeneration(PegasusXConfig(**kwargs)).eval()
    result = ours.load_state_dict(hf.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return ours, hf


def make_batch(vocab_size: int, lengths: list[int], target_length: int, seed: int = 0) -> dict:
    """A right-padded batch (pad id 0) with labels, -100 after half of the first row."""
    gen = torch.Generator().manual_seed(seed)
    length = max(lengths)
    attention_mask = (torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]).long()
    input_ids = torch.randint(2, vocab_size, (len(lengths), length), generator=gen).masked_fill(attention_mask == 0, PAD)
    labels = torch.randint(2, vocab_size, (len(lengths), target_length), generator=gen)
    labels[0, target_length // 2:] = -100
    return dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels)


def _compare_forward(ours, hf, batch: dict, atol: float = 1e-5):
    out, ref = ours(**batch), hf(**batch)
    real = batch["attention_mask"].bool()
    assert out.encoder_last_hidden_state.shape == ref.encoder_last_hidden_state.shape
    assert (out.encoder_last_hidden_state - ref.encoder_last_hidden_state)[real].abs().max() <= atol
    assert out.logits.shape == ref.logits.shape
    assert (out.logits - ref.logits).abs().max() <= atol
    assert abs(out.loss.item() - ref.loss.item()) <= 1e-5
    return out, ref


# --- forward ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("stagger", [True, False])
@pytest.mark.parametrize("lengths", [[53, 20, 37], [16, 16], [7], [100, 3]])
def test_forward_matches_transformers(name, stagger, lengths):
    """Padding in the batch, lengths below, at and across multiples of block_size, staggered or not."""
    ours, hf = make_pair(name, stagger_local_blocks=stagger)
    batch = make_batch(TINY[name]["vocab_size"], lengths, 9, seed=len(lengths))
    with torch.no_grad():
        _compare_forward(ours, hf, batch)


@pytest.mark.parametrize("name", list(TINY))
def test_gradients_match_transformers(name):
    ours, hf = make_pair(name, seed=1)
    batch = make_batch(TINY[name]["vocab_size"], [45, 29], 7, seed=3)
    _compare_forward(ours, hf, batch)[0].loss.backward()
    hf(**batch).loss.backward()
    hf_params = dict(hf.named_parameters())
    for param_name, param in ours.named_parameters():
        torch.testing.assert_close(param.grad, hf_params[param_name].grad, atol=1e-5, rtol=1e-4,
                                   msg=f"gradient of {param_name}")
    assert len(list(ours.parameters())) == len(hf_params)


def test_decoder_attention_mask_matches_transformers():
    ours, hf = make_pair("relu", seed=2)
    batch = make_batch(300, [40, 21], 10, seed=5)
    decoder_input_ids = torch.randint(2, 300, (2, 10))
    decoder_mask = torch.ones_like(decoder_input_ids)
    decoder_mask[1, 6:] = 0
    del batch["labels"]
    with torch.no_grad():
        out = ours(**batch, decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_mask)
        ref = hf(**batch, decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_mask)
    assert (out.logits - ref.logits)[decoder_mask.bool()].abs().max() <= 1e-5


@pytest.mark.parametrize("stagger", [True, False])
def test_blocked_attention_equals_dense_reference(stagger, monkeypatch):
    ours, _ = make_pair("relu", seed=3, stagger_local_blocks=stagger)
    batch = make_batch(300, [61, 30, 5], 5, seed=7)
    with torch.no_grad():
        blocked = ours(**batch)
        monkeypatch.setattr(PegasusXGlobalLocalAttention, "implementation", "dense")
        dense = ours(**batch)
    torch.testing.assert_close(blocked.encoder_last_hidden_state, dense.encoder_last_hidden_state,
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(blocked.logits, dense.logits, atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_real_tokens():
    ours, _ = make_pair("relu", seed=4)
    ids = torch.randint(2, 300, (1, 37))
    padded = torch.cat([ids, torch.zeros(1, 30, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(1, 37), torch.zeros(1, 30)], 1).long()
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(ids), ours.encode(padded, mask)[:, :37], atol=1e-5, rtol=1e-5)


def test_global_attention_mask_is_refused():
    ours, _ = make_pair("relu")
    batch = make_batch(300, [20, 10], 4)
    glob = torch.zeros_like(batch["input_ids"])
    with pytest.raises(ValueError, match="PEGASUS-X takes no global_attention_mask"):
        ours(**batch, global_attention_mask=glob)
    with pytest.raises(ValueError, match="PEGASUS-X takes no global_attention_mask"):
        ours.generate(batch["input_ids"], batch["attention_mask"], global_attention_mask=glob, max_new_tokens=3)
    with torch.no_grad():
        ours(**batch, global_attention_mask=None)


def test_gradient_checkpointing_gives_identical_gradients():
    torch.manual_seed(0)
    config = PegasusXConfig(**TINY["relu"], dropout=0.1, attention_dropout=0.1, activation_dropout=0.1)
    model = PegasusXForConditionalGeneration(config).train()
    batch = make_batch(300, [50, 33], 8, seed=1)

    def grads():
        model.zero_grad()
        torch.manual_seed(123)
        model(**batch).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    model.gradient_checkpointing_enable()
    recomputed = grads()
    model.gradient_checkpointing_disable()
    for name, grad in plain.items():
        torch.testing.assert_close(recomputed[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_bf16_autocast_forward_and_backward():
    ours, _ = make_pair("relu", seed=5)
    batch = make_batch(300, [70, 41], 12, seed=1)
    with torch.no_grad():
        reference = ours(**batch).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = ours(**batch).loss
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert abs(loss.item() - reference.item()) < 0.05
    assert all(torch.isfinite(p.grad).all() for p in ours.parameters() if p.grad is not None)


def test_bf16_weights_generate():
    """Positions are computed in the weights' dtype, as transformers does; the outputs are valid ids."""
    ours, _ = make_pair("relu", seed=5)
    batch = make_batch(300, [70, 41], 1, seed=2)
    bf16 = ours.to(torch.bfloat16)
    for num_beams in (1, 3):
        out = bf16.generate(batch["input_ids"], batch["attention_mask"], max_length=10, num_beams=num_beams)
        assert out.dtype == torch.long and out.shape[0] == 2 and 2 <= out.shape[1] <= 10
        assert (out[:, 0] == START).all() and 0 <= out.min() and out.max() < 300


def test_encoder_layers_compile_without_graph_breaks():
    """No host synchronisation inside the attention: a staggered encoder layer traces as one graph."""
    ours, _ = make_pair("relu", seed=6)
    layer = ours.model.encoder.layers[1]
    assert layer.staggered
    tokens, globals_ = torch.randn(2, 48, 64), torch.randn(2, 5, 64)
    key_ok = torch.arange(48)[None] < torch.tensor([[48], [30]])
    compiled = torch.compile(layer, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(tokens, globals_, key_ok), layer(tokens, globals_, key_ok))


# --- generation ------------------------------------------------------------------------------------

# id -> (config, EOS bias, generate() arguments). EOS biases are picked so that outputs end at different lengths.
GENERATION_CASES = {
    "greedy": ("relu", {}),
    "greedy-gelu": ("gelu", {}),
    "greedy-max_new_tokens=12": ("relu", dict(max_new_tokens=12)),
    "beam4": ("relu", dict(num_beams=4)),
    "beam4-gelu": ("gelu", dict(num_beams=4)),
    "beam4-min_length=10": ("relu", dict(num_beams=4, min_length=10)),
    "beam4-length_penalty=2.0": ("relu", dict(num_beams=4, length_penalty=2.0)),
    "beam4-length_penalty=-1.0": ("gelu", dict(num_beams=4, length_penalty=-1.0)),
    "beam4-no_repeat_ngram=2": ("relu", dict(num_beams=4, no_repeat_ngram_size=2)),
    "greedy-no_repeat_ngram=2": ("gelu", dict(no_repeat_ngram_size=2)),
    "beam4-early_stopping=True": ("relu", dict(num_beams=4, early_stopping=True)),
    "beam4-early_stopping=never": ("gelu", dict(num_beams=4, early_stopping="never")),
    "beam4-num_return_sequences=2": ("relu", dict(num_beams=4, num_return_sequences=2)),
}
EOS_BIAS = {"relu": 3.0, "gelu": 2.0}


@functools.cache
def _generation_pair(name: str):
    return make_pair(name, seed=7, eos_bias=EOS_BIAS[name], decoder_gain=3.0, init_std=0.2)


def _inputs(name: str) -> dict:
    batch = make_batch(TINY[name]["vocab_size"], [53, 20, 37], 1, seed=11)
    del batch["labels"]
    return batch


@pytest.mark.parametrize("case", list(GENERATION_CASES))
def test_generate_matches_transformers(case):
    name, kwargs = GENERATION_CASES[case]
    if "max_new_tokens" not in kwargs:
        kwargs = {**kwargs, "max_length": 16}
    ours, hf = _generation_pair(name)
    inputs = _inputs(name)
    out = ours.generate(**inputs, **kwargs)
    ref = hf.generate(**inputs, **kwargs, do_sample=False)
    assert out.shape == ref.shape and torch.equal(out, ref), f"\nours:\n{out}\ntransformers:\n{ref}"
    assert (out[:, 0] == START).all()


def test_generation_ends_at_different_lengths():
    """The EOS bias makes the generation cases exercise finished hypotheses and padding after EOS."""
    ours, _ = _generation_pair("relu")
    out = ours.generate(**_inputs("relu"), max_length=16, num_beams=4, num_return_sequences=2)
    assert torch.isin(out[:, 1:-1], torch.tensor(EOS)).any(), out


def test_cached_decoding_equals_full_decoding():
    ours, hf = make_pair("relu", seed=9)
    inputs = _inputs("relu")
    decoder_ids = torch.randint(2, 300, (3, 7))
    with torch.no_grad():
        encoded = ours.encode(**inputs)
        full = ours.decode(decoder_ids, encoded, inputs["attention_mask"])
        cache = ours.new_cache(encoded)
        steps = [ours.decode(decoder_ids[:, t:t + 1], None, inputs["attention_mask"], cache=cache) for t in range(7)]
        ref = hf(**inputs, decoder_input_ids=decoder_ids).logits
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    assert (full - ref).abs().max() <= 1e-5


# --- checkpoints ------------------------------------------------------------------------------------

def test_checkpoints_both_ways(tmp_path):
    ours, hf = make_pair("relu", seed=8)
    batch = make_batch(300, [45, 30], 8, seed=1)
    hf.save_pretrained(tmp_path / "hf")
    loaded = PegasusXForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    shared = loaded.model.shared.weight
    assert loaded.lm_head.weight is shared and loaded.model.encoder.embed_tokens.weight is shared
    assert loaded.model.decoder.embed_tokens.weight is shared and shared.requires_grad
    with torch.no_grad():
        _compare_forward(loaded, hf, batch)
    assert loaded.config.num_global_tokens == 5 and loaded.config.extra["forced_eos_token_id"] == EOS

    ours.save_pretrained(tmp_path / "ours")
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert config["model_type"] == "pegasus_x" and config["architectures"] == ["PegasusXForConditionalGeneration"]
    back, info = transformers.PegasusXForConditionalGeneration.from_pretrained(tmp_path / "ours",
                                                                               output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert back.lm_head.weight.data_ptr() == back.model.shared.weight.data_ptr()
    with torch.no_grad():
        _compare_forward(ours, back.eval(), batch, atol=1e-6)
    assert PegasusXConfig.from_json_file(tmp_path / "ours" / "config.json").to_dict() == ours.config.to_dict()


# --- config ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny", "pegasus-x-base", "google/pegasus-x-large"])
def test_named_sizes_have_transformers_parameter_counts(name):
    config = PegasusXConfig.from_name(name)
    with torch.device("meta"):
        ours = PegasusXForConditionalGeneration(config)
        hf = transformers.PegasusXForConditionalGeneration(transformers.PegasusXConfig(**config.to_dict()))
    assert ours.num_parameters() == sum(p.numel() for p in hf.parameters())


def test_named_sizes_are_the_released_checkpoints():
    large = PegasusXConfig.from_name("pegasus-x-large")
    assert (large.d_model, large.encoder_layers, large.decoder_layers, large.encoder_attention_heads,
            large.encoder_ffn_dim) == (1024, 16, 16, 16, 4096)
    base = PegasusXConfig.from_name("pegasus-x-base", dropout=0.0)
    assert (base.d_model, base.encoder_layers, base.encoder_attention_heads, base.encoder_ffn_dim, base.dropout) == (
        768, 12, 12, 3072, 0.0)
    for config in (base, large):
        assert (config.block_size, config.num_global_tokens, config.stagger_local_blocks, config.activation_function,
                config.scale_embedding, config.vocab_size) == (512, 128, True, "relu", True, 96103)


@pytest.mark.parametrize("overrides, message", [
    (dict(block_size=0), "PegasusXConfig.block_size=0 is invalid: it must be a positive integer"),
    (dict(block_size=7), "block_size=7 is invalid with stagger_local_blocks=true"),
    (dict(num_global_tokens=0), "PegasusXConfig.num_global_tokens=0 is invalid"),
    (dict(d_model=66, encoder_attention_heads=3, decoder_attention_heads=3, block_size=8), None),
    (dict(d_model=63), "PegasusXConfig.d_model=63 is invalid: it must be even"),
    (dict(encoder_attention_heads=5), "encoder_attention_heads=5 does not divide d_model=64"),
    (dict(activation_function="mish"), "activation_function='mish' is not supported"),
    (dict(dropout=1.0), "PegasusXConfig.dropout=1.0 is invalid"),
    (dict(eos_token_id=300), "PegasusXConfig.eos_token_id=300 is invalid: it must be a token id in [0, 300)"),
])
def test_config_errors_name_field_value_and_fix(overrides, message):
    kwargs = {**TINY["relu"], **overrides}
    if message is None:
        PegasusXConfig(**kwargs)
        return
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        PegasusXConfig(**kwargs)


def test_config_reads_transformers_config_json(tmp_path):
    hf_config = transformers.PegasusXConfig(**TINY["gelu"])
    hf_config.save_pretrained(tmp_path)
    config = PegasusXConfig.from_json_file(tmp_path / "config.json")
    assert all(getattr(config, k) == v for k, v in TINY["gelu"].items())
    with pytest.raises(ValueError, match="only PEGASUS-X checkpoints"):
        PegasusXConfig.from_dict({"model_type": "led"})
    with pytest.raises(ValueError, match="Unknown PEGASUS-X size 'huge'"):
        PegasusXConfig.from_name("huge")
