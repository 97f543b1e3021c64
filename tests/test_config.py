"""LEDConfig: named sizes, validation messages, and config.json compatibility with `transformers`."""

from __future__ import annotations

import json

import pytest

from led import LEDConfig


def test_named_sizes():
    base = LEDConfig.from_name("led-base-16384")
    assert (base.d_model, base.encoder_layers, base.encoder_attention_heads, base.attention_windows) == (
        768, 6, 12, [1024] * 6)
    large = LEDConfig.from_name("allenai/led-large-16384")
    assert (large.d_model, large.decoder_layers, large.max_encoder_position_embeddings) == (1024, 12, 16384)
    tiny = LEDConfig.from_name("tiny", attention_window=[32, 64])
    assert tiny.attention_windows == [32, 64] and tiny.max_window == 64


@pytest.mark.parametrize("overrides, message", [
    (dict(attention_window=511), "attention_window=511 is invalid: every window must be a positive even integer"),
    (dict(attention_window=0), "positive even integer"),
    (dict(attention_window=[64, 64, 64]), "has 3 values [64, 64, 64] but the encoder has 2 layers"),
    (dict(encoder_attention_heads=5), "encoder_attention_heads=5 does not divide d_model=128"),
    (dict(activation_function="gelu2"), "activation_function='gelu2' is not supported: valid values are gelu"),
    (dict(dropout=1.5), "dropout=1.5 is invalid: it must be a probability in [0, 1)"),
    (dict(d_model=-8), "d_model=-8 is invalid: it must be a positive integer"),
    (dict(pad_token_id=70000), "pad_token_id=70000 is invalid: it must be a token id in [0, 50265)"),
])
def test_validation_names_field_value_and_fix(overrides, message):
    with pytest.raises(ValueError) as info:
        LEDConfig.from_name("tiny", **overrides)
    assert message in str(info.value)


def test_unknown_size_lists_valid_names():
    with pytest.raises(ValueError, match="valid names are tiny, led-base-16384, led-large-16384"):
        LEDConfig.from_name("led-huge")


def test_config_json_round_trip_with_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    ours = LEDConfig.from_name("tiny", vocab_size=500, attention_window=[16, 32], extra={"num_beams": 4})
    ours.save(tmp_path)
    hf = transformers.LEDConfig.from_pretrained(tmp_path)
    assert (hf.d_model, hf.encoder_layers, hf.attention_window, hf.vocab_size) == (128, 2, [16, 32], 500)
    hf_dir = tmp_path / "hf"
    hf.save_pretrained(hf_dir)
    back = LEDConfig.from_json_file(hf_dir / "config.json")
    for field in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_ffn_dim",
                  "max_encoder_position_embeddings", "pad_token_id", "decoder_start_token_id"):
        assert getattr(back, field) == getattr(ours, field), field
    assert back.attention_windows == [16, 32]


def test_unknown_keys_are_kept(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "led", "d_model": 64, "encoder_attention_heads": 4,
                                "decoder_attention_heads": 4, "encoder_layers": 1, "attention_window": [8],
                                "length_penalty": 2.0, "architectures": ["LEDForConditionalGeneration"]}))
    config = LEDConfig.from_json_file(path)
    assert config.extra["length_penalty"] == 2.0
    assert config.to_dict()["length_penalty"] == 2.0


def test_bad_config_file_names_file_and_problem(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "led", "d_model": 64,')
    with pytest.raises(ValueError, match=r"config.json cannot be read: it is not valid JSON \(.* at line 1 column"):
        LEDConfig.from_json_file(path)
    path.write_text('{"model_type": "bart"}')
    with pytest.raises(ValueError, match="model_type='bart': only LED checkpoints"):
        LEDConfig.from_json_file(path)
