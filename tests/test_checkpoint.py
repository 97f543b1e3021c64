"""Checkpoint round trips in both directions, every weight-file layout, and the error messages."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from conftest import make_batch, make_pair
from safetensors.torch import save_file

from led import LEDConfig, LEDForConditionalGeneration


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture
def pair():
    return make_pair("uniform", seed=5)


@pytest.fixture
def batch():
    return make_batch(320, [45, 30], 8, "first", seed=1)


def test_ours_to_transformers(tmp_path, pair, batch):
    transformers = pytest.importorskip("transformers")
    ours, hf = pair
    ours.save_pretrained(tmp_path)
    loaded, info = transformers.LEDForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    torch.testing.assert_close(_logits(loaded.eval(), batch), _logits(hf, batch), atol=1e-6, rtol=0)


def test_transformers_to_ours(tmp_path, pair, batch):
    ours, hf = pair
    hf.save_pretrained(tmp_path)
    loaded = LEDForConditionalGeneration.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(_logits(loaded, batch), _logits(hf, batch), atol=1e-4, rtol=0)
    # The tie survives loading: one matrix for the embeddings and the head.
    assert loaded.lm_head.weight.data_ptr() == loaded.led.shared.weight.data_ptr()
    assert loaded.led.encoder.embed_tokens.weight.data_ptr() == loaded.led.shared.weight.data_ptr()
    assert loaded.led.shared.weight.requires_grad


def test_pytorch_model_bin_and_sharded_safetensors(tmp_path, pair, batch):
    ours, _ = pair
    expected = _logits(ours, batch)
    state = {k: v.clone() for k, v in ours.state_dict().items()}
    bin_dir, shard_dir = tmp_path / "bin", tmp_path / "sharded"
    for d in (bin_dir, shard_dir):
        ours.config.save(d)
    torch.save(state, bin_dir / "pytorch_model.bin")
    torch.testing.assert_close(_logits(LEDForConditionalGeneration.from_pretrained(bin_dir), batch), expected)

    names = sorted(k for k in state if k != "lm_head.weight")  # tied copy left out, like transformers does
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, keys in halves.items():
        save_file({k: state[k].contiguous() for k in keys}, shard_dir / file)
    index = {"weight_map": {k: f for f, keys in halves.items() for k in keys}}
    (shard_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    torch.testing.assert_close(_logits(LEDForConditionalGeneration.from_pretrained(shard_dir), batch), expected)


def test_base_model_keys_and_missing_bias_are_restored(tmp_path, pair, batch):
    """An LEDModel checkpoint (no `led.` prefix, no head, no final_logits_bias) loads with a tied head."""
    ours, _ = pair
    with torch.no_grad():
        ours.final_logits_bias.zero_()
    state = {k.removeprefix("led."): v.contiguous() for k, v in ours.state_dict().items()
             if k.startswith("led.") and "embed_tokens" not in k}
    ours.config.save(tmp_path)
    save_file(state, tmp_path / "model.safetensors")
    loaded = LEDForConditionalGeneration.from_pretrained(tmp_path)
    torch.testing.assert_close(_logits(loaded, batch), _logits(ours, batch))


def test_mismatched_checkpoint_lists_every_problem(tmp_path, pair):
    ours, _ = pair
    ours.save_pretrained(tmp_path)
    bigger = LEDConfig.from_dict({**ours.config.to_dict(), "d_model": 128, "encoder_ffn_dim": 64})
    bigger.save(tmp_path)  # config.json from another size than the weights
    with pytest.raises(ValueError) as info:
        LEDForConditionalGeneration.from_pretrained(tmp_path)
    message = str(info.value)
    assert "with the wrong shape" in message and "led.decoder.embed_positions.weight: file (64, 64) vs model (64, 128)" in message
    assert "more." in message
    assert "Is config.json from the same checkpoint as the weights?" in message

    state = {k: v.clone() for k, v in ours.state_dict().items() if k not in LEDForConditionalGeneration.tied_keys[1:]}
    state["led.extra.weight"] = torch.zeros(1)
    del state["led.decoder.layers.0.fc1.bias"]
    ours.config.save(tmp_path)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError) as info:
        LEDForConditionalGeneration.from_pretrained(tmp_path)
    assert "1 missing: led.decoder.layers.0.fc1.bias" in str(info.value)
    assert "1 unexpected: led.extra.weight" in str(info.value)


def test_missing_files_are_explained(tmp_path):
    with pytest.raises(ValueError, match="has no config.json"):
        LEDForConditionalGeneration.from_pretrained(tmp_path)
    LEDConfig.from_name("tiny", vocab_size=50).save(tmp_path)
    with pytest.raises(ValueError, match="holds no weights: expected one of model.safetensors"):
        LEDForConditionalGeneration.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        LEDForConditionalGeneration.from_pretrained(tmp_path / "nope")


class _Exploit:
    def __reduce__(self):
        return (print, ("unpickled arbitrary code",))


def test_pickled_objects_are_never_executed(tmp_path, capsys):
    LEDConfig.from_name("tiny", vocab_size=50).save(tmp_path)
    with open(tmp_path / "pytorch_model.bin", "wb") as f:
        pickle.dump({"led.shared.weight": _Exploit()}, f)
    with pytest.raises(ValueError, match="weights_only=True"):
        LEDForConditionalGeneration.from_pretrained(tmp_path)
    assert "unpickled arbitrary code" not in capsys.readouterr().out


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path, pair):
    ours, _ = pair
    ours.save_pretrained(tmp_path)
    ours.save_pretrained(tmp_path)  # overwriting an existing checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
