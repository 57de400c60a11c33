"""Decisions: model outputs -> flagged crops -> cracks tracked across slices -> verdicts.

Every threshold lives here and in the rules that call this module, downstream of
the models, so changing one reruns only these cheap steps. Both models go through
the same steps after their own per-crop evidence:

* PatchCore flags a crop whose score exceeds ``patchcore_threshold`` and draws
  one box per region of its map (``anodect.regions``). The score and map are the
  volume evidence (z-scores against the scan's own slices) or the raw ones, by
  ``decisions.patchcore_evidence``; ``patchcore_threshold: auto`` takes the
  threshold the model set from held-out training cells (its ``model.json``);
* RF-DETR flags a crop with a box whose confidence exceeds ``rf_detr_threshold``
  (strict, as the original), after class-agnostic NMS.

Boxes of the same ROI are then linked across slices (``anodect.tracking``); a
crack is confirmed when it runs through ``min_consecutive_slices`` slices, and a
battery is NG when it has a confirmed crack.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .crops import crop_origin
from .io import load_arrays
from .regions import regions_from_map
from .tracking import Detection, TrackingSettings, anomalous_slices, confirm, link

log = logging.getLogger(__name__)

DETECTION_COLUMNS = ["model", "scan_id", "battery_id", "axis", "slice_index", "roi", "x1", "y1", "x2", "y2",
                     "score", "crop_score", "crack_id"]
CRACK_COLUMNS = ["model", "crack_id", "scan_id", "battery_id", "axis", "roi", "first_slice", "last_slice",
                 "n_slices", "x1", "y1", "x2", "y2", "z1", "z2", "peak_score", "mean_score"]
SLICE_COLUMNS = ["model", "scan_id", "battery_id", "axis", "slice_index", "path", "page", "slice_name", "flagged",
                 "anomaly", "n_boxes", "max_score", "crack_ids"]


@dataclass(frozen=True)
class DecisionSettings:
    """Thresholds and tracking rules of one model's decisions."""

    threshold: float
    tracking: TrackingSettings = TrackingSettings()
    map_threshold: float | None = None  # PatchCore: map level outlining a region (default: threshold)
    min_region_area: int = 4
    nms_iou: float = 0.5  # RF-DETR
    evidence: str = "slice"  # PatchCore: "volume" or "slice" (raw) scores and maps


EVIDENCE_ARRAYS = {"slice": ("scores", "maps"), "volume": ("volume_scores", "volume_maps")}


def patchcore_boxes(scores_path: str | Path, settings: DecisionSettings) -> tuple[pd.DataFrame, list[int]]:
    """Boxes of every flagged crop of one scan's score file, full-slice corners (``anodect.regions``).

    Returns:
        The boxes (slice_index, roi, x1, y1, x2, y2, score, crop_score) and the slices scored.
    """
    a = load_arrays(scores_path)
    score_key, _ = EVIDENCE_ARRAYS[settings.evidence]
    if score_key not in a:
        raise ValueError(f"{scores_path}: no {settings.evidence} evidence ({score_key}); rerun score_patchcore")
    return boxes_from_arrays(a, settings), [int(i) for i in a["slice_indices"]]


def boxes_from_arrays(a: dict, settings: DecisionSettings) -> pd.DataFrame:
    """``patchcore_boxes`` on a score file's arrays (``save_scores``' names) held in memory.

    A crop without volume evidence (a scan shorter than ``patchcore.volume.min_slices``)
    has a NaN volume score and is never flagged on it.
    """
    score_key, map_key = EVIDENCE_ARRAYS[settings.evidence]
    rows = []
    for s, index in enumerate(a["slice_indices"]):
        for r, name in enumerate(a["roi_names"]):
            crop_score = float(a[score_key][s, r])
            if not np.isfinite(crop_score):
                continue
            x0, y0 = crop_origin(a["roi_boxes"][r], context=0)  # maps cover the ROI alone
            for reg in regions_from_map(np.asarray(a[map_key][s, r], np.float32), crop_score, settings.threshold,
                                        settings.map_threshold, settings.min_region_area):
                reg = reg.shifted(x0, y0)
                # A box carries its crop's score: the number compared with the threshold (map
                # values are blurred and lower).
                rows.append({"slice_index": int(index), "roi": str(name), "x1": float(reg.x1), "y1": float(reg.y1),
                             "x2": float(reg.x2), "y2": float(reg.y2), "score": crop_score, "crop_score": crop_score})
    return pd.DataFrame(rows, columns=["slice_index", "roi", "x1", "y1", "x2", "y2", "score", "crop_score"])


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best first."""
    import torch
    from torchvision.ops import nms as tv_nms

    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    as_tensor = lambda a: torch.tensor(np.asarray(a, np.float32))  # noqa: E731 - copies read-only pandas views
    return tv_nms(as_tensor(boxes), as_tensor(scores), iou).numpy()


def rfdetr_boxes(predictions: pd.DataFrame, settings: DecisionSettings) -> pd.DataFrame:
    """Boxes above ``rf_detr_threshold`` after NMS per slice and ROI (the original had none)."""
    above = predictions[predictions["confidence"] > settings.threshold]
    kept = []
    for _, group in above.groupby(["slice_index", "roi"], sort=True):
        keep = nms(group[["x1", "y1", "x2", "y2"]].to_numpy(), group["confidence"].to_numpy(), settings.nms_iou)
        kept.append(group.iloc[np.sort(keep)])
    out = pd.concat(kept) if kept else above.iloc[:0]
    out = out.rename(columns={"confidence": "score"})
    out["crop_score"] = out.groupby(["slice_index", "roi"])["score"].transform("max")
    return out[["slice_index", "roi", "x1", "y1", "x2", "y2", "score", "crop_score"]].reset_index(drop=True)


@dataclass
class ScanDecision:
    """One model's decisions for one scan."""

    detections: pd.DataFrame  # DETECTION_COLUMNS
    cracks: pd.DataFrame  # CRACK_COLUMNS
    slices: pd.DataFrame  # SLICE_COLUMNS

    @property
    def verdict(self) -> str:
        return "NG" if len(self.cracks) else "OK"


def decide(model: str, scan: dict, boxes: pd.DataFrame, observed: list[int], paths: dict[int, str],
           settings: TrackingSettings, listed: list[int] | None = None,
           pages: dict[int, int] | None = None) -> ScanDecision:
    """Track one scan's boxes across slices and label its slices.

    Args:
        model: ``patchcore`` or ``rfdetr``.
        scan: sample-sheet record (scan_id, battery_id, axis).
        boxes: flagged boxes (``patchcore_boxes`` / ``rfdetr_boxes``).
        observed: slice indices the model saw: the rows of the slice table.
        paths: slice index -> slice file, for the slice table.
        settings: linking and confirmation rules.
        listed: every slice number of the scan, unreadable ones included (its slice
            spacing); gaps are counted in slice numbers either way.
        pages: slice index -> page of a multi-page stack (absent or -1: a file per slice).
    """
    from .discovery import slice_name

    pages = pages or {}
    scan_id = scan["scan_id"]
    dets = [Detection(scan_id, r.roi, int(r.slice_index), float(r.x1), float(r.y1), float(r.x2), float(r.y2),
                      float(r.score)) for r in boxes.itertuples()]
    crop_score = {id(d): float(c) for d, c in zip(dets, boxes["crop_score"])}
    tracks = link(dets, {scan_id: sorted(set(observed) | set(listed or []))}, settings)
    cracks = confirm(tracks, settings)
    crack_of = {id(d): t.crack_id for t in cracks for d in t.detections}
    ident = {"model": model, "scan_id": scan_id, "battery_id": scan.get("battery_id", ""),
             "axis": scan.get("axis", "")}
    det_rows = []
    for t in tracks:
        for d in sorted(t.detections, key=lambda d: (d.slice_index, -d.score)):
            det_rows.append({**ident, "slice_index": d.slice_index, "roi": d.roi, "x1": d.x1, "y1": d.y1,
                             "x2": d.x2, "y2": d.y2, "score": d.score, "crop_score": crop_score[id(d)],
                             "crack_id": crack_of.get(id(d), "")})
    detections = pd.DataFrame(det_rows, columns=DETECTION_COLUMNS).sort_values(
        ["slice_index", "roi", "score"], ascending=[True, True, False], kind="stable").reset_index(drop=True)
    crack_rows = [{"model": model, **t.record(ident["battery_id"], ident["axis"])} for t in cracks]
    crack_table = pd.DataFrame(crack_rows, columns=CRACK_COLUMNS)
    anomaly = anomalous_slices(cracks, {scan_id: observed}).get(scan_id, set())
    slice_rows = []
    for s in observed:
        here = detections[detections["slice_index"] == s]
        ids = sorted({t.crack_id for t in cracks if t.first_slice <= s <= t.last_slice})
        page = int(pages.get(s, -1))
        slice_rows.append({**ident, "slice_index": s, "path": paths.get(s, ""), "page": page,
                           "slice_name": slice_name(paths.get(s, ""), page, s), "flagged": bool(len(here)),
                           "anomaly": s in anomaly, "n_boxes": len(here),
                           "max_score": float(here["score"].max()) if len(here) else None,
                           "crack_ids": ";".join(ids)})
    return ScanDecision(detections, crack_table, pd.DataFrame(slice_rows, columns=SLICE_COLUMNS))


def resolve_threshold(threshold, evidence: str, model_meta: str | Path | None) -> float:
    """A number stays; ``auto`` is the threshold the PatchCore model set for ``evidence``.

    Raises:
        ValueError: ``auto`` without a model that set one (the original tool's
            model, or one trained on a single cell), naming the file.
    """
    if threshold != "auto":
        return float(threshold)
    if not model_meta:
        raise ValueError("patchcore_threshold: auto needs a PatchCore model trained by anodect (its model.json "
                         "holds the threshold); this model has none: give patchcore_threshold a number")
    import json

    auto = json.loads(Path(model_meta).read_text(encoding="utf-8")).get("auto_threshold") or {}
    value = auto.get(evidence)
    if value is None:
        raise ValueError(f"{model_meta}: no automatic {evidence} threshold "
                         f"({auto.get('note', 'the model predates automatic thresholds; retrain it')}): "
                         "give patchcore_threshold a number")
    return float(value)


def _has_volume_evidence(scores_path: str | Path) -> bool:
    return bool(np.isfinite(load_arrays(scores_path, ("volume_scores",))["volume_scores"]).any())


def settings_from_params(params: dict, model_meta: str | Path | None = None) -> DecisionSettings:
    """Decision settings from a rule's params (threshold, tracking, model options).

    Args:
        params: the rule's ``settings`` param (``workflow.decision_params``).
        model_meta: the PatchCore model's ``model.json``, for ``threshold: auto``.
    """
    tracking = TrackingSettings(min_consecutive_slices=params["min_consecutive_slices"],
                                max_gap=params["max_gap"], link_margin=params["link_margin"])
    evidence = params.get("evidence", "slice")
    return DecisionSettings(threshold=resolve_threshold(params["threshold"], evidence, model_meta),
                            tracking=tracking, map_threshold=params.get("map_threshold"),
                            min_region_area=params.get("min_region_area", 4), nms_iou=params.get("nms_iou", 0.5),
                            evidence=evidence)


def decide_scan(model: str, scan: dict, model_output: str | Path, crops_path: str | Path,
                slice_list: pd.DataFrame, settings: DecisionSettings, out_dir: str | Path) -> ScanDecision:
    """One scan's decisions for one model, written as three tables in ``out_dir``.

    Args:
        model: ``patchcore`` (``model_output`` is its score file) or ``rfdetr`` (its predictions CSV).
        scan: the scan's sample-sheet record.
        model_output: the model's file target for the scan.
        crops_path: the scan's crops: which slices the model saw.
        slice_list: the scan's rows of ``slices.tsv`` (slice_index, path).
        settings: thresholds and tracking.
        out_dir: folder for ``detections.csv``, ``cracks.csv``, ``slices.csv``.
    """
    from .crops import CropSet
    from .io import read_table, write_table

    paths = dict(zip(slice_list["slice_index"].astype(int), slice_list["path"]))
    pages = (dict(zip(slice_list["slice_index"].astype(int), slice_list["page"].astype(int)))
             if "page" in slice_list else {})
    observed = CropSet.read_meta(crops_path)["slice_indices"]
    if model == "patchcore":
        boxes, _ = patchcore_boxes(model_output, settings)
        if settings.evidence == "volume" and len(observed) and not _has_volume_evidence(model_output):
            # Too few slices to judge a slice against its scan: never OK, NO DATA with the reason logged.
            log.warning("%s: %d slices, too few for volume evidence (patchcore.volume.min_slices): the scan "
                        "cannot be judged on it and gets NO DATA; decisions.patchcore_evidence: slice judges "
                        "it on its raw maps", scan["scan_id"], len(observed))
            observed = []
    else:
        boxes = rfdetr_boxes(read_table(model_output), settings)
    decision = decide(model, scan, boxes, observed, paths, settings.tracking, listed=list(paths), pages=pages)
    out_dir = Path(out_dir)
    write_table(out_dir / "detections.csv", decision.detections)
    write_table(out_dir / "cracks.csv", decision.cracks)
    write_table(out_dir / "slices.csv", decision.slices)
    return decision


NO_DATA = "NO DATA"


def battery_table(scans: list[dict], cracks: pd.DataFrame, models: list[str],
                  slices: pd.DataFrame | None = None, min_slices: int = 1) -> pd.DataFrame:
    """One row per inspected scan: each model's verdict, confirmed cracks and slices judged.

    A scan with fewer of a model's slice rows (slices judged) than ``min_slices``
    (``decisions.min_consecutive_slices``) could never show a confirmed crack: it is
    ``NO DATA`` for that model, never OK.
    """
    rows = []
    usable = None if slices is None else slices.groupby(["model", "scan_id"]).size().to_dict()
    for scan in scans:
        row = {k: scan[k] for k in ("scan_id", "battery_id", "axis")}
        for m in models:
            n = int(((cracks["model"] == m) & (cracks["scan_id"] == scan["scan_id"])).sum()) if len(cracks) else 0
            row[f"{m}_verdict"] = "NG" if n else "OK"
            if usable is not None:
                row[f"{m}_slices"] = int(usable.get((m, scan["scan_id"]), 0))
                if not n and row[f"{m}_slices"] < max(min_slices, 1):
                    row[f"{m}_verdict"] = NO_DATA
            row[f"{m}_cracks"] = n
        if len(models) == 2:
            row["agree"] = row[f"{models[0]}_verdict"] == row[f"{models[1]}_verdict"]
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(tables: dict[str, list[str]], scans: list[dict], models: list[str], outputs: dict[str, str],
              min_slices: int = 1) -> None:
    """Concatenate the per-scan decision tables of every model and add the battery table.

    Args:
        tables: ``detections``, ``cracks``, ``slices`` -> the per-scan files of every model.
        scans: sample-sheet records of the inspected scans.
        models: the run's models, in report order.
        outputs: the same three names plus ``batteries`` -> output paths.
        min_slices: ``decisions.min_consecutive_slices``: fewer usable slices is NO DATA.
    """
    from .io import read_table, write_table

    joined = {name: pd.concat([read_table(p) for p in paths], ignore_index=True) for name, paths in tables.items()}
    for name, table in joined.items():
        write_table(outputs[name], table)
    write_table(outputs["batteries"], battery_table(scans, joined["cracks"], models, joined["slices"], min_slices))
