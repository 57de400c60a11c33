"""One output folder, one run: a lock in ``output_inference_dir`` across working directories.

Snakemake locks a working directory (its ``.snakemake/``), not the outputs: two checkouts
pointed at one ``output_inference_dir`` replaced each other's batch folders mid-run, and
the victim failed with a misleading "filesystem latency" message. The run's main process
takes this lock when jobs start (Snakemake's ``onstart``) and drops it when the run ends.
A lock whose process is gone (a killed run) is taken over; one held by a live run from
another working directory stops this run with a message naming it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from .fileinfo import process_alive

LOCK = ".anodect-run.lock"
FOREIGN_STALE_S = 24 * 3600  # another host's process cannot be asked whether it still runs


class RunLockError(RuntimeError):
    """Another live run writes this output folder."""


def _host() -> str:
    return socket.gethostname()


def _holder(lock: Path) -> dict | None:
    try:
        return json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _live_other(holder: dict | None, lock: Path, workdir: str) -> bool:
    if not holder or holder.get("workdir") == workdir:
        return False  # unreadable, or this checkout's own (Snakemake locks a working directory itself)
    if holder.get("host") == _host():
        return process_alive(int(holder.get("pid", 0)))
    try:
        return time.time() - lock.stat().st_mtime < FOREIGN_STALE_S
    except OSError:
        return False


def acquire(results: str | Path, workdir: str | Path | None = None) -> Path:
    """Take the lock of ``results`` for this process.

    Raises:
        RunLockError: a live run from another working directory holds it (named in the message).
    """
    results = Path(results)
    workdir = str(Path(workdir or os.getcwd()).resolve())
    results.mkdir(parents=True, exist_ok=True)
    lock = results / LOCK
    holder = _holder(lock)
    if _live_other(holder, lock, workdir):
        raise RunLockError(
            f"{results.resolve()} is being written by another run: process {holder.get('pid')} on "
            f"{holder.get('host')}, working directory {holder.get('workdir')}, since {holder.get('started')}. "
            f"Wait for it to finish, or give this run another output_inference_dir. If that run is gone "
            f"for good, delete {lock}.")
    mine = {"host": _host(), "pid": os.getpid(), "workdir": workdir,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    tmp = lock.with_name(f"{LOCK}.{os.getpid()}")
    tmp.write_text(json.dumps(mine), encoding="utf-8")
    os.replace(tmp, lock)
    return lock


def release(results: str | Path) -> None:
    """Drop the lock of ``results`` if this process holds it."""
    lock = Path(results) / LOCK
    holder = _holder(lock)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == _host():
        lock.unlink(missing_ok=True)


__all__ = ["LOCK", "RunLockError", "acquire", "release"]
