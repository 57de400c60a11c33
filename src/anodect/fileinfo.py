"""Facts about files and processes in plain Python: a file's sha256, whether a process runs.

No numpy or pandas here: the config check (in Snakemake's own process, before any job) and
the run's lock use them as well as the jobs (``anodect.io``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def file_sha256(path: str | Path, limit: int | None = None) -> str:
    """Hex sha256 of a file (the first ``limit`` characters when given): model files are identified by it."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:limit] if limit else digest.hexdigest()


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (someone else's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["file_sha256", "process_alive"]
