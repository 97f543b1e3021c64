"""CUDA checks, run on a GPU machine with `python -m pytest -m gpu` (the default run deselects them). LED: generation
against `transformers` on the device, bf16 generation, and the encoder's folded global rows at a real width.
PEGASUS-X: forward, loss and every gradient against `transformers` on the device (fp32 and under bf16 autocast),
generation token for token, and training steps (the blocked attention's strided SDPA inputs take CUDA's kernels)."""

from __future__ import annotations

import copy

import pytest
import torch
import test_pegasus_x as px
from conftest import make_batch, make_pair, perturb_vectors

from led import PegasusXConfig, PegasusXForConditionalGeneration
from led.models.led.attention import EncoderMasks, LongformerSelfAttention
from led.models.pegasus_x.attention import PegasusXGlobalLocalAttention

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


# --- PEGASUS-X -------------------------------------------------------------------------------------------------

def _pegasus_x_cuda_pair(name: str = "relu", **overrides):
    ours, hf = px.make_pair(name, seed=1, **overrides)
    return ours.cuda(), hf.cuda()


def _pegasus_x_cuda_batch(name: str = "relu", seed: int = 3) -> dict:
    """Padded rows across several blocks (and, in staggered layers, across the shifted block borders)."""
    batch = px.make_batch(px.TINY[name]["vocab_size"], [45, 29, 16], 7, seed=seed)
    return {key: value.cuda() for key, value in batch.items()}


@pytest.fixture
def no_tf32():
    """Plain fp32 matmuls: TF32 would round the products to ~1e-3 and hide nothing but our tolerance."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = previous


@pytest.mark.parametrize("name", list(px.TINY))
@pytest.mark.parametrize("stagger", [True, False])
def test_cuda_pegasus_x_forward_and_gradients_match_transformers(name, stagger, no_tf32):
    ours, hf = _pegasus_x_cuda_pair(name, stagger_local_blocks=stagger)
    batch = _pegasus_x_cuda_batch(name)
    out, ref = ours(**batch), hf(**batch)
    real = batch["attention_mask"].bool()
    assert out.logits.device.type == "cuda"
    assert (out.encoder_last_hidden_state - ref.encoder_last_hidden_state)[real].abs().max() <= 1e-4
    assert (out.logits - ref.logits).abs().max() <= 1e-4
    assert abs(out.loss.item() - ref.loss.item()) <= 1e-5
    out.loss.backward()
    ref.loss.backward()
    hf_params = dict(hf.named_parameters())
    for param_name, param in ours.named_parameters():
        torch.testing.assert_close(param.grad, hf_params[param_name].grad, atol=1e-4, rtol=1e-3,
                                   msg=f"gradient of {param_name}")


def test_cuda_pegasus_x_bf16_autocast_matches_transformers(no_tf32):
    """Under bf16 autocast both run their matmuls in bf16 (with different kernels): losses agree to bf16's
    precision with each other and with fp32, and every gradient is finite and close to transformers' in norm."""
    ours, hf = _pegasus_x_cuda_pair("relu")
    batch = _pegasus_x_cuda_batch("relu")
    with torch.no_grad():
        reference = ours(**batch).loss.item()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, ref = ours(**batch), hf(**batch)
    assert out.loss.dtype == torch.float32
    assert abs(out.loss.item() - ref.loss.item()) < 0.05 and abs(out.loss.item() - reference) < 0.05
    torch.testing.assert_close(out.logits.float(), ref.logits.float(), atol=0.1, rtol=0.05)
    out.loss.backward()
    ref.loss.backward()
    hf_params = dict(hf.named_parameters())
    for param_name, param in ours.named_parameters():
        assert torch.isfinite(param.grad).all(), param_name
        theirs = hf_params[param_name].grad.norm()
        assert abs(param.grad.norm() - theirs) <= 0.1 * theirs + 1e-3, param_name


@pytest.mark.parametrize("stagger", [True, False])
def test_cuda_pegasus_x_blocked_attention_equals_dense_reference(stagger, monkeypatch, no_tf32):
    """CUDA's SDPA kernels on the strided (B * blocks, H, G + block, D) views give the dense reference's result."""
    ours, _ = _pegasus_x_cuda_pair("relu", stagger_local_blocks=stagger)
    batch = _pegasus_x_cuda_batch("relu", seed=7)
    with torch.no_grad():
        blocked = ours.encode(batch["input_ids"], batch["attention_mask"])
        monkeypatch.setattr(PegasusXGlobalLocalAttention, "implementation", "dense")
        dense = ours.encode(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(blocked, dense, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", ["greedy", "greedy-gelu", "beam4", "beam4-no_repeat_ngram=2",
                                  "beam4-num_return_sequences=2"])
def test_cuda_pegasus_x_generation_matches_transformers(case, no_tf32):
    name, kwargs = px.GENERATION_CASES[case]
    kwargs = {"max_length": 16, **kwargs}
    ours, hf = (model.cuda() for model in px.make_pair(name, seed=7, eos_bias=px.EOS_BIAS[name], decoder_gain=3.0,
                                                      init_std=0.2))
    inputs = {key: value.cuda() for key, value in px._inputs(name).items()}
    out = ours.generate(**inputs, **kwargs)
    ref = hf.generate(**inputs, **kwargs, do_sample=False)
    assert out.device.type == "cuda"
    assert out.shape == ref.shape and torch.equal(out.cpu(), ref.cpu()), f"\nours:\n{out}\ntransformers:\n{ref}"


@pytest.mark.parametrize("autocast", [False, True])
def test_cuda_pegasus_x_training_steps(autocast):
    """AdamW steps on the device (dropout on): finite gradients for every parameter, and the loss on the batch
    goes down."""
    torch.manual_seed(0)
    config = PegasusXConfig(**px.TINY["relu"], dropout=0.1, attention_dropout=0.1)
    model = PegasusXForConditionalGeneration(config).cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = _pegasus_x_cuda_batch("relu", seed=5)
    losses = []
    for _ in range(5):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            loss = model(**batch).loss
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
