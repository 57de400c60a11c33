"""Annotations placed on crops: VIA or COCO polygons of full slices -> boxes in ROI crops.

The original tool reads one VIA file per battery folder and matches keys to images
by a name suffix, so keys with a size suffix or converted ``.png`` names were lost
(original-tool.md §6). Here every JSON file under the annotations folder is read,
VIA (1.x dicts or 2.x lists) or COCO, and each polygon is matched to a slice of an
annotated scan by file stem, or by the slice number in the name when the file sits
in the battery's own folder. A polygon that matches nothing is reported, not lost
silently.
"""

from __future__ import annotations

import json
import math
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .crops import CropSet
from .groundtruth import AnnotationError, Polygon, read_via

log = logging.getLogger(__name__)

_LAST_NUMBER = re.compile(r"(\d+)\D*$")


@dataclass(frozen=True)
class CropAnnotation:
    """One annotated defect in one ROI crop of one slice.

    Coordinates are crop pixels (the crop includes its context border). ``box`` is
    ``x1, y1, x2, y2`` with exclusive max, the bounds of the rasterised polygon
    clipped to the ROI, so a box never covers context pixels the decisions ignore.
    """

    scan_id: str
    slice_pos: int  # position in the crop set
    slice_index: int
    roi: int  # position of the ROI in the crop set
    polygon: np.ndarray = field(repr=False)  # [n, 2] float crop coordinates
    box: tuple[int, int, int, int]
    source: str

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The polygon filled at crop size, limited to the box (so to the ROI)."""
        return polygon_mask(self.polygon, shape, self.box)


def polygon_mask(polygon: np.ndarray, shape: tuple[int, int], clip: tuple[int, int, int, int] | None = None):
    mask = np.zeros(shape, np.uint8)
    # Sub-pixel accuracy (shift=4) so thin cracks keep their drawn width.
    pts = np.round(np.asarray(polygon, np.float64) * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)
    if clip is not None:
        x1, y1, x2, y2 = clip
        keep = np.zeros_like(mask)
        keep[y1:y2, x1:x2] = 1
        mask &= keep
    return mask.astype(bool)


def read_annotation_file(path: str | Path) -> list[Polygon]:
    """Polygons of one VIA or COCO JSON file, in full-slice pixels.

    COCO annotations without a polygon segmentation (RLE, or none) use their bbox.

    Raises:
        AnnotationError: the file cannot be read as either format.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError(f"{path}: not a readable JSON file ({exc})") from exc
    if not (isinstance(doc, dict) and "images" in doc and "annotations" in doc):
        return read_via(path)
    try:
        names = {img["id"]: img["file_name"] for img in doc["images"]}
        polygons = []
        for ann in doc["annotations"]:
            name = names[ann["image_id"]]
            segs = ann.get("segmentation")
            rings = [s for s in segs if len(s) >= 6] if isinstance(segs, list) else []
            if not rings:
                x, y, w, h = (float(v) for v in ann["bbox"])
                rings = [[x, y, x + w, y, x + w, y + h, x, y + h]]
            for ring in rings:
                polygons.append(Polygon(str(name), tuple(map(float, ring[0::2])), tuple(map(float, ring[1::2]))))
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise AnnotationError(f"{path}: COCO file with a malformed image or annotation ({exc!r})") from exc
    for poly in polygons:
        if len(poly.xs) < 3 or len(poly.xs) != len(poly.ys) or not all(math.isfinite(v) for v in poly.xs + poly.ys):
            raise AnnotationError(f"{path}: polygon on {poly.file_name!r} needs 3+ finite points")
    return polygons


def annotation_files(folder: str | Path) -> list[Path]:
    """Every JSON file under ``folder``, sorted, so the dataset never depends on listing order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"annotations folder {folder} not found (training.annotations_dir)")
    return sorted(p for p in folder.rglob("*.json") if p.is_file())


@dataclass
class AnnotatedScan:
    """An annotated scan: its sample-sheet record and its crops."""

    record: dict  # scan_id, battery_id, battery_path
    crops: CropSet

    def folder_names(self) -> set[str]:
        first = Path(str(self.record.get("battery_path", ""))).parts
        return {n for n in (str(self.record.get("battery_id", "")), first[0] if first else "") if n}


@dataclass
class MatchReport:
    """What happened to every polygon read, for the dataset manifest and the log."""

    matched: int = 0
    outside_range: int = 0  # the slice exists in the name but was filtered out (filter_index_range)
    outside_rois: int = 0
    unmatched: list[str] = field(default_factory=list)
    outside_image: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # files that could not be read, and why
    files: list[str] = field(default_factory=list)
    # scan_id -> the unread file that may hold its annotations: its truth is unknown, not "no crack"
    unreadable: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"matched": self.matched, "outside_index_range": self.outside_range,
                "outside_rois": self.outside_rois, "unmatched": self.unmatched[:50],
                "n_unmatched": len(self.unmatched), "outside_image": self.outside_image[:50],
                "rejected_files": self.rejected, "files": self.files}


def _slice_number(name: str) -> int | None:
    m = _LAST_NUMBER.search(Path(name).stem)
    return int(m.group(1)) if m else None


def place_annotations(files: list[Path], root: str | Path, scans: list[AnnotatedScan], strict: bool = False
                      ) -> tuple[list[CropAnnotation], MatchReport]:
    """Read annotation files and place each polygon on its scan, slice and ROI crop.

    A file that cannot be read is listed in the report's ``rejected`` and skipped, or
    stops everything when ``strict``. A polygon outside its image (when the scan's
    record has ``width`` and ``height``) is listed in ``outside_image`` and not used.

    Raises:
        AnnotationError: a file cannot be read and ``strict`` is set.
    """
    root = Path(root)
    report = MatchReport()
    by_stem: dict[str, list[tuple[int, int]]] = {}
    for s_i, scan in enumerate(scans):
        for pos, name in enumerate(scan.crops.slice_names()):
            by_stem.setdefault(name, []).append((s_i, pos))
    out: list[CropAnnotation] = []
    for path in files:
        rel = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
        report.files.append(str(rel))
        folder = rel.parts[0] if len(rel.parts) > 1 else None
        own = [i for i, s in enumerate(scans) if folder and folder in s.folder_names()]
        try:
            polygons = read_annotation_file(path)
        except AnnotationError as exc:
            if strict:
                raise
            report.rejected.append(str(exc))
            log.error("annotation file skipped: %s", exc)
            # Whose annotations it held: its battery folder, or a file named after the battery;
            # a file that names neither may hold any scan's.
            named = [i for i, s in enumerate(scans) if path.stem in s.folder_names()]
            for i in own or named or range(len(scans)):
                report.unreadable.setdefault(str(scans[i].record["scan_id"]), str(rel))
            continue
        for poly in polygons:
            stem = Path(poly.file_name).stem
            hits = by_stem.get(stem, [])
            if own:
                hits = [h for h in hits if h[0] in own] or hits
            if len(hits) > 1:
                report.unmatched.append(f"{rel}: {poly.file_name} names slices of several scans")
                continue
            if not hits and len(own) == 1:
                number = _slice_number(poly.file_name)
                crops = scans[own[0]].crops
                where = np.flatnonzero(crops.slice_indices == number) if number is not None else []
                if len(where):
                    hits = [(own[0], int(where[0]))]
                elif number is not None:
                    report.outside_range += 1
                    continue
            if not hits:
                number = _slice_number(poly.file_name)
                report.unmatched.append(f"{rel}: no annotated scan has a slice {poly.file_name!r}"
                                        + ("" if number is None else " (outside filter_index_range?)"))
                continue
            s_i, pos = hits[0]
            outside = _outside_image(poly, scans[s_i].record)
            if outside:
                report.outside_image.append(f"{rel}: polygon on {poly.file_name!r} {outside}")
                log.warning("%s", report.outside_image[-1])
                continue
            placed = _on_roi(poly, scans[s_i].crops, pos, str(rel))
            if placed is None:
                report.outside_rois += 1
                continue
            out.append(placed)
    report.matched = len(out)
    if report.unmatched:
        log.warning("%d annotation(s) matched no slice, e.g. %s", len(report.unmatched), report.unmatched[0])
    return out, report


def _outside_image(poly: Polygon, record: dict) -> str:
    """Why a polygon does not lie on its image ('' when it does, or when the size is unknown)."""
    w, h = int(record.get("width") or 0), int(record.get("height") or 0)
    x1, y1, x2, y2 = poly.box()
    if w <= 0 or h <= 0:
        return "" if x2 >= 0 and y2 >= 0 else f"lies at negative coordinates ({x1:g}, {y1:g})"
    if x2 < 0 or y2 < 0 or x1 > w - 1 or y1 > h - 1:
        return f"lies outside the {w}x{h} image (x {x1:g}..{x2:g}, y {y1:g}..{y2:g})"
    return ""


def _on_roi(poly: Polygon, crops: CropSet, pos: int, source: str) -> CropAnnotation | None:
    """Put a full-slice polygon on the ROI it overlaps most; None when it overlaps none."""
    px1, py1, px2, py2 = poly.box()
    best, best_area = None, 0.0
    for r, (x0, y0, x1, y1) in enumerate(crops.roi_boxes):
        # Bounds are made one pixel wide at least: a crack drawn as a line has zero area.
        w = min(px2 + 1, x1) - max(px1, x0)
        h = min(py2 + 1, y1) - max(py1, y0)
        if w > 0 and h > 0 and w * h > best_area:
            best, best_area = r, w * h
    if best is None:
        return None
    offset = np.array(crops.origin(best), np.float64)
    polygon = np.stack([np.asarray(poly.xs), np.asarray(poly.ys)], axis=1) - offset
    mask = polygon_mask(polygon, crops.crops.shape[-2:], crops.roi_in_crop(best))
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return CropAnnotation(crops.scan_id, pos, int(crops.slice_indices[pos]), best, polygon, box, source)
