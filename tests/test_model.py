"""Our LED against `transformers`' LED on identical weights: logits, loss, encoder output, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_CONFIGS, make_batch, make_pair, perturb_vectors

from led import LEDConfig, LEDForConditionalGeneration, shift_tokens_right
from led.models.led.attention import (
    EncoderMasks,
    LongformerSelfAttention,
    _fold_global_projections,
)


def _compare_forward(ours, hf, batch):
    out, ref = ours(**batch), hf(**batch)
    real = batch["attention_mask"].bool()
    enc_diff = (out.encoder_last_hidden_state - ref.encoder_last_hidden_state)[real].abs().max()
    assert enc_diff <= 1e-4
    assert out.logits.shape == ref.logits.shape
    assert (out.logits - ref.logits).abs().max() <= 1e-4
    assert abs(out.loss.item() - ref.loss.item()) <= 1e-5
    return out, ref


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
@pytest.mark.parametrize("globals_", ["none", "first", "random"])
def test_forward_matches_transformers(name, globals_):
    ours, hf = make_pair(name)
    window = max(LEDConfig(**TINY_CONFIGS[name]).attention_windows)
    # Lengths that are not multiples of the window, with padding inside the batch.
    lengths = [3 * window + 5, window + 1, 2 * window - 3]
    batch = make_batch(TINY_CONFIGS[name]["vocab_size"], lengths, 9, globals_, seed=len(name))
    with torch.no_grad():
        _compare_forward(ours, hf, batch)


@pytest.mark.parametrize("name", ["uniform", "per_layer"])
def test_gradients_match_transformers(name):
    ours, hf = make_pair(name, seed=1)
    window = max(LEDConfig(**TINY_CONFIGS[name]).attention_windows)
    batch = make_batch(TINY_CONFIGS[name]["vocab_size"], [2 * window + 7, window + 2], 7, "random", seed=3)
    _compare_forward(ours, hf, batch)[0].loss.backward()
    hf(**batch).loss.backward()
    hf_params = dict(hf.named_parameters())
    checked = 0
    for name_, param in ours.named_parameters():
        ref = hf_params[name_].grad
        torch.testing.assert_close(param.grad, ref, atol=1e-5, rtol=1e-4, msg=f"gradient of {name_}")
        checked += 1
    assert checked == len(hf_params)


def test_decoder_attention_mask_matches_transformers():
    ours, hf = make_pair("uniform", seed=2)
    batch = make_batch(320, [40, 21], 10, "first", seed=5)
    decoder_input_ids = shift_tokens_right(batch.pop("labels"), 1, 2)
    decoder_mask = torch.ones_like(decoder_input_ids)
    decoder_mask[1, 6:] = 0
    with torch.no_grad():
        out = ours(**batch, decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_mask)
        ref = hf(**batch, decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_mask)
    keep = decoder_mask.bool()
    assert (out.logits - ref.logits)[keep].abs().max() <= 1e-4


@pytest.mark.parametrize("windows", [[4, 6], [10, 2], [8, 8]])
@pytest.mark.parametrize("globals_", ["none", "random"])
def test_blocked_attention_equals_dense_reference(windows, globals_, monkeypatch):
    """Windows that do not divide each other (which `transformers` rejects) against the L x L reference."""
    torch.manual_seed(0)
    config = LEDConfig.from_name("tiny", vocab_size=100, d_model=32, encoder_layers=2, attention_window=windows,
                                 encoder_attention_heads=2, dropout=0.0)
    model = LEDForConditionalGeneration(config).eval()
    batch = make_batch(100, [37, 29, 12], 5, globals_, seed=7)
    with torch.no_grad():
        blocked = model(**batch)
        monkeypatch.setattr(LongformerSelfAttention, "implementation", "dense")
        dense = model(**batch)
    real = batch["attention_mask"].bool()
    diff = (blocked.encoder_last_hidden_state - dense.encoder_last_hidden_state)[real].abs().max()
    assert diff <= 1e-5
    torch.testing.assert_close(blocked.logits, dense.logits, atol=1e-5, rtol=1e-5)


def test_window_padding_does_not_change_real_tokens():
    """Output at real positions is independent of how much padding follows."""
    torch.manual_seed(0)
    model = LEDForConditionalGeneration(LEDConfig.from_name("tiny", vocab_size=100, dropout=0.0)).eval()
    ids = torch.randint(4, 100, (1, 70))
    padded = torch.cat([ids, torch.ones(1, 60, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(1, 70), torch.zeros(1, 60)], 1).long()
    with torch.no_grad():
        a = model.encode(ids)
        b = model.encode(padded, mask)
    assert b.shape == (1, 130, 128)
    torch.testing.assert_close(a, b[:, :70], atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_identical_gradients():
    torch.manual_seed(0)
    config = LEDConfig(**TINY_CONFIGS["per_layer"], dropout=0.1, attention_dropout=0.1, activation_dropout=0.1)
    model = LEDForConditionalGeneration(config).train()
    batch = make_batch(320, [70, 50], 8, "random", seed=1)

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


def test_cached_decoding_equals_full_decoding():
    ours, _ = make_pair("uniform", seed=4)
    batch = make_batch(320, [40, 33], 6, "first", seed=2)
    decoder_ids = torch.randint(4, 320, (2, 6))
    with torch.no_grad():
        encoded = ours.encode(batch["input_ids"], batch["attention_mask"], batch["global_attention_mask"])
        full = ours.decode(decoder_ids, encoded, batch["attention_mask"])
        cache = ours.new_cache(encoded)
        steps = [ours.decode(decoder_ids[:, :2], None, batch["attention_mask"], cache=cache)]
        steps += [ours.decode(decoder_ids[:, t:t + 1], None, batch["attention_mask"], cache=cache)
                  for t in range(2, 6)]
    assert cache.length == 6
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_cache_reorder_and_repeat():
    ours, _ = make_pair("uniform", seed=4)
    encoded = torch.randn(2, 20, 64)
    cache = ours.new_cache(encoded)
    cache.repeat_interleave(3)
    ours.decode(torch.tensor([[2]] * 6), None, cache=cache)
    before = cache.self_kv[0][0].clone()
    index = torch.tensor([2, 2, 0, 5, 3, 3])
    cache.reorder(index)
    assert cache.cross[0][0].shape[0] == 6
    torch.testing.assert_close(cache.self_kv[0][0], before[index])


def test_shift_tokens_right():
    labels = torch.tensor([[5, 6, 7, -100], [8, -100, -100, -100]])
    expected = torch.tensor([[2, 5, 6, 7], [2, 8, 1, 1]])
    assert torch.equal(shift_tokens_right(labels, pad_token_id=1, decoder_start_token_id=2), expected)


def test_too_long_inputs_are_rejected_with_the_limit():
    model = LEDForConditionalGeneration(LEDConfig.from_name("tiny", vocab_size=50, max_encoder_position_embeddings=64,
                                                            max_decoder_position_embeddings=8))
    with pytest.raises(ValueError, match="65 tokens is longer than the encoder's 64 positions"):
        model.encode(torch.ones(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="decoder's 8 positions"):
        model(input_ids=torch.ones(1, 10, dtype=torch.long), labels=torch.ones(1, 9, dtype=torch.long))


def test_bf16_autocast_forward_and_backward():
    torch.manual_seed(0)
    model = LEDForConditionalGeneration(LEDConfig.from_name("tiny", vocab_size=100, dropout=0.0))
    batch = make_batch(100, [150, 90], 12, "random", seed=1)
    with torch.no_grad():
        reference = model(**batch).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch).loss
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert abs(loss.item() - reference.item()) < 0.05
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_encoder_layers_compile_without_graph_breaks():
    """No host synchronisation inside the attention: a whole encoder layer traces as one graph."""
    torch.manual_seed(0)
    model = LEDForConditionalGeneration(LEDConfig.from_name("tiny", vocab_size=100, dropout=0.0)).eval()
    batch = make_batch(100, [150, 90], 4, "random", seed=2)
    from led.models.led.attention import EncoderMasks

    masks = EncoderMasks.build(batch["attention_mask"], batch["global_attention_mask"])
    hidden = torch.randn(2, 150, 128)
    layer = model.led.encoder.layers[0]
    compiled = torch.compile(layer, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(hidden, masks), layer(hidden, masks))


@pytest.mark.parametrize("num_global", [1, 3])
def test_folded_global_rows_equal_projected_ones(num_global):
    """Without gradients the global rows attend to the layer input through folded key/value projections
    (led.models.led.attention._folded_global_attention); they must equal the projected ones, padding and rows with
    fewer global tokens included, and be what inference actually runs."""
    torch.manual_seed(0)
    config = LEDConfig.from_name("tiny", vocab_size=100, d_model=64, encoder_layers=2, encoder_attention_heads=4,
                                 attention_window=8, dropout=0.0)
    model = LEDForConditionalGeneration(config).eval()
    perturb_vectors(model)
    batch = make_batch(100, [37, 29, 12], 5, "none", seed=7)
    glob = torch.zeros_like(batch["input_ids"])
    glob[0, :num_global] = 1
    glob[1, 3] = 1  # one global token only, not the first
    attention = model.led.encoder.layers[0].self_attn.longformer_self_attn
    hidden = torch.randn(3, 40, 64)
    masks = EncoderMasks.build(F.pad(batch["attention_mask"], (0, 3)), F.pad(glob, (0, 3)))
    with torch.no_grad():
        folded = attention(hidden, masks)
    projected = attention(hidden.requires_grad_(), masks).detach()  # the training path
    assert _fold_global_projections(hidden.detach(), 4, masks.num_global, 0.0)
    assert not _fold_global_projections(hidden, 4, masks.num_global, 0.0)
    torch.testing.assert_close(folded, projected, atol=1e-5, rtol=1e-5)
    assert not torch.equal(folded, projected)  # two computations, not one
    with torch.no_grad():
        encoded = model.encode(batch["input_ids"], batch["attention_mask"], glob)
    reference = model.encode(batch["input_ids"], batch["attention_mask"], glob).detach()
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(encoded[real], reference[real], atol=1e-5, rtol=1e-5)
