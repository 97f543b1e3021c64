"""Checks on the data and data settings given to `SummarizationDataModule` (led/data/datamodule.py).

Every problem a user can make with their data is found before training starts and explained in one
`DataError` that names the setting, file, line, field or value and says what would be valid.

Cost: records are checked column-wise with pyarrow compute on the loaded Arrow table (vectorised, so fine for
Hub-sized splits). Files are read again line by line in Python only to explain a problem already found
(its line number), never on the happy path.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from led.errors import DataError

FILE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
VALID_EXTENSIONS = ", ".join(FILE_FORMATS)
LOCAL_DATA_HINT = "data=jsonl data.train_file=PATH data.validation_file=PATH"


# ---------------------------------------------------------------------------------------------- settings
def check_sizes(
    max_input_length: int,
    max_target_length: int,
    pad_to_multiple_of: int,
    batch_size: int,
    eval_batch_size: int | None,
    max_tokens_per_batch: int | None,
    num_workers: int,
) -> None:
    for name, value, low in (
        ("max_input_length", max_input_length, 2),
        ("max_target_length", max_target_length, 2),
        ("pad_to_multiple_of", pad_to_multiple_of, 1),
        ("batch_size", batch_size, 1),
        ("eval_batch_size", 1 if eval_batch_size is None else eval_batch_size, 1),
        ("num_workers", num_workers, 0),
    ):
        if value < low:
            raise DataError(f"{name}={value} must be >= {low}")
    padded_input = _round_up(max_input_length, pad_to_multiple_of)
    if max_tokens_per_batch is not None and max_tokens_per_batch < padded_input:
        raise DataError(
            f"max_tokens_per_batch={max_tokens_per_batch} cannot hold one example of max_input_length="
            f"{max_input_length} padded to {padded_input}; use >= {padded_input} (or leave it unset)"
        )


def check_model_limits(
    max_input_length: int,
    max_target_length: int,
    pad_to_multiple_of: int,
    max_encoder_positions: int | None,
    max_decoder_positions: int | None,
) -> None:
    """Inputs (padded to the attention window) and targets must fit the model's position tables."""
    if max_encoder_positions is not None:
        padded = _round_up(max_input_length, pad_to_multiple_of)
        if max_input_length > max_encoder_positions:
            raise DataError(
                f"data.max_input_length={max_input_length} exceeds the model's {max_encoder_positions} encoder "
                f"positions (max_encoder_position_embeddings); set data.max_input_length<={max_encoder_positions}"
            )
        if padded > max_encoder_positions:
            fits = max_encoder_positions // pad_to_multiple_of * pad_to_multiple_of
            raise DataError(
                f"data.max_input_length={max_input_length} padded to a multiple of pad_to_multiple_of="
                f"{pad_to_multiple_of} is {padded} tokens, more than the model's {max_encoder_positions} encoder "
                f"positions; set data.max_input_length<={fits}"
            )
    if max_decoder_positions is not None and max_target_length > max_decoder_positions:
        raise DataError(
            f"data.max_target_length={max_target_length} exceeds the model's {max_decoder_positions} decoder "
            f"positions (max_decoder_position_embeddings); set data.max_target_length<={max_decoder_positions}"
        )


def check_vocab(tokenizer_vocab_size: int, model_vocab_size: int | None, tokenizer: str) -> None:
    if model_vocab_size is not None and tokenizer_vocab_size > model_vocab_size:
        raise DataError(
            f"tokenizer {tokenizer!r} has {tokenizer_vocab_size} tokens but the model's embeddings hold "
            f"{model_vocab_size} (model_vocab_size): ids >= {model_vocab_size} would index past the embedding "
            f"table; use the tokenizer the model was trained with, or a model with vocab_size>={tokenizer_vocab_size}"
        )


# ---------------------------------------------------------------------------------------------- files
def check_data_file(setting: str, file: str, where: str | None = None) -> Path:
    """The resolved path of a local data file, or a DataError that starts with `where` (default: the setting that
    names it, `train_file='data/train.jsonl'`)."""
    path = Path(file).expanduser()
    where = where or f"{setting}={file!r}"
    if path.is_dir():
        raise DataError(f"{where} is a directory; point it at one {VALID_EXTENSIONS} file")
    if not path.exists():
        shown = "" if str(path.absolute()) == file else f" (looked for {str(path.absolute())!r})"
        raise DataError(f"{where} does not exist{shown}")
    if path.suffix.lower() not in FILE_FORMATS:
        raise DataError(f"{where} has an unsupported extension {path.suffix or '(none)'!r}; valid: {VALID_EXTENSIONS}")
    if _is_blank(path):
        raise DataError(f"{where} is empty; it needs one record per line (or row)")
    return path.resolve()


def load_data_file(path: Path, where: str, fields: Sequence[str], cache_dir: Path | None = None,
                   split: str = "train") -> datasets.Dataset:
    """A local data file (checked by `check_data_file`) as a Dataset; a file the reader refuses is one DataError
    naming the line (see `explain_load_error`). `fields`: the text fields, named when their values are to blame."""
    fmt = FILE_FORMATS[path.suffix.lower()]
    # The reader logs the failure it raises (a second, rawer line on stderr): the DataError says it in one.
    reader_log = logging.getLogger(f"datasets.packaged_modules.{fmt}.{fmt}")
    silenced, reader_log.disabled = reader_log.disabled, True
    try:
        # the json/csv loaders convert to Arrow once, into cache_dir (default: the HF datasets cache)
        return datasets.load_dataset(fmt, data_files={split: str(path)}, split=split,
                                     cache_dir=None if cache_dir is None else str(cache_dir))
    except Exception as error:  # the readers raise many types (ArrowInvalid, UnicodeDecodeError, pandas ...)
        raise explain_load_error(path, where, error, fields) from error
    finally:
        reader_log.disabled = silenced


def _is_blank(path: Path) -> bool:
    """True for an empty file, or a text file of whitespace only (read until the first other byte)."""
    if path.suffix.lower() == ".parquet":
        return path.stat().st_size == 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            if block.strip():
                return False
    return True


def explain_load_error(path: Path, where: str, error: BaseException, fields: Sequence[str]) -> DataError:
    """The DataError for a file `datasets.load_dataset` could not read: the bad line where one can be found
    (undecodable, unparsable, or a value of `fields` that is not text: the JSON loader fails on mixed types)."""
    problem = _first_text_problem(path, fields)
    if problem:
        return DataError(f"{where}, {problem}")
    cause = error.__cause__ or error  # `datasets` wraps the reader's own error
    if "corresponds to no data" in str(cause):  # how `datasets` reports a file of zero records
        return DataError(f"{where} has no records")
    detail = (str(cause).strip().splitlines() or [""])[0]
    return DataError(f"{where} could not be read as {FILE_FORMATS[path.suffix.lower()]}: "
                     f"{type(cause).__name__}: {detail}")


def _first_text_problem(path: Path, fields: Sequence[str]) -> str | None:
    """The first undecodable (non UTF-8) or unparsable line of a jsonl/json/csv file, or the first JSON record
    whose `fields` hold something other than text: "line N: what is wrong"."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return None
    json_lines = suffix == ".jsonl" or (suffix == ".json" and not _starts_with(path, b"["))
    with open(path, "rb") as handle:
        for line_no, line in enumerate(handle, 1):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as error:
                return (f"line {line_no}: not valid UTF-8 (byte {line[error.start:error.start + 1]!r} at column "
                        f"{error.start + 1}); save the file as UTF-8")
            if json_lines and text.strip():
                problem = _json_line_problem(text, fields)
                if problem:
                    return f"line {line_no}: {problem}"
    if suffix == ".json" and not json_lines:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            return f"line {error.lineno}: not valid JSON ({error.msg} at column {error.colno})"
        for index, record in enumerate(document if isinstance(document, list) else []):
            problem = _record_problem(record, fields)
            if problem:
                return f"record {index}: {problem}"
    return None


def _json_line_problem(text: str, fields: Sequence[str]) -> str | None:
    try:
        record = json.loads(text.rstrip("\r\n"))  # with its newline, an unfinished line would fail at "column 1"
    except json.JSONDecodeError as error:
        return f"not valid JSON ({error.msg} at column {error.colno}): {_excerpt(text)}"
    return _record_problem(record, fields)


def _record_problem(record: Any, fields: Sequence[str]) -> str | None:
    if not isinstance(record, dict):
        return f"not a JSON object with fields but {_describe(record)}"
    for name in fields:
        if name in record and not isinstance(record[name], str):
            return f"field {name!r} holds {_describe(record[name])}; expected text (a string)"
    return None


def _starts_with(path: Path, prefix: bytes) -> bool:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            if block.strip():
                return block.lstrip().startswith(prefix)
    return False


def record_locator(path: Path | None) -> Callable[[int], str]:
    """row -> where that record is: "line N" of a jsonl/csv file (found by reading it again), else "record N"."""

    def locate(row: int) -> str:
        if path is not None:
            for index, line_no in enumerate(_record_lines(path)):
                if index == row:
                    return f"line {line_no}"
        return f"record {row}"

    return locate


def _record_lines(path: Path) -> Iterator[int]:
    """The (1-based) line where each record of a jsonl or csv file starts; nothing for other formats."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl" or (suffix == ".json" and not _starts_with(path, b"[")):
        with open(path, encoding="utf-8", errors="replace") as handle:
            yield from (line_no for line_no, line in enumerate(handle, 1) if line.strip())  # loaders skip blanks
    elif suffix == ".csv":
        with open(path, encoding="utf-8", errors="replace", newline="") as handle:
            reader = csv.reader(handle)
            end = 0
            for row_number, row in enumerate(reader):
                start, end = end + 1, reader.line_num
                if row_number > 0 and row:  # the header, and blank lines, are not records
                    yield start


# ---------------------------------------------------------------------------------------------- records
def check_fields(
    dataset: datasets.Dataset,
    fields: Sequence[str],
    where: str,
    settings: Sequence[str] = ("source_field", "summary_field"),
    prefix: str = "",
    hint: str | None = None,
) -> None:
    """Raise a DataError naming the first missing field, the fields that exist and the setting to change
    (`prefix` + setting, e.g. "data.source_field" in the training config), or `hint` where no setting names them."""
    for name, setting in zip(fields, settings):
        if name not in dataset.column_names:
            raise DataError(
                f"{where} has no field {name!r}; fields present: {dataset.column_names}. "
                f"{hint or f'Set {prefix}{setting}= to one of them'}"
            )


def check_split(dataset: datasets.Dataset, fields: Sequence[str], where: str, path: Path | None, *,
                prefix: str = "data.", hint: str | None = None) -> list[int]:
    """Every check of a loaded split, in the order a user meets them: no records, a missing field, then the first
    null, non-text or undecodable value (`check_records`). Returns the rows whose text is blank, for the caller's
    policy (`check_blank_records`). `path`: the file it was read from (None for a Hub split), to name lines."""
    if len(dataset) == 0:
        raise DataError(f"{where} has no records")
    check_fields(dataset, fields, where, prefix=prefix, hint=hint)
    # CSV has no null: an empty cell loads as one, and means empty text.
    null_is_empty = path is not None and path.suffix.lower() == ".csv"
    return check_records(dataset, fields, where, record_locator(path), null_is_empty=null_is_empty)


def check_blank_records(blank: Sequence[int], total: int, fields: Sequence[str], where: str, path: Path | None,
                        strict: bool) -> None:
    """Blank records (rows from `check_split`) are skipped, unless `strict` or all `total` records are blank."""
    if blank and (strict or len(blank) == total):
        raise empty_records_error(where, fields, len(blank), total, record_locator(path)(blank[0]))


def check_records(
    dataset: datasets.Dataset,
    fields: Sequence[str],
    where: str,
    locate: Callable[[int], str],
    null_is_empty: bool = False,
) -> list[int]:
    """Raise a DataError at the first null or non-text value of `fields`; return the rows (ascending) where
    any of them is empty or whitespace-only. `null_is_empty`: CSV has no null, an empty cell loads as one."""
    for name in fields:
        if not _is_text(dataset.features[name]):
            row, value = _first_non_text(dataset, name)
            raise DataError(
                f"{where}, {locate(row)}: field {name!r} holds {_describe(value)}; expected text (a string)"
            )
    blank = np.zeros(len(dataset), dtype=bool)
    offset = 0
    for table in dataset.select_columns(list(fields)).with_format("arrow").iter(batch_size=10_000):
        for name in fields:
            column = table.column(name)
            if column.null_count and not null_is_empty:
                row = offset + int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
                raise DataError(f"{where}, {locate(row)}: field {name!r} is null or missing; expected text (a string)")
            invalid = _first_invalid_utf8(column)  # the JSON reader lets some invalid bytes through
            if invalid is not None:
                raise DataError(f"{where}, {locate(offset + invalid)}: field {name!r} is not valid UTF-8; "
                                "save the file as UTF-8")
            blank[offset : offset + len(column)] |= _blank_mask(column)
        offset += table.num_rows
    return np.flatnonzero(blank).tolist()


def _first_invalid_utf8(column: pa.ChunkedArray) -> int | None:
    try:
        column.validate(full=True)  # checks UTF-8 in C++; rows are decoded in Python only after a failure
        return None
    except pa.ArrowInvalid:
        for row, value in enumerate(column):
            try:
                value.as_py()
            except UnicodeDecodeError:
                return row
        raise


def _blank_mask(column: pa.ChunkedArray) -> np.ndarray:
    """True where the text is empty, whitespace-only or null."""
    empty = pc.or_kleene(pc.equal(pc.utf8_length(column), 0), pc.utf8_is_space(column))
    return pc.fill_null(empty, True).to_numpy(zero_copy_only=False)


def _is_text(feature: Any) -> bool:
    return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")


def _first_non_text(dataset: datasets.Dataset, name: str) -> tuple[int, Any]:
    offset = 0
    for batch in dataset.select_columns([name]).iter(batch_size=1000):
        for index, value in enumerate(batch[name]):
            if not isinstance(value, str):
                return offset + index, value
        offset += len(batch[name])
    raise AssertionError(f"column {name!r} has a non-text type but only text values")  # cannot happen


def _describe(value: Any) -> str:
    """A JSON value as a user wrote it: `a number (5)`, `null`, `a list ([1, 2])`."""
    if value is None:
        return "null"
    kind = {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}.get(
        type(value), f"a {type(value).__name__}"
    )
    shown = json.dumps(value) if isinstance(value, (bool, int, float, list, dict)) else repr(value)
    return f"{kind} ({_shorten(shown)})"


def _excerpt(text: str) -> str:
    return repr(_shorten(text))


def _shorten(text: str, width: int = 60) -> str:
    text = text.strip()
    return text if len(text) <= width else text[: width - 1] + "…"


def empty_records_error(where: str, fields: Sequence[str], skipped: int, total: int, first: str) -> DataError:
    named = " or ".join(repr(f) for f in fields)
    if skipped == total:
        return DataError(f"{where}: all {total} records have an empty or whitespace-only {named}; nothing is left "
                         f"to use (first at {first})")
    return DataError(f"{where}: {skipped} of {total} records have an empty or whitespace-only {named} (first at "
                     f"{first}); fill or remove them, or set data.strict=false to skip them")


# ---------------------------------------------------------------------------------------------- the Hub
def hub_error(name: str, config_name: str | None, split: str | None, error: BaseException) -> DataError:
    """A Hub dataset that could not be loaded (`split` None: any of its splits): why, and how to train from local
    files instead."""
    if isinstance(error, OSError):  # ConnectionError, OfflineModeIsEnabled, DatasetNotFoundError, HTTP errors
        offline = " (offline mode is on: HF_HUB_OFFLINE/HF_DATASETS_OFFLINE)" if datasets.config.HF_HUB_OFFLINE else ""
        reason = f"the Hub could not be reached{offline} or the dataset is unknown, and it is not in the local cache"
    else:
        reason = "it could not be loaded"
    what = f"split {split!r} of Hub dataset {name!r}" if split else f"Hub dataset {name!r}"
    return DataError(
        f"{what}: {reason} ({_first_line(error)}). Point at local files instead: {LOCAL_DATA_HINT}, or run "
        f"`{_prepare_command(name, config_name)}` on a machine with internet (see led/prepare.py) and set "
        "data.source=DIR"
    )


def script_dataset_error(name: str, config_name: str | None, script_error: BaseException,
                         export_error: BaseException) -> DataError:
    """A loading-script dataset (refused by `datasets` >= 4) whose parquet export on the Hub could not be loaded
    either: `datasets` < 4 still runs the script, so led.prepare run with it writes a directory training can use."""
    config = f" (config_name={config_name})" if config_name else ""
    return DataError(
        f"Hub dataset {name!r}{config} is a loading script ({_first_line(script_error)}), which datasets "
        f"{datasets.__version__} no longer runs, and the Hub's parquet export of it could not be loaded either "
        f"({_first_line(export_error)}). Write it to a directory once with `HF_DATASETS_TRUST_REMOTE_CODE=1 "
        f"{_prepare_command(name, config_name)}` in an environment with internet and `pip install 'datasets<4'` "
        f"(which still runs loading scripts), then set data.source=DIR; or point at local files: {LOCAL_DATA_HINT}"
    )


def _prepare_command(name: str, config_name: str | None) -> str:
    config = f" config_name={config_name}" if config_name else ""
    return f"python -m led.prepare dataset={name}{config} out=DIR"


def _first_line(error: BaseException) -> str:
    """`Type: first line of the message`: library messages run over several lines (tracebacks, URLs, hints)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple

