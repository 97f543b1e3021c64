"""Bad data and data settings: each problem raises one DataError that names the file, line, field or value
(led/data/checks.py), or is skipped/truncated with one log line per split. Tiny files, no network."""

import json
import logging
import socket
from pathlib import Path
from typing import Any

import datasets
import huggingface_hub.constants
import pytest
from conftest import save_tiny_led

from led.data.datamodule import SummarizationDataModule
from led.errors import DataError
from led.models.tokenizer import LEDTokenizer

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["the", "model", "reads", "a", "long", "document", "and", "writes", "its", "summary"]


def record(i: int, words: int = 6) -> dict[str, str]:
    return {"article": " ".join(WORDS[(i + k) % len(WORDS)] for k in range(words)), "abstract": f"summary {i}"}


def write_lines(path: Path, lines: list[str | dict[str, Any]]) -> str:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("tokenizer")
    texts = [" ".join(WORDS)] * 20 + [r["abstract"] for r in map(record, range(20))]
    LEDTokenizer.train(texts, vocab_size=300).save_pretrained(directory)
    return str(directory)


def make_dm(tokenizer_dir: str, tmp_path: Path, **overrides: Any) -> SummarizationDataModule:
    values: dict[str, Any] = {
        "tokenizer": tokenizer_dir,
        "max_input_length": 16,
        "max_target_length": 8,
        "pad_to_multiple_of": 8,
        "batch_size": 2,
        "cache_dir": str(tmp_path / "cache"),
    }
    values.update(overrides)
    return SummarizationDataModule(**values)


def train_error(tokenizer_dir: str, tmp_path: Path, file: str, **overrides: Any) -> str:
    """The DataError message of preparing a DataModule whose train_file is `file`."""
    with pytest.raises(DataError) as caught:
        make_dm(tokenizer_dir, tmp_path, train_file=file, **overrides).prepare_data()
    message = str(caught.value)
    assert "\n" not in message  # one line: the entry point prints it without a traceback
    return message


def test_malformed_json_line_names_file_line_and_excerpt(tokenizer_dir: str, tmp_path: Path) -> None:
    file = write_lines(tmp_path / "train.jsonl", [record(0), "", '{"article": "text", abstract: "oops"}', record(1)])
    message = train_error(tokenizer_dir, tmp_path, file)
    assert "train_file" in message and "train.jsonl" in message
    assert "line 3: not valid JSON" in message and "abstract: \"oops\"" in message


def test_empty_file_and_split_without_usable_records(tokenizer_dir: str, tmp_path: Path) -> None:
    empty = tmp_path / "train.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match=r"train_file='.*train\.jsonl' is empty"):
        make_dm(tokenizer_dir, tmp_path, train_file=str(empty))
    no_rows = tmp_path / "validation.parquet"
    datasets.Dataset.from_dict({"article": [], "abstract": []}).to_parquet(str(no_rows))
    with pytest.raises(DataError, match=r"validation_file='.*validation\.parquet' has no records"):
        make_dm(tokenizer_dir, tmp_path, validation_file=str(no_rows)).prepare_data()
    blank = write_lines(tmp_path / "blank.jsonl", [{"article": " ", "abstract": "x"}, {"article": "y", "abstract": ""}])
    message = train_error(tokenizer_dir, tmp_path, blank)
    assert "blank.jsonl" in message and "all 2 records have an empty or whitespace-only" in message


def test_missing_field_lists_the_fields_present(tokenizer_dir: str, tmp_path: Path) -> None:
    file = write_lines(tmp_path / "train.jsonl", [{"text": "a b c", "abstract": "a"}])
    message = train_error(tokenizer_dir, tmp_path, file)
    assert "train.jsonl" in message and "no field 'article'" in message
    assert "fields present: ['text', 'abstract']" in message and "data.source_field=" in message
    message = train_error(tokenizer_dir, tmp_path, file, source_field="text", summary_field="summary")
    assert "no field 'summary'" in message and "data.summary_field=" in message


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([record(0), {"article": None, "abstract": "s"}], "line 2: field 'article' is null or missing"),
        ([record(0), {"abstract": "s"}], "line 2: field 'article' is null or missing"),
        ([record(0), "", record(1), {"article": "a", "abstract": 5}], "line 4: field 'abstract' holds a number (5)"),
        ([{"article": ["a", "b"], "abstract": "s"}], "line 1: field 'article' holds a list ([\"a\", \"b\"])"),
    ],
)
def test_null_or_non_text_value_names_line_field_and_type(
    tokenizer_dir: str, tmp_path: Path, lines: list[Any], expected: str
) -> None:
    message = train_error(tokenizer_dir, tmp_path, write_lines(tmp_path / "train.jsonl", lines))
    assert "train.jsonl" in message and expected in message and "expected text" in message


def test_null_in_parquet_names_the_record(tokenizer_dir: str, tmp_path: Path) -> None:
    file = tmp_path / "train.parquet"
    datasets.Dataset.from_dict({"article": ["a b", "c d", "e f"], "abstract": ["x", None, "z"]}).to_parquet(str(file))
    message = train_error(tokenizer_dir, tmp_path, str(file))
    assert "train.parquet" in message and "record 1: field 'abstract' is null" in message


def test_empty_records_are_skipped_and_counted_once_or_raise_when_strict(
    tokenizer_dir: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = [record(i) for i in range(6)]
    records[1]["article"] = ""
    records[4]["abstract"] = " \n\t"
    file = write_lines(tmp_path / "train.jsonl", records)
    caplog.set_level(logging.INFO, logger="led.data")
    dm = make_dm(tokenizer_dir, tmp_path, train_file=file)
    dm.prepare_data()
    dm.setup("fit")
    dm.dataset("train")
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1, skipped
    assert "skipped 2 of 6 records in train_file=" in skipped[0] and "train.jsonl" in skipped[0]
    assert "first at line 2" in skipped[0]
    kept = [r for i, r in enumerate(records) if i not in (1, 4)]
    assert dm.references("train") == [r["abstract"] for r in kept]  # ids/references index the kept records
    assert dm.documents("train") == [r["article"] for r in kept]
    assert sorted(i for batch in dm.train_dataloader() for i in batch["ids"].tolist()) == [0, 1, 2, 3]

    # strict: an error, both when tokenising and when a cache built without strict exists
    for cache in (tmp_path / "strict-cache", tmp_path / "cache"):
        with pytest.raises(DataError) as caught:
            make_dm(tokenizer_dir, tmp_path, train_file=file, strict=True, cache_dir=str(cache)).setup("fit")
        message = str(caught.value)
        assert "train.jsonl" in message and "2 of 6 records" in message and "first at line 2" in message
        assert "data.strict=false" in message


def test_empty_csv_cells_are_skipped_not_null_errors(
    tokenizer_dir: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = tmp_path / "train.csv"
    file.write_text('article,abstract\n"a long, document",sum one\n,sum two\nthe model,\nits summary,x\n')
    caplog.set_level(logging.WARNING, logger="led.data")
    dm = make_dm(tokenizer_dir, tmp_path, train_file=str(file))
    assert len(dm.dataset("train")) == 2
    assert "skipped 2 of 4 records" in caplog.text and "first at line 3" in caplog.text


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_bad_path_names_the_setting(tokenizer_dir: str, tmp_path: Path, kind: str) -> None:
    train = write_lines(tmp_path / "train.jsonl", [record(0)])  # fine: only test_file is to be named
    path = tmp_path / ("nope.jsonl" if kind == "missing" else "folder.jsonl")
    if kind == "directory":
        path.mkdir()
    with pytest.raises(DataError) as caught:
        make_dm(tokenizer_dir, tmp_path, train_file=train, test_file=str(path))
    message = str(caught.value)
    assert message.startswith("test_file=") and path.name in message
    assert ("does not exist" if kind == "missing" else "is a directory") in message


def test_unsupported_extension_lists_valid_ones(tokenizer_dir: str, tmp_path: Path) -> None:
    file = tmp_path / "train.txt"
    file.write_text("some text\n")
    with pytest.raises(DataError) as caught:
        make_dm(tokenizer_dir, tmp_path, train_file=str(file))
    message = str(caught.value)
    assert "train_file=" in message and "train.txt" in message and "'.txt'" in message
    assert "valid: .jsonl, .json, .parquet, .csv" in message


def test_unreachable_hub_dataset_says_how_to_use_local_files(
    tokenizer_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[Any] = []

    def no_network(*args: Any, **kwargs: Any) -> None:
        attempts.append(args)
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    # the libraries read the variables when imported, so set their copies as well
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    dm = make_dm(tokenizer_dir, tmp_path, source="led-tests/no-such-dataset")
    with pytest.raises(DataError) as caught:
        dm.setup("fit")
    message = str(caught.value)
    assert "'led-tests/no-such-dataset'" in message and "split 'train'" in message
    assert "could not be reached (offline mode is on" in message and "dataset is unknown" in message
    assert "data=jsonl data.train_file=PATH data.validation_file=PATH" in message
    assert "python -m led.prepare dataset=led-tests/no-such-dataset out=DIR" in message
    assert not attempts


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_invalid_utf8_names_file_and_line(tokenizer_dir: str, tmp_path: Path, suffix: str) -> None:
    file = tmp_path / f"train.{suffix}"
    if suffix == "jsonl":
        file.write_bytes(b'{"article": "a b", "abstract": "c"}\n{"article": "caf\xe9", "abstract": "c"}\n')
    else:
        file.write_bytes(b"article,abstract\na b,c\ncaf\xe9,c\n")
    message = train_error(tokenizer_dir, tmp_path, str(file))
    line = 2 if suffix == "jsonl" else 3  # the csv header is line 1
    assert f"train.{suffix}" in message and f"line {line}" in message and "not valid UTF-8" in message


def test_truncation_is_counted_and_logged_once_per_split(
    tokenizer_dir: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = [record(i, words=3 + 4 * i) for i in range(8)]  # 3 to 31 words
    train = write_lines(tmp_path / "train.jsonl", records)
    validation = write_lines(tmp_path / "validation.jsonl", records[:3])
    tokenizer = LEDTokenizer.from_pretrained(tokenizer_dir)
    too_long = [len(tokenizer.encode(r["article"])) > 16 for r in records]
    assert 0 < sum(too_long[:3]) and sum(too_long) < len(records)
    caplog.set_level(logging.INFO, logger="led.data")
    for _ in range(2):  # tokenising, then loading the cache: the same single line each time
        caplog.clear()
        dm = make_dm(tokenizer_dir, tmp_path, train_file=train, validation_file=validation)
        dm.prepare_data()
        dm.setup("fit")
        list(dm.train_dataloader())
        lines = [r.getMessage() for r in caplog.records if "articles" in r.getMessage()]
        assert lines == [f"truncated {sum(too_long)} of 8 train articles to max_input_length=16 tokens",
                         f"truncated {sum(too_long[:3])} of 3 validation articles to max_input_length=16 tokens"]
        assert max(dm.dataset("train")["length"]) == 16


def test_lengths_beyond_the_model_positions(tokenizer_dir: str, tmp_path: Path) -> None:
    file = write_lines(tmp_path / "train.jsonl", [record(0)])
    with pytest.raises(DataError, match=r"max_input_length=64 exceeds the model's 32 encoder positions.*<=32"):
        make_dm(tokenizer_dir, tmp_path, train_file=file, max_input_length=64, max_encoder_positions=32)
    with pytest.raises(DataError, match=r"max_input_length=20 padded to .* is 24 tokens.*<=16"):
        make_dm(tokenizer_dir, tmp_path, train_file=file, max_input_length=20, max_encoder_positions=20)
    with pytest.raises(DataError, match=r"max_target_length=8 exceeds the model's 6 decoder positions.*<=6"):
        make_dm(tokenizer_dir, tmp_path, train_file=file, max_decoder_positions=6)
    make_dm(tokenizer_dir, tmp_path, train_file=file, max_encoder_positions=16, max_decoder_positions=8)


def test_tokenizer_larger_than_the_model_vocabulary(tokenizer_dir: str, tmp_path: Path) -> None:
    file = write_lines(tmp_path / "train.jsonl", [record(0)])
    dm = make_dm(tokenizer_dir, tmp_path, train_file=file, model_vocab_size=100)
    with pytest.raises(DataError, match=r"has 300 tokens but the model's embeddings hold 100 \(model_vocab_size\)"):
        dm.prepare_data()
    assert make_dm(tokenizer_dir, tmp_path, train_file=file, model_vocab_size=300).tokenizer.vocab_size == 300


# ---------------------------------------------------------------------------------------------- every path, one message
# Each bad-data case as a file (its suffix, how it is written, with the text fields' names) and the message after the
# path's `where` (which names the file as that path's setting does). The predictions path reads the same file with its
# fields named prediction/reference, so its message names those: `_renamed` applies that to the expected one.
BAD_FILES: dict[str, tuple[str, Any, str]] = {
    "missing file": (".jsonl", None, " does not exist"),
    "directory": (".jsonl", "directory", " is a directory; point it at one .jsonl, .json, .parquet, .csv file"),
    "wrong extension": (".txt", ["some text"],
                        " has an unsupported extension '.txt'; valid: .jsonl, .json, .parquet, .csv"),
    "empty file": (".jsonl", ["", "  "], " is empty; it needs one record per line (or row)"),
    "no records": (".parquet", [], " has no records"),
    "invalid JSON line": (".jsonl", [record(0), "", "this is not json"],
                          ", line 3: not valid JSON (Expecting value at column 1): 'this is not json'"),
    "not an object": (".jsonl", [record(0), '["a", "b"]'],
                      ', line 2: not a JSON object with fields but a list (["a", "b"])'),
    "missing field": (".jsonl", [{"text": "a b", "abstract": "a"}],
                      " has no field 'article'; fields present: ['text', 'abstract']. {hint}"),
    "null field": (".jsonl", [record(0), {"article": None, "abstract": "s"}],
                   ", line 2: field 'article' is null or missing; expected text (a string)"),
    "field missing in a record": (".jsonl", [record(0), "", {"abstract": "s"}],
                                  ", line 3: field 'article' is null or missing; expected text (a string)"),
    "number field": (".jsonl", [record(0), {"article": "a", "abstract": 5}],
                     ", line 2: field 'abstract' holds a number (5); expected text (a string)"),
    "list field": (".jsonl", [{"article": ["a", "b"], "abstract": "s"}],
                   ', line 1: field \'article\' holds a list (["a", "b"]); expected text (a string)'),
    "null in parquet": (".parquet", [record(0), {"article": "c d", "abstract": None}],
                        ", record 1: field 'abstract' is null or missing; expected text (a string)"),
    "invalid UTF-8 line": (".jsonl", [record(0), b"\xe9" + json.dumps(record(1)).encode()],
                           ", line 2: not valid UTF-8 (byte b'\\xe9' at column 1); save the file as UTF-8"),
    "invalid UTF-8 csv": (".csv", [b"article,abstract", b"a b,c", b"\xe9 d,c"],
                          ", line 3: not valid UTF-8 (byte b'\\xe9' at column 1); save the file as UTF-8"),
    "all records blank": (".jsonl", [{"article": " ", "abstract": "x"}, {"article": "y", "abstract": ""}],
                          (": all 2 records have an empty or whitespace-only 'article' or 'abstract'; nothing is left "
                           "to use (first at line 1)")),
    "blank records under strict": (".jsonl", [record(0), {"article": "", "abstract": "s"}, record(2), record(3)],
                                   (": 1 of 4 records have an empty or whitespace-only 'article' or 'abstract' "
                                    "(first at line 2); fill or remove them, or set data.strict=false to skip them")),
}
DATA_PATHS = ("datamodule", "tokenizer training", "evaluate test_file", "prepare dataset=DIR", "evaluate predictions")
# Cases a path has no such thing for: prepare reads the split files a directory holds (no file: not a split of it)
# and keeps blank records (training decides, with data.strict); a predictions file's empty summary is scored.
NOT_APPLICABLE = {("prepare dataset=DIR", "missing file"), ("prepare dataset=DIR", "blank records under strict"),
                  ("evaluate predictions", "all records blank"), ("evaluate predictions", "blank records under strict")}
FIELD_HINTS = {"prepare dataset=DIR": "Set source_field= to one of them",
               "evaluate predictions": "A predictions file holds one record per line with text fields 'prediction' "
                                       "and 'reference' (an 'id' is optional)"}


def _renamed(text: str) -> str:
    return text.replace("article", "prediction").replace("abstract", "reference")


def write_case(file: Path, content: Any, predictions: bool) -> None:
    """`content` as the file: lines (dicts as JSON, bytes as they are), a parquet table, or a directory."""
    rename = _renamed if predictions else (lambda text: text)
    if content == "directory":
        file.mkdir()
    elif file.suffix == ".parquet":
        columns = [rename(name) for name in ("article", "abstract")]
        rows = [{rename(key): value for key, value in row.items()} for row in content]
        datasets.Dataset.from_dict({name: [row[name] for row in rows] for name in columns}).to_parquet(str(file))
    elif content is not None:
        lines = [line if isinstance(line, bytes) else (line if isinstance(line, str) else json.dumps(line)).encode()
                 for line in content]
        file.write_bytes(b"".join(rename(line.decode("latin-1")).encode("latin-1") + b"\n" for line in lines))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: str) -> str:
    """A tiny Hugging Face-format model with the test tokenizer, for evaluate.py's ckpt_path."""
    return str(save_tiny_led(tmp_path_factory.mktemp("model"), tokenizer_dir, vocab_size=300))


def path_error(path: str, file: Path, tmp_path: Path, tokenizer_dir: str, model_dir: str, strict: bool,
               capsys: pytest.CaptureFixture) -> str:
    """The one-line DataError message `path` gives for `file`."""
    from hydra import compose, initialize_config_dir

    from led.prepare import main as prepare_main
    from led.recipes.evaluate import evaluate

    def evaluate_with(*overrides: str) -> None:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            evaluate(compose(config_name="eval", overrides=[*overrides, f"output_dir={tmp_path / 'out'}"]))

    sizes = {"max_input_length": 16, "max_target_length": 8, "cache_dir": str(tmp_path / "cache"), "strict": strict}
    with pytest.raises((DataError, SystemExit)) as caught:
        if path == "datamodule":
            make_dm(tokenizer_dir, tmp_path, train_file=str(file), strict=strict).prepare_data()
        elif path == "tokenizer training":
            _ = SummarizationDataModule(train_file=str(file), tokenizer_vocab_size=300, **sizes,
                                        tokenizer_dir=str(tmp_path / "tokenizer")).tokenizer  # trains it
        elif path == "evaluate test_file":
            evaluate_with(f"ckpt_path={model_dir}", "device=cpu", *(f"+data.{k}={v}" for k, v in sizes.items()),
                          f"+data.test_file={file}")
        elif path == "prepare dataset=DIR":
            prepare_main([f"dataset={file.parent}", f"out={tmp_path / 'prepared'}", "tokenizer=null", "splits=[train]"])
        else:
            evaluate_with(f"predictions={file}")
    if caught.type is SystemExit:  # led.prepare printed it: `led.prepare: error: MESSAGE` after datasets' bars
        assert caught.value.code == 2
        return capsys.readouterr().err.strip().splitlines()[-1].removeprefix("led.prepare: error: ")
    return str(caught.value)


@pytest.mark.parametrize(("path", "case"), [(path, case) for path in DATA_PATHS for case in BAD_FILES
                                            if (path, case) not in NOT_APPLICABLE])
def test_every_path_gives_the_same_message_for_a_bad_file(path: str, case: str, tmp_path: Path, tokenizer_dir: str,
                                                          model_dir: str, capsys: pytest.CaptureFixture) -> None:
    """The DataModule, tokenizer training, `evaluate.py ckpt_path=... +data.test_file=`, `python -m led.prepare
    dataset=DIR` and `evaluate.py predictions=` read a file through the same checks: one line, the same words after
    the part that names the file as that path's setting does."""
    suffix, content, expected = BAD_FILES[case]
    (tmp_path / "data").mkdir()
    file = tmp_path / "data" / f"train{suffix}"  # `train`: the split name led.prepare looks for in DIR
    predictions = path == "evaluate predictions"
    write_case(file, content, predictions)
    message = path_error(path, file, tmp_path, tokenizer_dir, model_dir, case == "blank records under strict", capsys)
    where = {"datamodule": f"train_file={str(file)!r}", "tokenizer training": f"train_file={str(file)!r}",
             "evaluate test_file": f"test_file={str(file)!r}",
             "prepare dataset=DIR": f"file {str(file)!r} (split 'train' of dataset={file.parent})",
             "evaluate predictions": f"predictions={str(file)!r}"}[path]
    expected = expected.format(hint=FIELD_HINTS.get(path, "Set data.source_field= to one of them"))
    assert message == where + (_renamed(expected) if predictions else expected)
