"""led.models.base: the interface generation and checkpoint I/O use, and that they never import a family."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from conftest import make_batch, make_pair

from led import LEDForConditionalGeneration
from led.models.base import EncoderDecoderModel

MODELS = Path(__file__).parent.parent / "led" / "models"
SHARED = ("base.py", "generation.py", "checkpoint.py", "hub.py", "tokenizer.py")


def _runtime_imports(path: Path) -> list[tuple[str, bool]]:
    """(module, inside a function) of every `led` import, leaving out `if TYPE_CHECKING:` blocks."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("led"):
            found.append((node.module, in_function))
        for child in ast.iter_child_nodes(node):
            visit(child, in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(path.read_text()), False)
    return found


def test_shared_code_imports_no_family_and_nothing_inside_functions():
    for name in SHARED:
        for module, _ in _runtime_imports(MODELS / name):
            assert not module.startswith("led.models.led"), f"{name} imports {module}"
    for path in MODELS.rglob("*.py"):
        assert not [m for m, in_function in _runtime_imports(path) if in_function], f"{path} imports in a function"


def test_a_family_must_implement_the_interface():
    class Incomplete(EncoderDecoderModel):
        def encode(self, input_ids, attention_mask=None, **encoder_kwargs):
            return input_ids

    with pytest.raises(TypeError, match="decode_step"):
        Incomplete(LEDForConditionalGeneration.config_class())


def test_decode_step_and_output_layer_give_the_logits_of_decode():
    ours, _ = make_pair("uniform", seed=1)
    batch = make_batch(320, [40, 33], 5, "first", seed=3)
    decoder_ids = torch.randint(4, 320, (2, 5))
    with torch.no_grad():
        encoded = ours.encode(batch["input_ids"], batch["attention_mask"], batch["global_attention_mask"])
        full = ours.decode(decoder_ids, encoded, batch["attention_mask"])  # (2, 5, V)
        cache = ours.new_cache(encoded)
        weight, bias = ours.output_layer()
        for t in range(5):
            hidden = ours.decode_step(decoder_ids[:, t], cache, batch["attention_mask"])  # (2, D)
            torch.testing.assert_close(hidden @ weight.t() + bias, full[:, t], atol=1e-5, rtol=1e-5)
    assert ours.max_target_positions == ours.config.max_decoder_position_embeddings


def test_gradient_checkpointing_toggles_both_stacks():
    ours, _ = make_pair("uniform")
    ours.gradient_checkpointing_enable()
    assert ours.led.encoder.gradient_checkpointing and ours.led.decoder.gradient_checkpointing
    ours.gradient_checkpointing_disable()
    assert not (ours.led.encoder.gradient_checkpointing or ours.led.decoder.gradient_checkpointing)
