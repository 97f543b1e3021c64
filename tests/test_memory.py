"""Memory planning (led/memory/): the account traced on the meta device against what autograd keeps and against
measured CPU peaks, for both families; the strategies, the planner and the command line."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from led.memory import (
    CUDA_RESERVED_GIB,
    FRAGMENTATION_MARGIN,
    count_parameters,
    estimate_peak_memory,
    largest_batch_size,
    optimizer_class,
    plan,
)
from led.memory.__main__ import main
from led.memory.account import GIB
from led.models.families import config_from_dict, family, family_of_size

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = dict(vocab_size=1000, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
              decoder_attention_heads=2, encoder_ffn_dim=256, decoder_ffn_dim=128, dropout=0.1)
SMALL = {"led": dict(COMMON, attention_window=128, max_encoder_position_embeddings=2048,
                     max_decoder_position_embeddings=128),
         "pegasus_x": dict(COMMON, block_size=64, num_global_tokens=16)}
FAMILIES = list(SMALL)


def _config(model_type: str, **overrides):
    return family(model_type).config_class(**{**SMALL[model_type], **overrides})


def _bench():
    spec = importlib.util.spec_from_file_location("bench_memory", os.path.join(ROOT, "bench", "bench_memory.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("model_type", FAMILIES)
def test_parameter_count_matches_the_model(model_type):
    config = _config(model_type)
    assert count_parameters(config) == family(model_type).model_class(config).num_parameters()


@pytest.mark.parametrize("model_type, case", [
    ("led", dict()),
    ("led", dict(num_global=0)),
    ("led", dict(num_global=3, batch=2, length=500)),  # the encoder pads 500 to 512; several rows: copies
    ("led", dict(attention_dropout=0.1)),  # CPU SDPA falls back to its math path
    ("led", dict(attention_window=[128, 64])),
    ("led", dict(precision="bf16-true")),
    ("led", dict(precision="bf16-mixed")),
    ("pegasus_x", dict()),
    ("pegasus_x", dict(batch=2, length=500)),  # padded to whole blocks; staggered odd layer
    ("pegasus_x", dict(attention_dropout=0.1)),
    ("pegasus_x", dict(precision="bf16-mixed")),
], ids=lambda case: ",".join(f"{k}={v}" for k, v in case.items()) if isinstance(case, dict) else case)
def test_activations_match_what_autograd_keeps(model_type, case):
    """What the meta-device trace says autograd keeps, against a real CPU forward pass's graph."""
    case = dict(case)
    batch, length, num_global = case.pop("batch", 1), case.pop("length", 512), case.pop("num_global", 1)
    precision = case.pop("precision", "32")
    config = _config(model_type, **case)
    torch.manual_seed(0)
    model = family(model_type).model_class(config).train()
    if precision == "bf16-true":
        model = model.to(torch.bfloat16)
    input_ids = torch.randint(4, config.vocab_size, (batch, length))
    inputs = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=input_ids[:, :64])
    if model.takes_global_attention_mask and num_global:
        inputs["global_attention_mask"] = (torch.arange(length) < num_global).long().expand(batch, -1)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed", cache_enabled=False):
        loss = model(**inputs).loss
    kept = sum(_bench().autograd_saved_bytes(loss, model.parameters()).values())
    estimate = estimate_peak_memory(config, batch, length, 64, precision=precision, num_global=num_global,
                                    device="cpu")
    assert estimate.kept == pytest.approx(kept, rel=0.01)


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="measures Linux's VmHWM")
@pytest.mark.parametrize("model_type", FAMILIES)
def test_estimate_within_10_percent_of_measured_cpu_peak(model_type):
    """One training step in a fresh process (VmHWM over the step above the RSS before the model was built, glibc
    returning freed memory at once: bench/bench_memory.py's `measure`), with and without gradient checkpointing."""
    shape = dict(d_model=128, encoder_ffn_dim=512, decoder_ffn_dim=512)
    if model_type == "led":
        shape["max_encoder_position_embeddings"] = 4096
    config = _config(model_type, **shape).to_dict()
    runs = [dict(config=config, batch_size=2, input_length=4096, target_length=128, checkpointing=checkpointing)
            for checkpointing in (False, True)]
    results = _bench().measure_in_subprocess(runs, timeout=300)
    for run, result in zip(runs, results):
        estimate = estimate_peak_memory(_config(model_type, **shape), 2, 4096, 128,
                                        gradient_checkpointing=run["checkpointing"], device="cpu")
        assert estimate.activations > 0.5 * estimate.total or run["checkpointing"]
        assert 0.9 <= estimate.total / result["peak"] <= 1.1, (run["checkpointing"], estimate.total, result)


# bench/bench_memory.py --device cuda on an H200 (torch 2.11): measured peak MB of one step above the model-less
# baseline, small shape fp32 and base shape bf16-mixed, target 512, dropout 0.1, checkpointing off and on.
CUDA_MEASURED = {("small", "32", "led", 16384, False): 2625, ("small", "32", "pegasus_x", 16384, False): 1976,
                 ("base", "bf16-mixed", "led", 16384, False): 8212, ("base", "bf16-mixed", "led", 16384, True): 3556,
                 ("base", "bf16-mixed", "pegasus_x", 16384, False): 10837,
                 ("base", "bf16-mixed", "pegasus_x", 16384, True): 5207}


@pytest.mark.parametrize("case", list(CUDA_MEASURED), ids=lambda case: "-".join(map(str, case)))
def test_cuda_estimate_within_10_percent_of_the_peak_measured_on_a_gpu(case):
    """The CUDA side of the account (fused attention with masks, fused dropout, autocast) against what a GPU
    measured: the memory-efficient kernel keeps a (B, 1, 1, K) mask as B x K numbers, not expanded to every
    head and query row (counted expanded, it is 1.3 GB too many for PEGASUS-X at 16,384 tokens)."""
    shape, precision, model_type, length, checkpointing = case
    config = config_from_dict(_bench().model_config(model_type, shape, dropout=0.1))
    estimate = estimate_peak_memory(config, 1, length, 512, precision=precision,
                                    gradient_checkpointing=checkpointing, device="cuda")
    assert 0.9 <= estimate.total / (CUDA_MEASURED[case] * 2**20) <= 1.1, estimate.total / 2**20


@pytest.mark.parametrize("size", ["led-base-16384", "pegasus-x-base"])
def test_gradient_checkpointing_reduces_activations_and_peak(size):
    config = family_of_size(size).config_of_size(size)
    plain = estimate_peak_memory(config, 1, 16384, 512, precision="bf16-mixed")
    checkpointed = estimate_peak_memory(config, 1, 16384, 512, precision="bf16-mixed", gradient_checkpointing=True)
    assert checkpointed.activations < plain.activations / 3
    assert checkpointed.total < plain.total
    assert checkpointed.parameters == plain.parameters and checkpointed.optimizer_states == plain.optimizer_states


@pytest.mark.parametrize("size", ["led-large-16384", "pegasus-x-large"])
def test_fsdp_shards_weights_gradients_and_optimizer_states(size):
    config = family_of_size(size).config_of_size(size)
    kwargs = dict(batch_size=1, input_length=8192, target_length=512, precision="bf16-mixed")
    single = estimate_peak_memory(config, **kwargs)
    fsdp = estimate_peak_memory(config, strategy="fsdp", num_devices=8, **kwargs)
    ddp = estimate_peak_memory(config, strategy="ddp", num_devices=8, **kwargs)
    buffers = single.parameters - 4 * single.num_parameters  # e.g. LED's final_logits_bias: not sharded
    assert fsdp.parameters - buffers == pytest.approx((single.parameters - buffers) / 8, abs=1)
    assert fsdp.gradients == pytest.approx(single.gradients / 8, abs=1)
    assert fsdp.optimizer_states == pytest.approx(single.optimizer_states / 8, abs=1)
    # FSDP gathers the weights in bf16 already: autograd keeps no bf16 copies of the matmul weights.
    assert fsdp.activations < single.activations
    assert fsdp.total < single.total < ddp.total
    assert ddp.gradient_buckets == single.gradients and single.gradient_buckets == 0


def test_precision_and_optimizer_change_the_static_memory():
    config = family_of_size("led-base-16384").config_of_size("led-base-16384")
    fp32 = estimate_peak_memory(config, 1, 4096, 256)
    mixed = estimate_peak_memory(config, 1, 4096, 256, precision="bf16-mixed")
    true = estimate_peak_memory(config, 1, 4096, 256, precision="bf16-true")
    adafactor = estimate_peak_memory(config, 1, 4096, 256, optimizer="adafactor")
    assert mixed.parameters == fp32.parameters and mixed.optimizer_states == fp32.optimizer_states
    assert true.parameters == fp32.parameters // 2 and true.optimizer_states == fp32.optimizer_states // 2
    assert fp32.optimizer_states == 2 * fp32.gradients
    assert adafactor.optimizer_states < fp32.optimizer_states / 50
    assert true.activations < mixed.activations < fp32.activations


def test_optimizer_names_are_train_py_s_options():
    # optimizer=NAME is the class conf/optimizer/NAME.yaml builds, so the planner and training agree on it.
    assert optimizer_class("adamw") is torch.optim.AdamW and optimizer_class("adafactor") is torch.optim.Adafactor
    config = _config("pegasus_x")
    by_name = estimate_peak_memory(config, 1, 512, 64, optimizer="adafactor")
    assert by_name.optimizer_states == estimate_peak_memory(config, 1, 512, 64,
                                                            optimizer=torch.optim.Adafactor).optimizer_states
    with pytest.raises(ValueError, match="optimizer='sgd' is invalid: valid values are adafactor, adamw"):
        optimizer_class("sgd")


def test_plan_verdicts_and_largest_batch_size():
    config = family_of_size("tiny").config_of_size("tiny")
    kwargs = dict(batch_size=8, input_length=4096, target_length=256)

    def needed(batch_size: int = 8, gradient_checkpointing: bool = False) -> float:
        """GiB of GPU memory the planner asks for."""
        estimate = estimate_peak_memory(config, batch_size, 4096, 256, precision="bf16-mixed",
                                        gradient_checkpointing=gradient_checkpointing)
        return CUDA_RESERVED_GIB + (1 + FRAGMENTATION_MARGIN) * estimate.total / GIB

    between = (needed() + needed(gradient_checkpointing=True)) / 2
    assert "needs gradient checkpointing" in plan(config, gpu_memory_gib=between, **kwargs)
    assert "does not fit" in plan(config, gpu_memory_gib=CUDA_RESERVED_GIB + 0.01, **kwargs)

    size = largest_batch_size(config, 6, input_length=4096, target_length=256, precision="bf16-mixed")
    assert size >= 8 and needed(size) <= 6 < needed(size + 1)
    report = plan(config, gpu_memory_gib=6, **kwargs)
    assert "fits without gradient checkpointing" in report
    assert f"largest batch size per GPU that fits: {size} without" in report


@pytest.mark.parametrize("kwargs, message", [
    (dict(precision="fp16"), "precision='fp16' is invalid: valid values are 32, bf16-mixed, bf16-true"),
    (dict(strategy="deepspeed"), "strategy='deepspeed' is invalid: valid values are single, ddp, fsdp"),
    (dict(strategy="single", num_devices=4), "num_devices=4 needs strategy ddp or fsdp"),
    (dict(input_length=3000), "input_length=3000 is longer than the model's 2048 encoder positions"),
    (dict(batch_size=0), "batch_size=0 is invalid"),
])
def test_invalid_arguments_name_the_argument(kwargs, message):
    args = dict(config=_config("led"), batch_size=1, input_length=512, target_length=64)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        estimate_peak_memory(**{**args, **kwargs})


def test_cli_prints_the_breakdown_and_the_verdict(capsys):
    main(["model=led-base-16384", "input_length=16384", "target_length=512", "batch_size=1",
          "precision=bf16-mixed", "strategy=fsdp", "devices=8", "gpu_memory_gib=80"])
    out = capsys.readouterr().out
    assert "activations" in out and "peak" in out and "fsdp x8" in out and "led.encoder.layers" in out
    assert "verdict at batch size 1: fits without gradient checkpointing" in out


def test_cli_plans_pegasus_x_by_name_and_by_directory(tmp_path, capsys):
    main(["model=pegasus-x-tiny", "input_length=4096", "target_length=256", "gpu_memory_gib=2"])
    by_name = capsys.readouterr().out
    assert by_name.startswith("PEGASUS-X (") and "model.encoder.layers" in by_name and "verdict" in by_name
    config = family_of_size("pegasus-x-tiny").config_of_size("pegasus-x-tiny")
    config.save(tmp_path)  # config.json, as in a checkpoint directory
    main([f"model={tmp_path}", "input_length=4096", "target_length=256", "gpu_memory_gib=2"])
    assert capsys.readouterr().out == by_name


@pytest.mark.parametrize("argv, message", [
    (["precision=fp16"], "led.memory: error: precision='fp16' is invalid: valid values are 32, bf16-mixed, bf16-true"),
    (["model=led-huge"], "led.memory: error: model='led-huge' is invalid: valid values are tiny, led-base-16384, "
                         "led-large-16384, pegasus-x-tiny, pegasus-x-base, pegasus-x-large"),
    (["devices=two"], "led.memory: error: devices='two' is invalid: it must be an integer"),
    (["batch=1"], "led.memory: error: unknown key 'batch'; keys: model, input_length,"),
])
def test_cli_rejects_bad_values_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_cli_exit_code_from_the_shell():
    done = subprocess.run([sys.executable, "-m", "led.memory", "strategy=zero3"], capture_output=True, text=True,
                          cwd=ROOT, check=False)
    assert done.returncode == 2
    assert done.stderr == "led.memory: error: strategy='zero3' is invalid: valid values are single, ddp, fsdp\n"
