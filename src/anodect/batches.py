"""Batches: which scans one job of each per-scan stage handles.

Snakemake plans at about 2 ms per job and every job pays Python's start-up, the
imports and the model load (about 3 s) whatever the scan's size. At thousands of
scans one job per scan and stage is minutes of planning and a large share of the
scoring time, so each stage's job handles a batch of scans and writes one file per
scan into its batch's folder.

A batch holds scans of one role only, so the crops of a batch of scans to inspect
are exactly the input of that batch's scoring, prediction and decision jobs.

Scans go to batches by a hash of their id with linear hashing (Litwin 1980): the
number of batches is ``ceil(scans / scans_per_job)``, and when it grows by one only
one existing batch is split. A scan added to a run therefore changes its own batch
and, when it raises the number of batches, the one batch split in two (and the new
half); every other batch keeps its scans and its results. Sizes vary around
``scans_per_job`` (up to about twice it).

Plain Python: the workflow computes the batches while planning.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from pathlib import Path

# Batch ids: the role and a number, or, with one scan per job, the scan's own id.
# ({4}[0-9]* rather than {4,}: Snakemake's wildcard parser takes no open-ended repeat.)
BATCH_PATTERN = r"(?:train_normal|train_defect|inspect)-[0-9]{4}[0-9]*"


def n_batches(n_scans: int, scans_per_job: int) -> int:
    """How many batches ``n_scans`` scans of one role make."""
    return max(1, math.ceil(n_scans / scans_per_job))


def bucket(scan_id: str, n: int) -> int:
    """The batch number (0..n-1) of a scan among ``n`` batches, by linear hashing."""
    h = int.from_bytes(hashlib.sha256(scan_id.encode("utf-8")).digest()[:8], "big")
    level = 1 << (n.bit_length() - 1)  # the largest power of two <= n
    b = h % (2 * level)
    return b if b < n else h % level


def assign(sheet: list[dict], scans_per_job: int) -> dict[str, str]:
    """scan id -> batch id for every scan of a sample sheet.

    Args:
        sheet: sample-sheet rows (``scan_id`` and ``role`` are used).
        scans_per_job: the mean number of scans a job handles; 1 gives every scan a
            batch of its own, named after it (one job per scan and stage).
    """
    if scans_per_job < 1:
        raise ValueError(f"scans_per_job must be at least 1, got {scans_per_job}")
    by_role: dict[str, list[str]] = {}
    for row in sheet:
        by_role.setdefault(row["role"], []).append(row["scan_id"])
    out = {}
    for role, ids in by_role.items():
        if scans_per_job == 1:
            out.update({s: s for s in ids})
            continue
        n = n_batches(len(ids), scans_per_job)
        out.update({s: f"{role}-{bucket(s, n):04d}" for s in ids})
    return out


def members(sheet: list[dict], scans_per_job: int) -> dict[str, list[dict]]:
    """batch id -> its scans' sheet rows, batches sorted, scans in sheet order."""
    batch_of = assign(sheet, scans_per_job)
    groups: dict[str, list[dict]] = {}
    for row in sheet:
        groups.setdefault(batch_of[row["scan_id"]], []).append(row)
    return dict(sorted(groups.items()))


# The per-scan file of each kind of batch folder: the one path rule the workflow's
# planner and the jobs that write the files share. A model's evidence folder is of
# the kind ``registry.EVIDENCE_FOLDER`` names for its evidence.
SUFFIX = {"crops": ".npz", "qc": ".tsv", "scores": ".npz", "predictions": ".csv"}


def scan_file(folder: str | Path, scan_id: str, kind: str) -> Path:
    """A scan's file of one kind (a key of ``SUFFIX``) in its batch folder."""
    return Path(folder) / f"{scan_id}{SUFFIX[kind]}"


@contextlib.contextmanager
def scan_context(scan_id: str):
    """Name the scan in any error raised while a batch job works on it."""
    try:
        yield
    except Exception as exc:
        exc.add_note(f"(while processing scan {scan_id} of this job's batch)")
        raise
