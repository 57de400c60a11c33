"""Each model judged as it runs: its decisions on the cracked copies and on the clean scans.

The same steps as the pipeline's ``decide`` rule (``anodect.decisions``): the
model's evidence flagged at its operating threshold, boxes linked across slices,
cracks confirmed by the slice rule. A rendered crack is *hit* when a confirmed crack
of its ROI has a box, in a slice of the rendered crack's span, that covers a pixel of
its footprint. A confirmed crack on a clean scan is a false call, and so is one on a
copy that covers no rendered footprint (counted apart: it shares its scan with cracks).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..batches import scan_file
from ..crops import CropSet
from ..decisions import DecisionSettings, decide, evidence_file, read_evidence
from ..io import load_arrays

log = logging.getLogger(__name__)

HIT_COLUMNS = ["model", "crack_id", "hit", "crack_ids"]


def decide_copy(model: str, scan_id: str, evidence_path: str | Path, crops_path: str | Path,
                settings: DecisionSettings):
    """One scan's decision (``decisions.ScanDecision``), its judged crops and its flagged crops."""
    meta = CropSet.read_meta(crops_path)
    observed = [int(i) for i in meta["slice_indices"]]
    evidence = read_evidence(model, evidence_path, settings)
    boxes = evidence.flagged(settings)
    if observed and not evidence.judged(settings):
        observed = []
    observed = evidence.judged_slices(settings, observed)
    decision = decide(model, {"scan_id": scan_id}, boxes, observed, {}, settings.tracking)
    flagged_crops = boxes[["slice_index", "roi"]].drop_duplicates().shape[0] if len(boxes) else 0
    return decision, len(observed) * len(meta["roi_names"]), flagged_crops


def _covers(detections: pd.DataFrame, footprint: np.ndarray, crop_set_meta: dict, roi_index: int,
            first_pos: int, last_pos: int) -> bool:
    """Whether any of ``detections`` (full-slice boxes of one ROI) covers a footprint pixel in its slice."""
    from ..crops import crop_origin

    ox, oy = crop_origin(crop_set_meta["roi_boxes"][roi_index], int(crop_set_meta["context"]))
    position = {int(s): k for k, s in enumerate(crop_set_meta["slice_indices"])}
    for d in detections.itertuples():
        k = position.get(int(d.slice_index))
        if k is None or not first_pos <= k <= last_pos:
            continue
        mask = footprint[k]
        h, w = mask.shape
        x1, y1 = max(int(np.floor(d.x1 - ox)), 0), max(int(np.floor(d.y1 - oy)), 0)
        x2, y2 = min(int(np.ceil(d.x2 - ox)), w), min(int(np.ceil(d.y2 - oy)), h)
        if x2 > x1 and y2 > y1 and mask[y1:y2, x1:x2].any():
            return True
    return False


def judge(model: str, cracks: pd.DataFrame, clean: dict[str, tuple[str, str]], evidence_dir: str | Path,
          crops_dir: str | Path, footprint_dir: str | Path, settings: DecisionSettings) -> tuple[pd.DataFrame, dict]:
    """Hit or miss for every rendered crack, and the false calls.

    Args:
        clean: each clean scan's evidence file and crops file: the run's own (the same model
            on the same crops), so the study neither copies nor scores them again.
        evidence_dir: the copies' evidence; ``crops_dir``: the copies' crops.

    Returns:
        the hit table (``HIT_COLUMNS``) and the false calls: per clean cell (NG or not)
        and per crop (flagged or not) on the clean scans, and the confirmed cracks on
        the copies that cover no rendered crack.
    """
    rows = []
    copy_false = 0
    for copy_id, group in cracks.groupby("copy_id", sort=True):
        crops_path = scan_file(crops_dir, copy_id, "crops")
        decision, _, _ = decide_copy(model, copy_id, evidence_file(model, evidence_dir, copy_id), crops_path, settings)
        meta = CropSet.read_meta(crops_path)
        footprint = load_arrays(Path(footprint_dir) / f"{copy_id}.npz")["footprint"]
        confirmed = decision.detections[decision.detections["crack_id"] != ""]
        covering = set()
        for crack in group.sort_values("crack_id").itertuples():
            own = footprint[:, crack.roi_index] == _number(crack.crack_id, group)
            found = []
            for crack_id, dets in confirmed[confirmed["roi"].astype(str) == str(crack.roi)].groupby("crack_id"):
                if _covers(dets, own, meta, crack.roi_index, crack.first_pos, crack.last_pos):
                    found.append(crack_id)
            covering.update(found)
            rows.append({"model": model, "crack_id": crack.crack_id, "hit": bool(found), "crack_ids": ";".join(found)})
        copy_false += len(set(decision.cracks["crack_id"]) - covering)
    cells, crops, flagged = [], 0, 0
    for scan_id, (evidence_path, crops_path) in clean.items():
        decision, n_crops, n_flagged = decide_copy(model, scan_id, evidence_path, crops_path, settings)
        cells.append({"scan_id": scan_id, "ng": bool(len(decision.cracks)), "false_cracks": len(decision.cracks),
                      "crops": n_crops, "flagged_crops": n_flagged})
        crops += n_crops
        flagged += n_flagged
    hits = pd.DataFrame(rows, columns=HIT_COLUMNS)
    false_calls = {"model": model, "threshold": settings.threshold, "evidence": settings.evidence,
                   "cells": cells, "n_cells": len(cells), "ng_cells": sum(c["ng"] for c in cells),
                   "crops": crops, "flagged_crops": flagged, "copy_false_cracks": copy_false,
                   "copies": int(cracks["copy_id"].nunique())}
    log.info("%s: %d of %d rendered cracks hit; %d of %d clean cells NG, %d of %d clean crops flagged; %d false "
             "cracks on the copies", model, int(hits["hit"].sum()), len(hits), false_calls["ng_cells"], len(cells),
             flagged, crops, copy_false)
    return hits, false_calls


def _number(crack_id: str, group: pd.DataFrame) -> int:
    """A crack's value in its copy's footprint (its place among the copy's cracks, plus one)."""
    return list(group["crack_id"]).index(crack_id) + 1


__all__ = ["HIT_COLUMNS", "decide_copy", "judge"]
