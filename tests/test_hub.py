"""led.models.hub: one rule for "local directory or Hub id", used by the model and tokenizer loaders."""

from __future__ import annotations

from pathlib import Path

import pytest

from led import LEDForConditionalGeneration
from led.errors import UserError
from led.models.hub import HubDownloadError, looks_like_local_path, resolve_model_dir


@pytest.mark.parametrize("name, local", [
    ("allenai/led-base-16384", False), ("t5-small", False),
    ("/abs/dir", True), ("./dir", True), ("../dir", True), ("~/dir", True), ("runs/exp/model", True),
])
def test_what_looks_like_a_local_path(name: str, local: bool) -> None:
    assert looks_like_local_path(name) is local


def test_local_directories_files_and_missing_paths(tmp_path: Path) -> None:
    assert resolve_model_dir(tmp_path, ["config.json"]) == tmp_path
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="is a file: pass the checkpoint directory"):
        resolve_model_dir(tmp_path / "config.json", ["config.json"])
    with pytest.raises(ValueError, match="Tokenizer directory .* does not exist"):
        resolve_model_dir(tmp_path / "nowhere", ["tokenizer.json"], what="tokenizer")


def test_hub_failure_is_one_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def offline(*args: object, **kwargs: object) -> str:
        raise ConnectionError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(HubDownloadError, match="huggingface-cli download allenai/led-base-16384") as info:
        LEDForConditionalGeneration.from_pretrained("allenai/led-base-16384")
    # Callers that catch OSError (a download) or ValueError (a bad checkpoint) both see it.
    assert isinstance(info.value, OSError) and isinstance(info.value, ValueError)
    assert isinstance(info.value, UserError) and "ConnectionError: no network" in str(info.value)
