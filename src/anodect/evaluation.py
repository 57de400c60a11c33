"""Evaluation: each model against ground truth at three levels, and the two models against each other.

Slice level: AUROC and AP of the slice score (the best crop score or box
confidence of the slice, thresholds not applied), precision/recall/F1 of the
decision at the configured threshold. Crack level: a confirmed crack matches a
true one when both lie in the same battery and ROI and their 3-D boxes (x, y,
slice) overlap; recall, false cracks per battery and the 3-D IoU of matches.
Battery level: confusion matrix, sensitivity and specificity of the NG verdict.
scikit-learn computes every metric it has; only the 3-D matching is ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import (average_precision_score, cohen_kappa_score, confusion_matrix, f1_score,
                             precision_score, recall_score, roc_auc_score)

TRUTH_CRACK_COLUMNS = ["battery_id", "roi", "first_slice", "last_slice", "x1", "y1", "x2", "y2"]


@dataclass
class Truth:
    """Ground truth of the inspected batteries."""

    slices: pd.DataFrame  # battery_id, slice_index, cracked (bool)
    cracks: pd.DataFrame  # TRUTH_CRACK_COLUMNS, inclusive pixel boxes and slice range

    def batteries(self) -> pd.Series:
        """battery_id -> True when the battery has a crack."""
        ng = set(self.cracks["battery_id"])
        return pd.Series({b: b in ng for b in sorted(set(self.slices["battery_id"]))}, dtype=bool)


def truth_from_demo(truth_dir, batteries: list[str]) -> Truth:
    """The generator's truth tables (``truth/slices.csv``, ``cracks.csv``) for these batteries."""
    from pathlib import Path

    slices = pd.read_csv(Path(truth_dir) / "slices.csv")
    cracks = pd.read_csv(Path(truth_dir) / "cracks.csv")
    slices = slices[slices["battery_id"].isin(batteries)]
    return Truth(
        pd.DataFrame({"battery_id": slices["battery_id"], "slice_index": slices["slice_index"].astype(int),
                      "cracked": slices["n_cracks"] > 0}).reset_index(drop=True),
        cracks.loc[cracks["battery_id"].isin(batteries), TRUTH_CRACK_COLUMNS].reset_index(drop=True))


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
    """IoU of two boxes (x1, y1, x2, y2, z1, z2), all bounds inclusive (pixels and slices)."""
    inter = 1.0
    union_a = union_b = 1.0
    for lo, hi in ((0, 2), (1, 3), (4, 5)):
        inter *= max(0.0, min(a[hi], b[hi]) - max(a[lo], b[lo]) + 1)
        union_a *= a[hi] - a[lo] + 1
        union_b *= b[hi] - b[lo] + 1
    return inter / (union_a + union_b - inter) if inter else 0.0


def match_cracks(predicted: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Pair predicted and true cracks one to one, best 3-D IoU first.

    Both tables need battery_id, roi, first_slice, last_slice, x1, y1, x2, y2. A pair
    needs the same battery and ROI and a 3-D overlap.

    Returns:
        One row per match: index of the predicted and of the true crack, and their IoU.
    """
    candidates = []
    for i, p in predicted.iterrows():
        for j, t in truth.iterrows():
            if p["battery_id"] != t["battery_id"] or p["roi"] != t["roi"]:
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


def crack_metrics(predicted: pd.DataFrame, truth: pd.DataFrame, n_batteries: int) -> dict:
    matches = match_cracks(predicted, truth)
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


def threshold_for_full_recall(crop_scores: pd.DataFrame, true_ng: pd.Series, k: int) -> float | None:
    """The largest threshold that still gives every NG battery a run of ``k`` slices above it.

    ``crop_scores`` holds battery_id, slice_index, roi, score. A model flags above the
    threshold, so any threshold strictly below the returned value keeps 100% battery
    recall (under the run rule; tracking in space can only need it lower).
    """
    ng = [b for b, v in true_ng.items() if v]
    if not ng:
        return None
    return min(run_score(crop_scores[crop_scores["battery_id"] == b], k) for b in ng)


def agreement(a: pd.Series, b: pd.Series) -> dict:
    """Both-NG, only-a, only-b, both-OK counts and Cohen's kappa of two boolean verdicts."""
    a, b = a.astype(bool), b.reindex(a.index).fillna(False).astype(bool)
    counts = {"both_ng": int((a & b).sum()), "only_first": int((a & ~b).sum()),
              "only_second": int((~a & b).sum()), "both_ok": int((~a & ~b).sum())}
    kappa = cohen_kappa_score(a, b) if len(set(a.tolist()) | set(b.tolist())) > 1 else 1.0
    return {**counts, "kappa": float(kappa) if np.isfinite(kappa) else None}
