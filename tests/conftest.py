"""Shared fixtures: tiny LED configurations and a `transformers` reference model on identical weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from led import LEDConfig, LEDForConditionalGeneration

# Three shapes exercised by the parity tests: a uniform window, one window per layer, and a different
# activation/head layout. Every window divides the largest, as `transformers` requires.
TINY_CONFIGS = {
    "uniform": dict(vocab_size=320, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                    decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, attention_window=16,
                    max_encoder_position_embeddings=256, max_decoder_position_embeddings=64),
    "per_layer": dict(vocab_size=320, d_model=48, encoder_layers=3, decoder_layers=1, encoder_attention_heads=3,
                      decoder_attention_heads=2, encoder_ffn_dim=96, decoder_ffn_dim=80, attention_window=[8, 32, 16],
                      max_encoder_position_embeddings=256, max_decoder_position_embeddings=64),
    "gelu_new": dict(vocab_size=200, d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
                     decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, attention_window=4,
                     activation_function="gelu_new", max_encoder_position_embeddings=128,
                     max_decoder_position_embeddings=32),
}


def make_pair(name: str, seed: int = 0, **overrides):
    """(ours, transformers') LED in eval mode with identical random weights, random biases and LayerNorm
    parameters (`transformers` initialises them to 0 and 1, where a dropped or misplaced bias would not show)
    and a random logits bias."""
    transformers = pytest.importorskip("transformers")
    kwargs = {**TINY_CONFIGS[name], "dropout": 0.0, **overrides}
    torch.manual_seed(seed)
    hf = transformers.LEDForConditionalGeneration(transformers.LEDConfig(**kwargs)).eval()
    with torch.no_grad():
        hf.final_logits_bias.normal_(0, 0.5)
    perturb_vectors(hf)
    ours = LEDForConditionalGeneration(LEDConfig(**kwargs)).eval()
    result = ours.load_state_dict(hf.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return ours, hf


def save_tiny_led(directory: Path, tokenizer_dir: str | Path, vocab_size: int) -> Path:
    """A random 1+1-layer LED (d_model 16, window 8, 64 encoder positions) with the tokenizer in `tokenizer_dir`,
    saved in Hugging Face format to `directory`: a model directory for model.pretrained= and evaluate.py ckpt_path=."""
    from led.models.tokenizer import LEDTokenizer

    config = LEDConfig(vocab_size=vocab_size, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                       decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, attention_window=8,
                       max_encoder_position_embeddings=64, max_decoder_position_embeddings=16)
    LEDForConditionalGeneration(config).save_pretrained(directory)
    LEDTokenizer.from_pretrained(tokenizer_dir).save_pretrained(directory)
    return directory


def perturb_vectors(module: torch.nn.Module) -> None:
    """Adds N(0, 0.1) noise to every 1-D parameter (biases, LayerNorm weights and biases): initialised to 0 and
    1, they would hide a dropped or misplaced bias from any comparison."""
    with torch.no_grad():
        for param in module.parameters():
            if param.dim() == 1:
                param.add_(0.1 * torch.randn_like(param))


def make_batch(vocab_size: int, lengths: list[int], target_length: int, globals_: str, seed: int = 0):
    """A right-padded batch. globals_: 'none', 'first' or 'random' (first plus several random positions)."""
    gen = torch.Generator().manual_seed(seed)
    batch, length = len(lengths), max(lengths)
    input_ids = torch.randint(4, vocab_size, (batch, length), generator=gen)
    input_ids[:, 0] = 0
    attention_mask = (torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]).long()
    input_ids = input_ids.masked_fill(attention_mask == 0, 1)
    global_mask = torch.zeros(batch, length, dtype=torch.long)
    if globals_ in ("first", "random"):
        global_mask[:, 0] = 1
    if globals_ == "random":
        for row, n in enumerate(lengths):
            count = int(torch.randint(1, 4, (1,), generator=gen))
            global_mask[row, torch.randint(0, n, (count,), generator=gen)] = 1
    labels = torch.randint(4, vocab_size, (batch, target_length), generator=gen)
    labels[0, target_length // 2:] = -100
    return dict(input_ids=input_ids, attention_mask=attention_mask,
                global_attention_mask=None if globals_ == "none" else global_mask, labels=labels)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # The test models are tiny: thread start-up and contention cost more than the parallel matmuls save
    # (up to 20x slower with 2 threads on a shared 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
