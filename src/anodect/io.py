"""Atomic file output and safe array containers.

Every file the package writes goes to a temporary name in the destination folder
and is renamed into place, so a killed job never leaves a half-written result that
a later run (or Snakemake) would take for a finished one. The temporary's name
carries the writing process (host and pid), so the next job writing the same output
removes what a killed one left.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from .fileinfo import file_sha256, process_alive  # noqa: F401 - file_sha256 re-exported for the models


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


log = logging.getLogger(__name__)

_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname().split(".")[0]) or "host"
# Another host's leftover is removed only when this old: its process cannot be asked if it still runs.
FOREIGN_LEFTOVER_S = 24 * 3600


def _owner() -> str:
    return f"{_HOST}-{os.getpid()}"


def remove_leftovers(folder: Path, pattern: str) -> list[str]:
    """Remove the temporaries of one output that killed jobs left in ``folder``.

    ``pattern`` matches the output's temporary names, with groups ``host`` and ``pid``. A
    temporary of a process still running here is kept (that job is writing it), as is a
    recent one from another host. Returns the paths removed.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    compiled = re.compile(pattern)
    for entry in entries:
        m = compiled.fullmatch(entry.name)
        if not m:
            continue
        if m.group("host") == _HOST:
            if process_alive(int(m.group("pid"))):
                continue
        else:
            try:
                if time.time() - entry.stat(follow_symlinks=False).st_mtime < FOREIGN_LEFTOVER_S:
                    continue
            except OSError:
                continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
        log.warning("removed %s, left by a job that was killed while writing it", entry.path)
        removed.append(entry.path)
    return removed


_OWNER_RE = r"(?P<host>[A-Za-z0-9_-]+?)-(?P<pid>\d+)"


_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR}


def output_error(path: Path, exc: OSError) -> OSError:
    """An OSError that says what went wrong writing ``path`` in words a user can act on."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why = "no space left on the device (free some space and run again: finished outputs are kept)"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "the folder is not writable (check output_inference_dir and its permissions)"
    else:
        why = exc.strerror or str(exc)
    return OSError(exc.errno, f"cannot write {path}: {why}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    The temporary file keeps the final suffix so writers that choose a format by
    extension (tifffile, PIL, numpy) behave as for the final name.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(path.parent,
                         rf"\.{re.escape(path.stem)}\.{_OWNER_RE}\.[A-Za-z0-9_]+\.tmp{re.escape(path.suffix)}")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.{_owner()}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as exc:
        raise output_error(path, exc) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            # mkstemp makes the file private (0600); results are shared like any file the user makes.
            os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRORS:
            raise output_error(path, exc) from exc
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; it replaces ``path`` on success.

    For outputs that are whole folders (a dataset, a tree of images): a killed job
    leaves the previous folder or nothing, never half of a new one.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(path.parent, rf"\.{re.escape(path.name)}\.{_OWNER_RE}\.[A-Za-z0-9_]+")
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{_owner()}.", dir=path.parent))
    except OSError as exc:
        raise output_error(path, exc) from exc
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRORS:
            raise output_error(path, exc) from exc
        raise


def read_model_folder(folder: str | Path, files: tuple[str, ...], metadata: str, fmt: str, what: str) -> dict:
    """A saved model's metadata, once its files are there and its ``format`` is ``fmt``.

    Args:
        folder: the model's folder.
        files: the files it must hold besides ``metadata``.
        metadata: the metadata file's name (``registry.METADATA``).
        fmt: the format the loader reads.
        what: the model's name, for the errors.

    Raises:
        ValueError: a missing file or another format, naming the file.
    """
    folder = Path(folder)
    for path in (folder / metadata, *(folder / f for f in files)):
        if not path.is_file():
            raise ValueError(f"{path}: {what} model file missing (its folder holds {metadata}, {', '.join(files)})")
    meta_path = folder / metadata
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != fmt:
        raise ValueError(f"{meta_path}: format {meta.get('format')!r} is not {fmt!r} (not a {what} model this "
                         "version reads)")
    return meta


def package_versions(*names: str) -> dict:
    """Installed versions of the named distributions, for a model's metadata (None when absent,
    e.g. faiss-cpu on a machine with faiss-gpu)."""
    from importlib import metadata

    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def write_table(path: str | Path, df: pd.DataFrame) -> None:
    """Write a table as TSV (``.tsv``) or CSV (anything else), UTF-8, no index."""
    sep = "\t" if str(path).endswith(".tsv") else ","
    write_text(path, df.to_csv(sep=sep, index=False, lineterminator="\n"))


def read_table(path: str | Path) -> pd.DataFrame:
    sep = "\t" if str(path).endswith(".tsv") else ","
    return pd.read_csv(path, sep=sep, keep_default_na=False, na_values=[""])


def save_arrays(path: str | Path, **arrays: Any) -> None:
    """Save named arrays to an ``.npz`` file atomically; object arrays are refused.

    Strings are stored as fixed-width unicode arrays so the file loads with
    ``allow_pickle=False``.
    """
    clean = {}
    for key, value in arrays.items():
        arr = np.asarray(value)
        if arr.dtype == object:
            arr = arr.astype(str)
        clean[key] = arr
    buf = io.BytesIO()
    np.savez(buf, **clean)
    write_bytes(path, buf.getvalue())


def load_arrays(path: str | Path, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Load the arrays of an ``.npz`` file (all, or those of ``keys`` it has) without ever unpickling.

    Members are read on demand, so asking for a few small keys skips the big ones.
    """
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files if keys is None or key in keys}
