"""Decisions: model evidence -> flagged crops -> cracks tracked across slices -> verdicts.

Every threshold lives here and in the rules that call this module, downstream of
the models, so changing one reruns only these cheap steps. Every model goes through
the same steps after its own per-crop evidence (``anodect.evidence``):

* score maps (PatchCore, the crack segmenter) flag a crop whose score exceeds the
  model's threshold and draw one box per region of its map (``anodect.regions``);
  PatchCore's score and map are the volume evidence (z-scores against the scan's own
  slices) or the raw ones, by ``decisions.patchcore_evidence``; a threshold ``auto``
  is the one the model set from held-out training cells (its ``model.json``);
* scored boxes (RF-DETR) flag a crop with a box whose confidence exceeds the
  threshold (strict, as the original), after class-agnostic NMS.

Boxes of the same ROI are then linked across slices (``anodect.tracking``); a
crack is confirmed when it runs through ``min_consecutive_slices`` slices, and a
battery is NG when it has a confirmed crack.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import evidence as ev_files
from .batches import scan_context, scan_file
from .io import atomic_dir
from .registry import EVIDENCE_FOLDER, get as get_model
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
    """Thresholds and tracking rules of one model's decisions.

    A run's values come from the schema's defaults through ``settings_from_params``;
    the defaults here serve tests and direct use only.
    """

    threshold: float
    tracking: TrackingSettings = TrackingSettings()
    map_threshold: float | None = None  # score maps: map level outlining a region (default: threshold)
    min_region_area: int = 4  # score maps
    nms_iou: float = 0.5  # scored boxes
    evidence: str = "slice"  # score maps: "volume" or "slice" (raw) scores and maps
    box_score: str = "crop"  # score maps: a box's score, its crop's ("crop") or its region's peak ("peak")
    region_join: int = 0  # score maps: pieces up to 2x this many px apart are one region


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
        model: the model's key.
        scan: sample-sheet record (scan_id, battery_id, axis).
        boxes: flagged boxes (an evidence file's ``flagged``).
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


def resolve_threshold(threshold, evidence: str, model_meta: str | Path | None, name: str = "threshold") -> float:
    """A number stays; ``auto`` is the threshold the model set for ``evidence`` (its ``model.json``).

    Raises:
        ValueError: ``auto`` without a model that set one (the original tool's
            model, or one trained on a single cell), naming the file.
    """
    if threshold != "auto":
        return float(threshold)
    if not model_meta:
        raise ValueError(f"{name}: auto needs a model trained by anodect (its model.json holds the threshold); "
                         f"this model has none: give {name} a number")
    import json

    auto = json.loads(Path(model_meta).read_text(encoding="utf-8")).get("auto_threshold") or {}
    value = auto.get(evidence)
    if value is None:
        raise ValueError(f"{model_meta}: no automatic {evidence} threshold "
                         f"({auto.get('note', 'the model predates automatic thresholds; retrain it')}): "
                         f"give {name} a number")
    return float(value)


def settings_from_params(params: dict, model_meta: str | Path | None = None,
                         model: str | None = None) -> DecisionSettings:
    """Decision settings from a rule's params (``ModelPlugin.decision_params``).

    Args:
        params: the model's decision params: threshold, tracking, and its evidence's options.
        model_meta: the model's ``model.json``, for ``threshold: auto``.
        model: the model's key, to name its threshold key in errors.
    """
    tracking = TrackingSettings(min_consecutive_slices=params["min_consecutive_slices"],
                                max_gap=params["max_gap"], link_margin=params["link_margin"])
    options = {k: params[k] for k in ("map_threshold", "min_region_area", "nms_iou", "evidence", "box_score",
                                      "region_join") if k in params}
    name = get_model(model).threshold_key if model else "threshold"
    threshold = resolve_threshold(params["threshold"], options.get("evidence", "slice"), model_meta, name)
    return DecisionSettings(threshold=threshold, tracking=tracking, **options)


def read_evidence(model: str, path: str | Path, settings: DecisionSettings | None = None):
    """One scan's evidence file of ``model``, read by the class of its kind."""
    cls = ev_files.kind(get_model(model).evidence)
    return cls.read(path, settings.evidence if settings is not None and cls is ev_files.ScoreMaps else None)


def decide_scan(model: str, scan: dict, model_output: str | Path, crops_path: str | Path,
                slice_list: pd.DataFrame, settings: DecisionSettings, out_dir: str | Path) -> ScanDecision:
    """One scan's decisions for one model, written as three tables in ``out_dir``.

    Args:
        model: the model's key.
        scan: the scan's sample-sheet record.
        model_output: the model's evidence file for the scan.
        crops_path: the scan's crops: which slices the model saw.
        slice_list: the scan's rows of ``slices.tsv`` (slice_index, path).
        settings: thresholds and tracking.
        out_dir: folder for ``detections.csv``, ``cracks.csv``, ``slices.csv``.
    """
    from .crops import CropSet
    from .io import write_table

    paths = dict(zip(slice_list["slice_index"].astype(int), slice_list["path"]))
    pages = (dict(zip(slice_list["slice_index"].astype(int), slice_list["page"].astype(int)))
             if "page" in slice_list else {})
    observed = CropSet.read_meta(crops_path)["slice_indices"]
    evidence = read_evidence(model, model_output, settings)
    boxes = evidence.flagged(settings)
    if len(observed) and not evidence.judged(settings):
        # Too few slices to judge a slice against its scan: never OK, NO DATA with the reason logged.
        log.warning("%s: %d slices, too few for %s evidence (patchcore.volume.min_slices): the scan cannot be "
                    "judged on it and gets NO DATA; decisions.patchcore_evidence: slice judges it on its raw maps",
                    scan["scan_id"], len(observed), settings.evidence)
        observed = []
    observed = evidence.judged_slices(settings, observed)
    decision = decide(model, scan, boxes, observed, paths, settings.tracking, listed=list(paths), pages=pages)
    out_dir = Path(out_dir)
    write_table(out_dir / "detections.csv", decision.detections)
    write_table(out_dir / "cracks.csv", decision.cracks)
    write_table(out_dir / "slices.csv", decision.slices)
    return decision


def evidence_file(model: str, evidence_dir: str | Path, scan_id: str) -> Path:
    """A scan's evidence file in a batch folder of the model's evidence (score maps or boxes)."""
    return scan_file(evidence_dir, scan_id, EVIDENCE_FOLDER[get_model(model).evidence])


def decide_batch(model: str, scans: list[dict], evidence_dir: str | Path, crops_dir: str | Path, slices_of,
                 settings: DecisionSettings, class_label: str, thickness: int, out_dir: str | Path) -> None:
    """The decide rule: decide and draw each scan of a batch (``anodect.batches``).

    ``out_dir/{scan}/`` holds detections.csv, cracks.csv, slices.csv and images/ (drawn
    by ``render.render_decided``); the folder appears whole or not at all.

    Args:
        model: the model's key.
        evidence_dir: the batch folder of the model's evidence.
        slices_of: scan id -> that scan's slice rows (``sheets.scan_slices``).
        settings: ``DecisionSettings``.
    """
    from .render import render_decided

    with atomic_dir(out_dir) as out:
        for scan in scans:
            scan_id = scan["scan_id"]
            crops = scan_file(crops_dir, scan_id, "crops")
            with scan_context(scan_id):
                decide_scan(model, scan, evidence_file(model, evidence_dir, scan_id), crops, slices_of(scan_id),
                            settings, out / scan_id)
                counts = render_decided(out / scan_id, crops, class_label, out / scan_id / "images", thickness)
            log.info("%s: %s", scan_id, counts)


def false_alarm_threshold(scores: np.ndarray, rate: float) -> float:
    """The lowest threshold that at most ``rate`` of the held-out normal scores exceed.

    Decisions flag a crop whose score is strictly above the threshold, so the
    threshold is an observed score: the ``ceil((1 - rate) * n)``-th smallest.
    """
    scores = np.sort(np.asarray(scores, np.float64)[np.isfinite(scores)])
    if not len(scores):
        raise ValueError("no held-out score to set a threshold from")
    k = min(len(scores), max(1, math.ceil((1.0 - rate) * len(scores))))
    return float(scores[k - 1])


NO_DATA = "NO DATA"


def scan_verdict(n_cracks: int, n_slices: int | None, min_slices: int = 1) -> str:
    """NG with a confirmed crack; else NO DATA when fewer slices were judged than a crack needs
    (``n_slices`` None: not counted, so OK), OK otherwise."""
    if n_cracks:
        return "NG"
    if n_slices is not None and n_slices < max(min_slices, 1):
        return NO_DATA
    return "OK"


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
            judged = None if usable is None else int(usable.get((m, scan["scan_id"]), 0))
            row[f"{m}_verdict"] = scan_verdict(n, judged, min_slices)
            if judged is not None:
                row[f"{m}_slices"] = judged
            row[f"{m}_cracks"] = n
        if len(models) > 1:
            row["agree"] = len({row[f"{m}_verdict"] for m in models}) == 1
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
