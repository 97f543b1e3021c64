"""Write report.html into a training run, evaluation or sweep directory: the curves, metrics, settings and samples
of a run; ROUGE by source length, lengths and examples of an evaluation; the objective against each swept setting.

`python -m led.report outputs/train/RUN` (or `path=DIR`). The page is one file with its charts inside: it opens
from disk, with no network.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from omegaconf import MISSING

from led.cli import run
from led.report import write_report


@dataclass
class ReportSettings:
    path: str = MISSING  # a training run, evaluation or sweep directory


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    # A bare directory is the path: `python -m led.report DIR` as one would type it.
    args = [arg if "=" in arg or arg.startswith("-") or arg == "help" else f"path={arg}" for arg in args]
    path = run("led.report", __doc__ or "", ReportSettings, lambda settings: write_report(settings.path), args)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
