"""`python -m led.export`: a training checkpoint becomes a Hugging Face directory in which `transformers` and
`led` find the same model (logits), generation settings and tokenizer (ids); bad inputs give one-line errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
import torch
from test_training import FAMILIES, FAMILY_MODELS, FEW_STEPS, TINY_CORPUS, make_config

from led.export import main as export_main
from led.models.families import FAMILIES as MODEL_FAMILIES
from led.models.families import load_tokenizer
from led.models.tokenizer_base import TokenizerBase
from led.recipes.evaluate import load_model
from led.recipes.train import train
from led.training.module import LEDSummarizer

transformers = pytest.importorskip("transformers")

TEXTS = ["The survey of the northern region found 12 new wells.", "  leading spaces\nand a newline, ü ß 東京",
         "<mask> tokens and </s> in text"]
HF_FILES = ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "vocab.json",
            "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
# What `transformers` loads an export of each family with: its model and fast tokenizer classes, the files of its
# tokenizer (PEGASUS' is tokenizer.json alone), and the special ids (bos, pad, eos, decoder start) it generates with.
TRANSFORMERS_SIDE = {
    "led": dict(model="LEDForConditionalGeneration", tokenizer="BartTokenizerFast", files=HF_FILES,
                special_ids=(0, 1, 2, 2)),
    "pegasus_x": dict(model="PegasusXForConditionalGeneration", tokenizer="PegasusTokenizerFast",
                      files=("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                             "tokenizer_config.json", "special_tokens_map.json"),
                      special_ids=(None, 0, 1, 0)),
}


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model is much faster on one thread of a shared machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """checkpoints(family): last.ckpt of a 3-step run of the family's tiny model (dropout on, beam search for
    validation), trained on first use."""
    trained: dict[str, Path] = {}

    def checkpoint_of(family: str) -> Path:
        if family not in trained:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            tmp = tmp_path_factory.mktemp(f"trained_{family}")
            train(make_config(tmp, f"data.synthetic.dir={tmp / 'corpus'}", *TINY_CORPUS, *FAMILY_MODELS[family],
                              "model.overrides.dropout=0.1", *FEW_STEPS, "trainer.limit_val_batches=1"))
            torch.set_num_threads(threads)
            trained[family] = tmp / "run" / "checkpoints" / "last.ckpt"
        return trained[family]

    return checkpoint_of


@pytest.fixture(scope="module")
def checkpoint(checkpoints: Any) -> Path:
    """The LED one, for what does not depend on the family."""
    return checkpoints("led")


def inputs(tokenizer: TokenizerBase, model: Any) -> dict[str, torch.Tensor]:
    """Two documents of different lengths (right-padded; for LED, the first token global) and teacher-forced
    summaries starting with the model's decoder start token."""
    ids = [tokenizer.encode(" ".join(TEXTS) * 3), tokenizer.encode(TEXTS[0])]
    length = max(map(len, ids))
    input_ids = torch.full((2, length), tokenizer.pad_token_id)
    attention_mask = torch.zeros(2, length, dtype=torch.long)
    for row, sequence in enumerate(ids):
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
        attention_mask[row, : len(sequence)] = 1
    start = model.config.decoder_start_token_id
    decoder_input_ids = torch.tensor([[start] + tokenizer.encode(TEXTS[1])[:9]] * 2)
    batch = dict(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids)
    if model.takes_global_attention_mask:
        batch["global_attention_mask"] = torch.zeros_like(input_ids)
        batch["global_attention_mask"][:, 0] = 1
    return batch


def logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_export_loads_in_transformers_and_led_with_the_same_logits(family: str, checkpoints: Any,
                                                                   tmp_path: Path) -> None:
    checkpoint, side = checkpoints(family), TRANSFORMERS_SIDE[family]
    out = tmp_path / "exported"
    assert export_main([f"ckpt_path={checkpoint}", f"out={out}"]) == out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]  # no staging directory left beside it
    assert sorted(p.name for p in out.iterdir()) == sorted(side["files"])

    module = LEDSummarizer.load_from_checkpoint(str(checkpoint), map_location="cpu")
    assert module.model.config.model_type == family
    tokenizer = load_tokenizer(module.hparams.tokenizer, family)
    assert type(tokenizer) is MODEL_FAMILIES[family].tokenizer_class
    batch = inputs(tokenizer, module.model)
    expected = logits(module.model, batch)
    hf, info = getattr(transformers, side["model"]).from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    torch.testing.assert_close(logits(hf, batch), expected, atol=1e-4, rtol=0)
    ours = MODEL_FAMILIES[family].model_class.from_pretrained(out)
    torch.testing.assert_close(logits(ours, batch), expected, atol=1e-4, rtol=0)

    # The run's validation generation settings, with the special token ids, as transformers reads them.
    generation = transformers.GenerationConfig.from_pretrained(out)
    assert (generation.num_beams, generation.max_new_tokens, generation.early_stopping) == (2, 6, True)
    assert (generation.bos_token_id, generation.pad_token_id, generation.eos_token_id,
            generation.decoder_start_token_id) == side["special_ids"]
    assert ours.generation_config.num_beams == 2

    for hf_tokenizer in (getattr(transformers, side["tokenizer"]).from_pretrained(out),
                         transformers.AutoTokenizer.from_pretrained(out)):
        for text in TEXTS:
            assert hf_tokenizer(text)["input_ids"] == tokenizer.encode(text), (type(hf_tokenizer), text)

    # evaluate.py ckpt_path=DIR: the model and the tokenizer come from the directory.
    loaded = load_model(str(out))
    assert loaded.tokenizer == str(out) and type(loaded.model) is type(module.model)
    torch.testing.assert_close(logits(loaded.model, batch), expected, atol=1e-4, rtol=0)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
@pytest.mark.parametrize("family", FAMILIES)
def test_sharded_fsdp_checkpoint_directory_exports_too(family: str, checkpoints: Any, tmp_path: Path) -> None:
    # The layout Lightning's FSDPStrategy writes with state_dict_type="sharded": the weights through
    # torch.distributed.checkpoint under "model", everything else in meta.pt.
    import torch.distributed.checkpoint as dcp

    checkpoint = checkpoints(family)
    full = torch.load(checkpoint, map_location="cpu", weights_only=True)
    sharded = tmp_path / "last.ckpt"
    dcp.save({"model": full.pop("state_dict")}, checkpoint_id=sharded, no_dist=True)
    full.pop("optimizer_states")
    torch.save(full, sharded / "meta.pt")
    export_main([f"ckpt_path={sharded}", f"out={tmp_path / 'from_sharded'}"])
    export_main([f"ckpt_path={checkpoint}", f"out={tmp_path / 'from_file'}"])
    for name in ("config.json", "generation_config.json", "tokenizer.json"):
        assert (tmp_path / "from_sharded" / name).read_text() == (tmp_path / "from_file" / name).read_text()
    model_class = MODEL_FAMILIES[family].model_class
    from_file, from_sharded = (model_class.from_pretrained(tmp_path / name) for name in ("from_file", "from_sharded"))
    batch = inputs(load_tokenizer(tmp_path / "from_file", family), from_file)
    torch.testing.assert_close(logits(from_sharded, batch), logits(from_file, batch), atol=0, rtol=0)


def test_exported_files_are_readable_by_the_group(checkpoint: Path, tmp_path: Path) -> None:
    """A shared model directory: 0755, its files 0644 (under the usual umask 022), like any saved model, also where
    the files are staged in a temporary directory and renamed into place."""
    previous = os.umask(0o022)
    try:
        out = export_main([f"ckpt_path={checkpoint}", f"out={tmp_path / 'shared'}"])
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert {file.name: stat.S_IMODE(file.stat().st_mode) for file in out.iterdir()} == {name: 0o644 for name in HF_FILES}


def test_existing_output_is_replaced_only_when_asked(checkpoint: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exit_info:
        export_main([f"ckpt_path={checkpoint}", f"out={out}"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (f"led.export: error: out={out} exists and is not an empty directory; give "
                                       "overwrite=true to replace it, or another out=\n")
    assert (out / "notes.txt").read_text() == "keep me"
    export_main([f"ckpt_path={checkpoint}", f"out={out}", "overwrite=true"])
    assert sorted(p.name for p in out.iterdir()) == sorted(HF_FILES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("problem", ["missing", "directory", "truncated", "not_lightning", "no_arguments"])
def test_bad_checkpoint_paths_are_one_line_errors(problem: str, checkpoint: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "last.ckpt"
    if problem == "directory":
        path.mkdir()
    elif problem == "truncated":
        path.write_bytes(checkpoint.read_bytes()[:100_000])
    elif problem == "not_lightning":
        torch.save({"weights": torch.zeros(3)}, path)
    args = [] if problem == "no_arguments" else [f"ckpt_path={path}", f"out={tmp_path / 'out'}"]
    with pytest.raises(SystemExit) as exit_info:
        export_main(args)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("led.export: error: ") and error.count("\n") == 1, error
    expected = {
        "missing": f"ckpt_path={path} does not exist; give a .ckpt file written by train.py",
        "directory": f"ckpt_path={path} is a directory without meta.pt; give a .ckpt file written by train.py",
        "truncated": f"checkpoint {path} is corrupt or truncated (File is not a zip file",
        "not_lightning": f"ckpt_path={path} is not a checkpoint of led.training.module.LEDSummarizer",
        "no_arguments": "ckpt_path is required: give ckpt_path=...",
    }[problem]
    assert expected in error, error
    assert not (tmp_path / "out").exists()
