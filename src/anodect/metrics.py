"""The metrics library: each model against ground truth at three levels, and models against each other.

Slice level: AUROC and AP of the slice score (the best crop score or box
confidence of the slice, thresholds not applied), precision/recall/F1 of the
decision at the configured threshold. Crack level: a confirmed crack matches a
true one when both lie in the same scan and ROI and their 3-D boxes (x, y,
slice) overlap; recall, false cracks per battery and the 3-D IoU of matches.
Battery level: confusion matrix, sensitivity and specificity of the NG verdict.
Box level: COCO AP of each model's boxes against the true per-slice boxes, by
pycocotools. scikit-learn computes every metric it has; only the 3-D matching
is ours.

A battery here is one inspected scan (a battery and axis), the unit every verdict
of the pipeline is given for.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import (average_precision_score, cohen_kappa_score, confusion_matrix, f1_score,
                             precision_score, recall_score, roc_auc_score)

log = logging.getLogger(__name__)

TRUTH_CRACK_COLUMNS = ["scan_id", "roi", "crack_id", "first_slice", "last_slice", "x1", "y1", "x2", "y2"]
TRUTH_BOX_COLUMNS = ["scan_id", "slice_index", "roi", "x1", "y1", "x2", "y2"]


@dataclass
class Truth:
    """Ground truth of the inspected scans: boxes as corners (``anodect.regions``), slice ranges inclusive."""

    slices: pd.DataFrame  # scan_id, slice_index, cracked (bool): every slice the truth covers
    boxes: pd.DataFrame  # TRUTH_BOX_COLUMNS: one row per true crack per slice
    cracks: pd.DataFrame  # TRUTH_CRACK_COLUMNS: one row per true crack
    source: str = ""
    notes: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # scans whose truth file could not be read

    def verdicts(self) -> pd.Series:
        """scan_id -> True when the scan has a crack."""
        ng = set(self.cracks["scan_id"])
        return pd.Series({s: s in ng for s in sorted(set(self.slices["scan_id"]))}, dtype=bool)

    def scan_ids(self) -> list[str]:
        return sorted(set(self.slices["scan_id"]))


def truth_from_tables(folder: str | Path, scans: list[dict], observed: dict[str, list[int]]) -> Truth:
    """The generator's truth tables (``slices.csv``, ``boxes.csv``, ``cracks.csv`` per battery).

    The tables name batteries, not scans: they apply to the scans of those batteries.
    Scans of batteries the tables do not list are left out of the evaluation.

    Args:
        folder: the folder of the three tables.
        scans: sample-sheet records of the inspected scans.
        observed: scan_id -> the slice indices the models saw.
    """
    folder = Path(folder)
    tables = {}
    for name in ("slices", "boxes", "cracks"):
        path = folder / f"{name}.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: truth table missing (a truth folder holds slices.csv, boxes.csv, "
                                    "cracks.csv)")
        tables[name] = pd.read_csv(path)
    listed = set(tables["slices"]["battery_id"])
    slice_rows, box_rows, crack_rows = [], [], []
    notes = []
    for scan in scans:
        sid, bid = scan["scan_id"], scan["battery_id"]
        if bid not in listed:
            notes.append(f"{sid}: battery {bid!r} is not in {folder / 'slices.csv'}; not evaluated")
            continue
        seen = set(observed.get(sid, []))
        rows = tables["slices"][tables["slices"]["battery_id"] == bid]
        for r in rows.itertuples():
            if int(r.slice_index) in seen:
                slice_rows.append({"scan_id": sid, "slice_index": int(r.slice_index), "cracked": r.n_cracks > 0})
        boxes = tables["boxes"][(tables["boxes"]["battery_id"] == bid) & tables["boxes"]["slice_index"].isin(seen)]
        for r in boxes.itertuples():
            box_rows.append({"scan_id": sid, "slice_index": int(r.slice_index), "roi": r.roi,
                             "x1": r.x1, "y1": r.y1, "x2": r.x2, "y2": r.y2})
        for r in tables["cracks"][tables["cracks"]["battery_id"] == bid].itertuples():
            inside = [s for s in seen if r.first_slice <= s <= r.last_slice]
            if inside:  # a crack wholly outside the inspected slices cannot be found
                crack_rows.append({"scan_id": sid, "roi": r.roi, "crack_id": r.crack_id,
                                   "first_slice": min(inside), "last_slice": max(inside),
                                   "x1": r.x1, "y1": r.y1, "x2": r.x2, "y2": r.y2})
    return _truth(slice_rows, box_rows, crack_rows, str(folder), notes)


def truth_from_annotations(files: list[Path], root: str | Path, scans: list[dict], crop_paths: dict[str, str],
                           link_margin: float = 2.0) -> Truth:
    """Ground truth from VIA or COCO polygons of the inspected scans.

    Polygons are placed on slices and ROIs as for training (``anodect.annotations``);
    a polygon outside every ROI is not truth the models could see and is counted in
    the notes. A true crack is the chain of boxes linked across consecutive slices,
    as cracks are tracked for the models. Every slice of every inspected scan counts as
    annotated: a scan without a polygon is a true OK battery.
    """
    from .crops import CropSet
    from .annotations import AnnotatedScan, place_annotations
    from .tracking import Detection, TrackingSettings, link

    annotated = [AnnotatedScan(s, CropSet.load(crop_paths[s["scan_id"]])) for s in scans]
    placed, report = place_annotations(files, root, annotated)
    crops_of = {s.record["scan_id"]: s.crops for s in annotated}
    # A scan whose annotation file could not be read has unknown truth: it is left out of the
    # metrics, never counted as a crack-free battery.
    unreadable = report.unreadable
    annotated = [s for s in annotated if s.record["scan_id"] not in unreadable]
    placed = [a for a in placed if a.scan_id not in unreadable]
    slice_rows, box_rows = [], []
    cracked: set[tuple[str, int]] = set()
    for a in placed:
        crops = crops_of[a.scan_id]
        dx, dy = crops.origin(a.roi)
        bx1, by1, bx2, by2 = a.box
        box_rows.append({"scan_id": a.scan_id, "slice_index": a.slice_index, "roi": str(crops.roi_names[a.roi]),
                         "x1": bx1 + dx, "y1": by1 + dy, "x2": bx2 + dx, "y2": by2 + dy})
        cracked.add((a.scan_id, a.slice_index))
    for s in annotated:
        for index in s.crops.slice_indices:
            slice_rows.append({"scan_id": s.record["scan_id"], "slice_index": int(index),
                               "cracked": (s.record["scan_id"], int(index)) in cracked})
    observed = {s.record["scan_id"]: [int(i) for i in s.crops.slice_indices] for s in annotated}
    dets = [Detection(b["scan_id"], b["roi"], b["slice_index"], b["x1"], b["y1"], b["x2"], b["y2"], 1.0)
            for b in box_rows]
    crack_rows = []
    for n, t in enumerate(link(dets, observed, TrackingSettings(1, 0, link_margin)), start=1):
        x1, y1, x2, y2 = t.box()
        crack_rows.append({"scan_id": t.scan_id, "roi": t.roi, "crack_id": f"truth{n}",
                           "first_slice": t.first_slice, "last_slice": t.last_slice,
                           "x1": x1, "y1": y1, "x2": x2, "y2": y2})
    notes = [f"{report.outside_rois} annotated polygon(s) lie outside every ROI"] if report.outside_rois else []
    notes += [f"{report.outside_range} polygon(s) on slices outside filter_index_range"] if report.outside_range else []
    notes += [f"annotation file not read: {r}" for r in report.rejected]
    notes += [f"truth unreadable: {sid} ({f} not read), left out of the metrics" for sid, f in sorted(unreadable.items())]
    notes += report.outside_image[:20] + report.unmatched[:20]
    truth = _truth(slice_rows, box_rows, crack_rows, ", ".join(report.files) or str(root), notes)
    truth.unreadable = sorted(unreadable)
    return truth


def _truth(slice_rows, box_rows, crack_rows, source, notes) -> Truth:
    slices = pd.DataFrame(slice_rows, columns=["scan_id", "slice_index", "cracked"])
    boxes = pd.DataFrame(box_rows, columns=TRUTH_BOX_COLUMNS)
    cracks = pd.DataFrame(crack_rows, columns=TRUTH_CRACK_COLUMNS)
    return Truth(slices.sort_values(["scan_id", "slice_index"]).reset_index(drop=True),
                 boxes.sort_values(["scan_id", "slice_index", "roi", "x1", "y1"]).reset_index(drop=True),
                 cracks.sort_values(["scan_id", "roi", "first_slice", "x1"]).reset_index(drop=True),
                 source, notes)


def load_truth(spec: str | None, scans: list[dict], crop_paths: dict[str, str]) -> Truth | None:
    """Ground truth named by ``evaluation.truth`` (already resolved: a path, or None for none).

    A folder with ``slices.csv`` is read as truth tables; any other folder or a JSON
    file as VIA/COCO annotations.
    """
    if not spec:
        return None
    from .crops import CropSet
    from .annotations import annotation_files

    path = Path(spec)
    if path.is_dir() and (path / "slices.csv").is_file():
        observed = {sid: CropSet.read_meta(p)["slice_indices"] for sid, p in crop_paths.items()}
        return truth_from_tables(path, scans, observed)
    if path.is_file():
        return truth_from_annotations([path], path.parent, scans, crop_paths)
    return truth_from_annotations(annotation_files(path), path, scans, crop_paths)


def slice_scores(crop_scores: pd.DataFrame) -> pd.DataFrame:
    """The slice score: the highest crop score of the slice, per model and scan."""
    return (crop_scores.groupby(["model", "scan_id", "slice_index"], sort=True)["score"].max()
            .rename("score").reset_index())


# ---- metrics -----------------------------------------------------------------------------


def slice_metrics(labels, scores, flagged) -> dict:
    """Slice-level metrics: ranking (AUROC, AP of the score) and the decision at the threshold.

    Args:
        labels: True for a slice with a crack.
        scores: the slice score (higher = more likely cracked).
        flagged: the model's decision for the slice (anomaly).
    """
    labels, scores, flagged = (np.asarray(a) for a in (labels, scores, flagged))
    both = len(set(labels.tolist())) == 2
    return {
        "n_slices": int(len(labels)), "n_cracked": int(labels.sum()),
        "auroc": float(roc_auc_score(labels, scores)) if both else None,
        "ap": float(average_precision_score(labels, scores)) if labels.any() else None,
        "precision": float(precision_score(labels, flagged, zero_division=0)),
        "recall": float(recall_score(labels, flagged, zero_division=0)),
        "f1": float(f1_score(labels, flagged, zero_division=0)),
    }


def iou_3d(a, b) -> float:
    """IoU of two boxes (x1, y1, x2, y2, z1, z2): pixel corners (``anodect.regions``) and
    first/last slice (inclusive: a crack in slices 5..8 is 4 slices deep)."""
    inter = 1.0
    union_a = union_b = 1.0
    for lo, hi, extra in ((0, 2, 0), (1, 3, 0), (4, 5, 1)):
        inter *= max(0.0, min(a[hi], b[hi]) - max(a[lo], b[lo]) + extra)
        union_a *= a[hi] - a[lo] + extra
        union_b *= b[hi] - b[lo] + extra
    return inter / (union_a + union_b - inter) if inter else 0.0


def match_cracks(predicted: pd.DataFrame, truth: pd.DataFrame, key: str = "scan_id") -> pd.DataFrame:
    """Pair predicted and true cracks one to one, best 3-D IoU first.

    Both tables need ``key``, roi, first_slice, last_slice, x1, y1, x2, y2. A pair
    needs the same ``key`` and ROI and a 3-D overlap.

    Returns:
        One row per match: index of the predicted and of the true crack, and their IoU.
    """
    candidates = []
    for i, p in predicted.iterrows():
        for j, t in truth.iterrows():
            if p[key] != t[key] or p["roi"] != t["roi"]:
                continue
            iou = iou_3d(*(tuple(float(r[k]) for k in ("x1", "y1", "x2", "y2", "first_slice", "last_slice"))
                           for r in (p, t)))
            if iou > 0:
                candidates.append((iou, i, j))
    used_p, used_t, rows = set(), set(), []
    for iou, i, j in sorted(candidates, key=lambda c: (-c[0], c[1], c[2])):
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            rows.append({"predicted": i, "truth": j, "iou": iou})
    return pd.DataFrame(rows, columns=["predicted", "truth", "iou"])


def crack_metrics(predicted: pd.DataFrame, truth: pd.DataFrame, n_batteries: int, key: str = "scan_id") -> dict:
    """Recall of true cracks, false cracks per battery and mean 3-D IoU of the matches."""
    matches = match_cracks(predicted, truth, key)
    return {
        "n_true": int(len(truth)), "n_predicted": int(len(predicted)), "n_matched": int(len(matches)),
        "recall": float(len(matches) / len(truth)) if len(truth) else None,
        "false_per_battery": float((len(predicted) - len(matches)) / max(n_batteries, 1)),
        "mean_iou": float(matches["iou"].mean()) if len(matches) else None,
    }


def battery_metrics(true_ng: pd.Series, predicted_ng: pd.Series) -> dict:
    """Confusion matrix (rows truth OK/NG, columns verdict OK/NG), sensitivity and specificity."""
    predicted_ng = predicted_ng.reindex(true_ng.index, fill_value=False)
    tn, fp, fn, tp = confusion_matrix(true_ng.astype(bool), predicted_ng.astype(bool), labels=[False, True]).ravel()
    return {"tp": int(tp), "fp": int(fp), "fn": int(fn), "tn": int(tn),
            "sensitivity": float(tp / (tp + fn)) if tp + fn else None,
            "specificity": float(tn / (tn + fp)) if tn + fp else None}


def run_score(slice_scores: pd.DataFrame, k: int) -> float:
    """The highest threshold at which ``k`` consecutive observed slices of one ROI all score above it.

    ``slice_scores`` holds slice_index, roi, score for one battery. This is the
    threshold-free form of the ``min_consecutive_slices`` rule (boxes are not linked
    in space here, so it can only be higher than what the tracker confirms).
    """
    best = -np.inf
    for _, group in slice_scores.groupby("roi"):
        values = group.sort_values("slice_index")["score"].to_numpy(float)
        if len(values) >= k:
            windows = np.lib.stride_tricks.sliding_window_view(values, k)
            best = max(best, float(windows.min(axis=1).max()))
    return best


def threshold_for_full_recall(crop_scores: pd.DataFrame, true_ng: pd.Series, k: int,
                              key: str = "scan_id") -> float | None:
    """The largest threshold that still gives every NG battery a run of ``k`` slices above it.

    ``crop_scores`` holds ``key``, slice_index, roi, score. A model flags above the
    threshold, so any threshold strictly below the returned value keeps 100% battery
    recall (under the run rule; tracking in space can only need it lower).
    """
    ng = [b for b, v in true_ng.items() if v]
    if not ng:
        return None
    return min(run_score(crop_scores[crop_scores[key] == b], k) for b in ng)


def agreement(a: pd.Series, b: pd.Series) -> dict:
    """Both-NG, only-a, only-b, both-OK counts and Cohen's kappa of two boolean verdicts."""
    a, b = a.astype(bool), b.reindex(a.index).fillna(False).astype(bool)
    counts = {"both_ng": int((a & b).sum()), "only_first": int((a & ~b).sum()),
              "only_second": int((~a & b).sum()), "both_ok": int((~a & ~b).sum())}
    kappa = cohen_kappa_score(a, b) if len(set(a.tolist()) | set(b.tolist())) > 1 else 1.0
    return {**counts, "kappa": float(kappa) if np.isfinite(kappa) else None}


def coco_box_ap(truth_boxes: pd.DataFrame, predicted: pd.DataFrame, images: pd.DataFrame) -> dict:
    """COCO box AP of one model's per-slice boxes against the true boxes, by pycocotools.

    Args:
        truth_boxes: TRUTH_BOX_COLUMNS.
        predicted: scan_id, slice_index, x1, y1, x2, y2, score.
        images: scan_id, slice_index of every evaluated slice (one COCO image each).
        Boxes of both are corners (``anodect.regions``), as COCO's are.

    Returns:
        AP over IoU 0.50:0.95 (the COCO figure), AP at IoU 0.5 and at 0.25 (cracks are
        a few pixels wide, so box IoU drops fast with a pixel of disagreement), and
        the counts; APs are None when there is no true box.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = {"n_true_boxes": int(len(truth_boxes)), "n_boxes": int(len(predicted)),
           "ap": None, "ap50": None, "ap25": None}
    if not len(truth_boxes):
        return out
    ids = {(s, int(i)): n for n, (s, i) in enumerate(zip(images["scan_id"], images["slice_index"]), start=1)}
    gt = {"images": [{"id": n} for n in ids.values()], "categories": [{"id": 1, "name": "crack"}],
          "annotations": []}
    for n, b in enumerate(truth_boxes.itertuples(), start=1):
        w, h = b.x2 - b.x1, b.y2 - b.y1
        gt["annotations"].append({"id": n, "image_id": ids[(b.scan_id, int(b.slice_index))], "category_id": 1,
                                  "bbox": [float(b.x1), float(b.y1), float(w), float(h)],
                                  "area": float(w * h), "iscrowd": 0})
    dets = [{"image_id": ids[(p.scan_id, int(p.slice_index))], "category_id": 1,
             "bbox": [float(p.x1), float(p.y1), float(p.x2 - p.x1), float(p.y2 - p.y1)],
             "score": float(p.score)}
            for p in predicted.itertuples() if (p.scan_id, int(p.slice_index)) in ids]
    if not dets:
        return {**out, "ap": 0.0, "ap50": 0.0, "ap25": 0.0}
    # pycocotools prints its progress and tables; the log gets our summary instead.
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = gt
        truth.createIndex()
        found = truth.loadRes(dets)
        results = {}
        for name, thresholds in (("standard", None), ("ap25", np.array([0.25]))):
            ev = COCOeval(truth, found, "bbox")
            ev.params.maxDets = [1, 10, 100]
            if thresholds is not None:
                ev.params.iouThrs = thresholds
            ev.evaluate()
            ev.accumulate()
            if thresholds is None:
                ev.summarize()
                results["ap"], results["ap50"] = float(ev.stats[0]), float(ev.stats[1])
            else:
                precision = ev.eval["precision"][0, :, 0, 0, -1]  # IoU, recall, class, area all, 100 dets
                results["ap25"] = float(precision[precision > -1].mean()) if (precision > -1).any() else 0.0
    return {**out, **{k: max(v, 0.0) for k, v in results.items()}}
