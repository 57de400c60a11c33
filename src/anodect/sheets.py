"""The sample sheet and slice list as the planner and the jobs read them.

The csv module, not pandas: the Snakefile reads the sheet while planning, and
planning must need nothing beyond Snakemake's own dependencies. Each file is read
once per version (its modification time).
"""

from __future__ import annotations

import csv
import functools
import os
from pathlib import Path

from . import batches

# The sample sheet's and slice list's integer columns; every other column is text
# (a battery named 001 stays "001").
_INT_COLUMNS = frozenset({"n_slices", "first_slice", "last_slice", "height", "width", "slice_index", "page"})


@functools.lru_cache(maxsize=8)
def _read_sheet(path: str, mtime: float) -> tuple[dict, ...]:
    # The csv module, not pandas: the Snakefile reads the sheet while planning, and
    # planning must need nothing beyond Snakemake's own dependencies.
    with open(path, newline="", encoding="utf-8") as fh:
        rows = csv.DictReader(fh, delimiter="\t")
        return tuple({k: int(v) if k in _INT_COLUMNS and v != "" else v for k, v in row.items()} for row in rows)


def read_sheet(path: str | Path) -> list[dict]:
    """The rows of a sample sheet (or slice list), read once per version of the file."""
    path = str(path)
    return list(_read_sheet(path, os.path.getmtime(path)))


def scan_ids(sheet: list[dict], role: str | None = None) -> list[str]:
    """Scan ids of the sample sheet, of one role or all, in sheet order."""
    return [r["scan_id"] for r in sheet if role is None or r["role"] == role]


def scan_record(sheet: list[dict], scan_id: str) -> dict:
    """One scan's row of the sample sheet."""
    for row in sheet:
        if row["scan_id"] == scan_id:
            return dict(row)
    raise KeyError(f"scan {scan_id!r} is not in the sample sheet")


_RECORD_KEYS = ("scan_id", "battery_id", "battery_path", "axis", "height", "width")


def scan_records(sheet: list[dict], role: str) -> list[dict]:
    """Ids and original names of one role's scans, for a model's metadata."""
    return [{k: r[k] for k in _RECORD_KEYS} for r in sheet if r["role"] == role]


@functools.lru_cache(maxsize=4)
def _batches(path: str, mtime: float, scans_per_job: int) -> tuple[dict[str, list[dict]], dict[str, str]]:
    groups = batches.members(list(_read_sheet(path, mtime)), scans_per_job)
    return groups, {r["scan_id"]: b for b, rows in groups.items() for r in rows}


def sheet_batches(path: str | Path, scans_per_job: int) -> dict[str, list[dict]]:
    """batch id -> its scans' sheet rows (see ``anodect.batches``), once per version of the sheet."""
    path = str(path)
    return _batches(path, os.path.getmtime(path), scans_per_job)[0]


def batch_of(path: str | Path, scans_per_job: int) -> dict[str, str]:
    """scan id -> its batch id, once per version of the sample sheet."""
    path = str(path)
    return _batches(path, os.path.getmtime(path), scans_per_job)[1]


@functools.lru_cache(maxsize=4)
def _slices_by_scan(path: str, mtime: float) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for row in _read_sheet(path, mtime):
        groups.setdefault(row["scan_id"], []).append(row)
    return groups


def scan_slices(slices_tsv: str | Path, scan_id: str):
    """The slice rows of one scan (a DataFrame); the table is grouped once, not once per job."""
    import pandas as pd  # jobs only: the crop and decision stages take a table; planning needs none

    path = str(slices_tsv)
    groups = _slices_by_scan(path, os.path.getmtime(path))
    if scan_id not in groups:
        raise KeyError(f"scan {scan_id!r} is not in {path}")
    return pd.DataFrame(groups[scan_id])
