"""Docs name what exists: every repository path (`led/...`, `tests/...`, `bench/...`, `conf/...`, `data/...`,
`docs/...`), every bare file name (`CONTRACTS.md`, `config.yaml`) and every dotted `led.` name written in a comment or
docstring of the code, in a YAML or shell comment, or anywhere in the Markdown docs, resolves in the tree today: the
path exists, a file of that name exists, or the module imports and the rest of the name is an attribute of it."""

from __future__ import annotations

import ast
import functools
import importlib
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CODE = ["led/**/*.py", "tests/**/*.py", "bench/**/*.py", "data/*.py", "train.py", "evaluate.py"]
HASH_COMMENTED = ["conf/**/*.yaml", "bench/**/*.sh"]
PROSE = ["README.md", "docs/**/*.md", "data/README.md"]

# A path starts a word and runs over path characters; it ends on a word character, `*`, `}` or `/`, so the full stop
# or comma after it in a sentence is not part of it. An all-capitals segment (`conf/optimizer/NAME.yaml`) and a
# `{...}` or `<...>` segment are placeholders: the path resolves when some file or folder matches in their place.
PATH = re.compile(r"(?<![\w./~$-])(?:led|tests|bench|conf|data|docs)/[\w./*{}<>-]*[\w*}>/]")
PLACEHOLDER = re.compile(r"\{[^/{}]*\}|<[^/<>]*>|\b[A-Z][A-Z0-9_]*\b")
# A file name on its own (no folder before it).
FILE_NAME = re.compile(r"(?<![\w/.$-])[\w-]+\.(?:py|md|yaml|sh|toml)\b")
# `led.` after a word character or a dot is an attribute (`model.led.encoder`), not a name in the package.
DOTTED = re.compile(r"(?<![\w.])led(?:\.[A-Za-z_]\w*)+")

# Text the path pattern matches that is no path.
NOT_PATHS = {
    "docs/s": "a unit, documents per second (README.md's bench/bench_train.py line)",
}

# Paths that the docs name but that the tree does not hold until a command writes them.
GENERATED = {
    "data/synthetic": "conf/data/synthetic.yaml's corpus, written on first use (or by data/generate.py); git-ignored",
    "data/train.jsonl": "an example `train_file=` value in led/data/checks.py, a file of the user's",
    "optimization_results.yaml": "the Optuna sweeper writes it into the sweep directory",
}


def comments_and_docstrings(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) for every comment and every module, class and function docstring of a Python file."""
    source = path.read_text()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                for offset, line in enumerate(body[0].value.value.splitlines()):
                    yield body[0].lineno + offset, line


def hash_comments(path: Path) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = re.search(r"(?:^|\s)(#.*)", line)
        if match:
            yield number, match.group(1)


def documents() -> Iterator[tuple[Path, int, str]]:
    """(file, line, text) for every piece of documentation checked."""
    for pattern in CODE:
        for path in sorted(ROOT.glob(pattern)):
            for number, text in comments_and_docstrings(path):
                yield path, number, text
    for pattern in HASH_COMMENTED:
        for path in sorted(ROOT.glob(pattern)):
            for number, text in hash_comments(path):
                yield path, number, text
    for pattern in PROSE:
        for path in sorted(ROOT.glob(pattern)):
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                yield path, number, line


def path_exists(name: str) -> bool:
    name = name.rstrip("/")
    if name in NOT_PATHS or any(name == generated or name.startswith(generated + "/") for generated in GENERATED):
        return True
    pattern = PLACEHOLDER.sub("*", name)
    if "*" in pattern:
        return any(ROOT.glob(pattern))
    return (ROOT / name).exists()


@functools.cache
def file_names() -> frozenset[str]:
    return frozenset(path.name for path in ROOT.rglob("*") if ".git" not in path.parts)


def file_name_exists(name: str) -> bool:
    return name in file_names() or name in GENERATED


@functools.cache
def led_model_names() -> frozenset[str]:
    """Module and state-dict names inside an LED model (`led.encoder.layers`, `led.shared.weight`): the Hugging Face
    layout names its base model `led`."""
    from led import LEDConfig, LEDForConditionalGeneration

    model = LEDForConditionalGeneration(LEDConfig(
        vocab_size=8, d_model=8, encoder_layers=1, decoder_layers=1, encoder_attention_heads=1,
        decoder_attention_heads=1, encoder_ffn_dim=8, decoder_ffn_dim=8, attention_window=2,
        max_encoder_position_embeddings=8, max_decoder_position_embeddings=8))
    return frozenset({name for name, _ in model.named_modules(remove_duplicate=False)} | set(model.state_dict()))


def name_resolves(name: str) -> bool:
    """`name` is a module of the package, an attribute of one, or a module or weight inside an LED model."""
    if name in led_model_names():
        return True
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            if not hasattr(obj, attribute):
                return False
            obj = getattr(obj, attribute)
        return True
    return False


def stale_names() -> list[str]:
    problems = []
    for path, number, text in documents():
        where = f"{path.relative_to(ROOT)}:{number}"
        problems += [f"{where}: no such path {name}" for name in PATH.findall(text) if not path_exists(name)]
        problems += [f"{where}: no file named {name}" for name in FILE_NAME.findall(text)
                     if not file_name_exists(name)]
        problems += [f"{where}: {name} does not resolve" for name in DOTTED.findall(text) if not name_resolves(name)]
    return problems


def test_docs_name_what_exists():
    problems = stale_names()
    assert not problems, "docs name what is not in the tree:\n" + "\n".join(problems)


@pytest.mark.parametrize("text", ["see led/no_such_module.py.", "from tests/test_nothing.py", "conf/nothing/NAME.yaml"])
def test_a_missing_path_is_caught(text):
    assert [name for name in PATH.findall(text) if not path_exists(name)]


def test_a_missing_file_name_is_caught():
    assert [name for name in FILE_NAME.findall("as DESIGN.md says") if not file_name_exists(name)]


@pytest.mark.parametrize("text", ["led.data.NoSuchLoader", "led.no_such_module", "led.models.base.Missing.forward",
                                  "led.encoder.no_such_layer"])
def test_an_unresolved_name_is_caught(text):
    assert [name for name in DOTTED.findall(text) if not name_resolves(name)]


def test_existing_names_pass():
    text = ("led/data/checks.py, conf/optimizer/NAME.yaml, conf/experiment/*.yaml, led.data.checks.check_split, "
            "led.training.module.LEDSummarizer, led.encoder.layers, model.led.encoder and conftest.py.")
    assert PATH.findall(text) and all(path_exists(name) for name in PATH.findall(text))
    assert FILE_NAME.findall(text) and all(file_name_exists(name) for name in FILE_NAME.findall(text))
    assert DOTTED.findall(text) and all(name_resolves(name) for name in DOTTED.findall(text))
