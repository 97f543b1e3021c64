"""A local directory or a Hugging Face Hub id: one rule for every loader (models, tokenizers, data).

A Hub id is `name` or `owner/name`; anything rooted (`/`, `~`), relative-dotted (`.`, `..`) or with more than
one `/` is a local path, so a mistyped directory is reported as missing instead of being looked up on the Hub.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from led.errors import CheckpointError


class HubDownloadError(CheckpointError, OSError):
    """A Hub id that could not be downloaded (no network, no such repository, gated, offline mode)."""


def looks_like_local_path(name: str | os.PathLike) -> bool:
    """Whether `name` can only be a local path (never a Hub id), whether or not it exists."""
    name = str(name)
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep in name.replace("/", "")


def resolve_model_dir(path_or_hub_id: str | os.PathLike, patterns: Sequence[str], what: str = "checkpoint",
                      contents: str = "config.json and the weights") -> Path:
    """A local directory as it is; otherwise the files of Hub id `path_or_hub_id` that match `patterns`
    (glob patterns), downloaded once into the Hub cache, and their local snapshot directory.

    `what` names the thing in error messages, `contents` what its directory must hold.
    """
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path} is a file: pass the {what} directory that holds {contents}")
    name = str(path_or_hub_id)
    if looks_like_local_path(name):
        raise CheckpointError(f"{what.capitalize()} directory {name} does not exist: give a directory that holds "
                              f"{contents}, or a Hub id such as 'allenai/led-base-16384'")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=list(patterns)))
    except Exception as e:  # noqa: BLE001 - any Hub failure becomes one actionable message
        raise HubDownloadError(
            f"{name!r} is not a local directory and its {what} could not be downloaded from the Hugging Face Hub "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). On a machine with internet run "
            f"`huggingface-cli download {name} --local-dir DIR` and pass that local directory DIR instead"
        ) from None
