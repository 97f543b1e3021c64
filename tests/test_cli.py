"""`python -m led.export / led.prepare / led.memory --help` (led/cli.py): every setting with its default, as typed on
the command line, and the README lists the same settings."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from led.export import ExportConfig
from led.export import main as export_main
from led.memory.__main__ import MemoryArgs
from led.memory.__main__ import main as memory_main
from led.prepare import PrepareConfig
from led.prepare import main as prepare_main

ROOT = Path(__file__).resolve().parents[1]
TOOLS = {"led.export": (export_main, ExportConfig), "led.prepare": (prepare_main, PrepareConfig),
         "led.memory": (memory_main, MemoryArgs)}


@pytest.mark.parametrize("tool", list(TOOLS))
def test_help_lists_every_setting_and_the_readme_the_same(tool: str, capsys: pytest.CaptureFixture) -> None:
    main, schema = TOOLS[tool]
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    keys = [field.name for field in dataclasses.fields(schema)]
    listed = re.search(r"keys \(defaults\): (.*)", printed)
    assert listed is not None, printed
    assert [item.split("=", 1)[0] for item in listed.group(1).split()] == keys
    if tool == "led.prepare":  # a list default, as it is typed: splits=[train,validation,test]
        assert "splits=[train,validation,test]" in listed.group(1) and "dataset=???" in listed.group(1)
    readme = (ROOT / "README.md").read_text()
    line = re.search(rf"^- `{re.escape(tool)}`: (.*(?:\n  .*)*)", readme, re.MULTILINE)
    assert line is not None, f"README lists no settings of {tool}"
    assert list(dict.fromkeys(re.findall(r"`(\w+)[=`]", line.group(1)))) == keys  # each in order, first mention
