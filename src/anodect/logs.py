"""Logging for pipeline scripts: everything, warnings and tracebacks included, goes to the job's log."""

from __future__ import annotations

import logging
import sys


def to_file(path: str | None, level: int = logging.INFO) -> None:
    """Send logging and stderr to ``path`` (Snakemake's ``log[0]``), or stderr when None."""
    if path:
        sys.stderr = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - lives with the job
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    logging.captureWarnings(True)
