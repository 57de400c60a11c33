"""What a finished (or failed) run leaves the user to look at, in a few lines of its own output.

Skipped slices, unread annotation files and NO DATA batteries are otherwise reported only in
job logs, ``qc.tsv`` and the report: a user who reads the terminal must see them too.
Snakemake's ``onsuccess``/``onerror`` print this; it reads only what the run wrote, and a
file that is not there (a run that stopped early) is left out, never an error.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

MAX_NAMED = 10


def _rows(path: Path, delimiter: str) -> list[dict]:
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh, delimiter=delimiter))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _named(items: list[str]) -> str:
    more = len(items) - MAX_NAMED
    return ", ".join(items[:MAX_NAMED]) + (f" and {more} more" if more > 0 else "")


def run_summary(results: str | Path, failed: bool = False) -> str:
    """A few lines: slices skipped, annotation files not read, NO DATA batteries, where to look.

    Args:
        results: the run's ``output_inference_dir``.
        failed: the run stopped with an error (Snakemake's ``onerror``).
    """
    results = Path(results)
    lines = [f"anodect: the run {'stopped with an error' if failed else 'finished'}; results in {results}"]
    qc = results / "qc.tsv"
    skipped = [r for r in _rows(qc, "\t") if r.get("status") not in (None, "", "ok")]
    if skipped:
        lines.append(f"  {len(skipped)} slice(s) skipped: "
                     + _named([f"{Path(r['path']).name} ({r.get('reason') or r['status']})" for r in skipped])
                     + f" (all in {qc})")
    unread = []
    metrics = _json(results / "report" / "metrics.json")
    for note in (metrics.get("truth") or {}).get("notes", []):
        if note.startswith(("annotation file not read", "truth unreadable")):
            unread.append(note)
    for dataset in sorted(results.glob("*/dataset/dataset.json")):  # a model's training set, if it built one
        for rejected in (_json(dataset).get("annotations") or {}).get("rejected_files", []):
            unread.append(f"training annotation file not read: {rejected}")
    if unread:
        lines.append(f"  {len(unread)} annotation problem(s): " + _named(unread))
    no_data = []
    for row in _rows(results / "tables" / "batteries.csv", ","):
        models = [k[:-len("_verdict")] for k, v in row.items() if k.endswith("_verdict") and v == "NO DATA"]
        if models:
            no_data.append(f"{row.get('battery_id', row.get('scan_id'))} ({', '.join(models)})")
    if no_data:
        lines.append(f"  {len(no_data)} battery(ies) NO DATA (never judged, not OK): " + _named(no_data))
    report = results / "report" / "comparison.html"
    if qc.is_file():
        lines.append(f"  slices checked: {qc}")
    if report.is_file():
        lines.append(f"  report: {report}")
    return "\n".join(lines)


__all__ = ["run_summary"]
