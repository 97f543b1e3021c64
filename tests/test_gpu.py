"""CUDA checks, run on a GPU machine with `python -m pytest -m gpu` (the default run deselects them): generation
against `transformers` on the device, bf16 generation, and the encoder's folded global rows at a real width."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_batch, make_pair, perturb_vectors

from led.models.led.attention import EncoderMasks, LongformerSelfAttention

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _cuda_inputs(seed: int = 0) -> dict:
    batch = make_batch(320, [40, 23, 31], 4, "random", seed=seed)
    batch.pop("labels")
    return {name: tensor.cuda() for name, tensor in batch.items()}


@pytest.mark.parametrize("num_beams", [1, 4])
def test_cuda_generation_matches_transformers(num_beams):
    ours, hf = make_pair("uniform", init_std=0.2)
    ours, hf = ours.cuda(), hf.cuda()
    inputs = _cuda_inputs()
    with torch.no_grad():
        out = ours.generate(**inputs, num_beams=num_beams, max_length=16, no_repeat_ngram_size=3)
        ref = hf.generate(**inputs, num_beams=num_beams, max_length=16, no_repeat_ngram_size=3, do_sample=False)
    assert out.device.type == "cuda"
    assert torch.equal(out.cpu(), ref.cpu())


def test_cuda_bf16_generation():
    """bf16 weights, and fp32 weights under bf16 autocast: valid sequences of the requested shape."""
    ours, _ = make_pair("uniform", init_std=0.2)
    inputs = _cuda_inputs(seed=1)
    bf16 = copy.deepcopy(ours).cuda().to(torch.bfloat16)
    fp32 = ours.cuda()
    with torch.no_grad():
        outputs = [bf16.generate(**inputs, max_length=12), bf16.generate(**inputs, max_length=12, num_beams=3)]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            outputs += [fp32.generate(**inputs, max_length=12), fp32.generate(**inputs, max_length=12, num_beams=3)]
    for out in outputs:
        assert out.shape == (3, 12) and out.device.type == "cuda"
        assert ((out >= 0) & (out < 320)).all()


def test_cuda_folded_global_rows_at_led_base_width():
    """led-base's width (768, 12 heads) puts the folded global rows' SDPA (one head of width 768) outside the
    flash kernel; whatever kernel runs must give the projected rows' result, in fp32 and under bf16 autocast."""
    torch.manual_seed(0)
    attention = LongformerSelfAttention(768, 12, window=64, dropout=0.0).cuda()
    perturb_vectors(attention)
    hidden = torch.randn(2, 300, 768, device="cuda")
    attention_mask = torch.ones(2, 300, dtype=torch.long, device="cuda")
    attention_mask[1, 250:] = 0
    global_mask = torch.zeros_like(attention_mask)
    global_mask[:, 0] = 1
    global_mask[0, 7] = 1
    masks = EncoderMasks.build(attention_mask, global_mask)
    for autocast in (False, True):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            with torch.no_grad():
                folded = attention(hidden, masks).float()
            projected = attention(hidden.clone().requires_grad_(), masks).detach().float()
        tolerance = 3e-2 if autocast else 1e-4
        torch.testing.assert_close(folded, projected, atol=tolerance, rtol=tolerance)
