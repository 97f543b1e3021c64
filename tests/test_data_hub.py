"""Hub datasets as they are (led.data.sources.load_hub_dataset, used by the DataModule and `led.prepare`): a loading-
script dataset, which `datasets` >= 4 refuses, is read from the Hub's parquet export; every failure is one DataError
line. `datasets.load_dataset` is faked: nothing touches the network."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import datasets
import pytest
from huggingface_hub.utils import OfflineModeIsEnabled  # also where huggingface_hub has no .errors module

import led.data.sources
from led.data.sources import PARQUET_EXPORT, RawSource
from led.errors import DataError
from led.prepare import load_splits
from led.prepare import main as prepare_main

SCRIPT_ERROR = RuntimeError("Dataset scripts are no longer supported, but found scientific_papers.py")
RECORDS = {split: [{"article": f"{split} article {i}", "abstract": f"{split} abstract {i}"} for i in range(3)]
           for split in ("train", "validation", "test")}


class FakeHub:
    """Stands in for `datasets.load_dataset`: the plain load raises `first`; the parquet export (revision
    refs/convert/parquet) raises `export`, or returns RECORDS when it is None. Records every call's arguments."""

    def __init__(self, first: BaseException, export: BaseException | None = None) -> None:
        self.first, self.export, self.calls = first, export, []

    def __call__(self, path: str, name: str | None = None, **kwargs: Any) -> Any:
        self.calls.append({"path": path, "name": name, **kwargs})
        if kwargs.get("revision") != PARQUET_EXPORT:
            raise self.first
        if self.export is not None:
            raise self.export
        loaded = datasets.DatasetDict({split: datasets.Dataset.from_list(rows) for split, rows in RECORDS.items()})
        return loaded[kwargs["split"]] if kwargs.get("split") else loaded


def fake_hub(monkeypatch: pytest.MonkeyPatch, first: BaseException, export: BaseException | None = None) -> FakeHub:
    hub = FakeHub(first, export)
    monkeypatch.setattr(datasets, "load_dataset", hub)
    return hub


def test_a_loading_script_dataset_is_read_from_the_parquet_export(monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    hub = fake_hub(monkeypatch, SCRIPT_ERROR)
    source = RawSource.resolve("scientific_papers", "arxiv")
    with caplog.at_level(logging.INFO, logger=led.data.sources.__name__):
        train = source.load("train", Path("unused"))
    assert train.to_list() == RECORDS["train"]
    # The same dataset, then its export: the config is the export's folder (it has no card naming configs).
    assert hub.calls == [{"path": "scientific_papers", "name": "arxiv", "split": "train"},
                         {"path": "scientific_papers", "name": None, "split": "train", "revision": PARQUET_EXPORT,
                          "data_dir": "arxiv"}]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert warnings[0].startswith("Hub dataset 'scientific_papers' (arxiv) is a loading script, which datasets ")
    assert f"parquet export of it instead (revision {PARQUET_EXPORT}, folder arxiv)" in warnings[0]

    # led.prepare loads every split through the same function.
    hub.calls.clear()
    splits = load_splits("scientific_papers", "arxiv", ["train", "test"])
    assert {split: d.to_list() for split, d in splits.items()} == {s: RECORDS[s] for s in ("train", "test")}
    assert [call.get("revision") for call in hub.calls] == [None, PARQUET_EXPORT]


@pytest.mark.parametrize("export_error", [FileNotFoundError("Revision 'refs/convert/parquet' not found"),
                                          ValueError("no data files found\nin 3 lines\nof detail")])
def test_no_parquet_export_either_is_one_line_naming_the_dataset_cause_and_led_prepare(
        monkeypatch: pytest.MonkeyPatch, export_error: BaseException) -> None:
    fake_hub(monkeypatch, SCRIPT_ERROR, export_error)
    with pytest.raises(DataError) as caught:
        RawSource.resolve("scientific_papers", "pubmed").load("validation", Path("unused"))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("Hub dataset 'scientific_papers' (config_name=pubmed) is a loading script "
                              "(RuntimeError: Dataset scripts are no longer supported, but found scientific_papers.py)")
    assert f"parquet export of it could not be loaded either ({type(export_error).__name__}: " \
           f"{str(export_error).splitlines()[0]})" in message
    assert "`HF_DATASETS_TRUST_REMOTE_CODE=1 python -m led.prepare dataset=scientific_papers config_name=pubmed " \
           "out=DIR`" in message
    assert "'datasets<4'" in message and "data.source=DIR" in message


@pytest.mark.parametrize("error", [
    ConnectionError("Couldn't reach 'ccdv/pubmed-summarization' on the Hub (OfflineModeIsEnabled)"),
    OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled."),
    KeyError("'article'"),  # whatever else the library raises is one line too
])
def test_offline_or_any_other_failure_is_one_line_without_trying_the_export(
        monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    hub = fake_hub(monkeypatch, error)
    with pytest.raises(DataError) as caught:
        RawSource.resolve("ccdv/pubmed-summarization").load("train", Path("unused"))
    message = str(caught.value)
    assert "\n" not in message and len(hub.calls) == 1  # not a loading script: no second attempt
    assert message.startswith(f"split 'train' of Hub dataset 'ccdv/pubmed-summarization': ")
    reason = "the Hub could not be reached" if isinstance(error, OSError) else "it could not be loaded"
    assert reason in message and f"({type(error).__name__}: " in message
    assert "run `python -m led.prepare dataset=ccdv/pubmed-summarization out=DIR` on a machine with internet" in message


def test_prepare_prints_a_failed_hub_load_as_one_line(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    fake_hub(monkeypatch, ConnectionError("Couldn't reach 'scientific_papers' on the Hub (ConnectError)"))
    with pytest.raises(SystemExit) as exit_info:
        prepare_main(["dataset=scientific_papers", "config_name=arxiv", f"out={tmp_path / 'out'}"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("led.prepare: error: Hub dataset 'scientific_papers': the Hub could not be reached")
    assert "\n" not in error and not (tmp_path / "out").exists()
