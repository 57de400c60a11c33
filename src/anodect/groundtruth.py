"""Ground truth: the original tool's VIA polygon JSON, COCO, and tidy truth tables.

VIA files follow the original tool's reader (original-tool.md §6): VIA-1.x style,
one JSON per battery folder, ``regions`` as a dict of polygons, keyed by the image
file name. The reader here also takes VIA-2 lists and size-suffixed keys.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .io import write_json, write_table

if TYPE_CHECKING:
    from .config import Roi
    from .generator import CellSpec

CATEGORY = {"id": 1, "name": "anode crack", "supercategory": "defect"}


@dataclass(frozen=True)
class Polygon:
    """One annotated region of one image, in full-slice pixel coordinates."""

    file_name: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    label: str = ""

    def box(self) -> tuple[float, float, float, float]:
        return min(self.xs), min(self.ys), max(self.xs), max(self.ys)


class AnnotationError(ValueError):
    """An annotation file that cannot be used; the message names the file."""


def via_document(regions_by_file: dict[str, list[Polygon]], sizes: dict[str, int] | None = None) -> dict:
    """Build a VIA-1.x project body: ``{file_name: {filename, size, regions: {"0": ...}}}``."""
    doc = {}
    for file_name, polys in regions_by_file.items():
        doc[file_name] = {
            "filename": file_name,
            "size": (sizes or {}).get(file_name, -1),
            "regions": {
                str(i): {
                    "shape_attributes": {
                        "name": "polygon",
                        "all_points_x": [int(round(v)) for v in p.xs],
                        "all_points_y": [int(round(v)) for v in p.ys],
                    },
                    "region_attributes": {"label": p.label or CATEGORY["name"]},
                }
                for i, p in enumerate(polys)
            },
            "file_attributes": {},
        }
    return doc


_SIZE_SUFFIX = re.compile(r"^(.*\.(?:png|tiff?|jpe?g|bmp))(\d+)$", re.IGNORECASE)


def read_via(path: str | Path) -> list[Polygon]:
    """Polygons of a VIA JSON file (VIA 1.x dict regions or VIA 2 lists).

    Non-polygon regions are ignored, as in the original tool.

    Raises:
        AnnotationError: the file is not JSON or not shaped like a VIA project.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError(f"{path}: not a readable JSON file ({exc})") from exc
    if isinstance(doc, dict) and "_via_img_metadata" in doc:
        doc = doc["_via_img_metadata"]
    if not isinstance(doc, dict):
        raise AnnotationError(f"{path}: expected a JSON object keyed by image, got {type(doc).__name__}")
    polygons = []
    for key, entry in doc.items():
        if not isinstance(entry, dict):
            raise AnnotationError(f"{path}: entry {key!r} is not an object")
        file_name = entry.get("filename") or key
        m = _SIZE_SUFFIX.match(str(file_name))
        if m:
            file_name = m.group(1)
        regions = entry.get("regions", {})
        if isinstance(regions, dict):
            regions = list(regions.values())
        if not isinstance(regions, list):
            raise AnnotationError(f"{path}: regions of {key!r} are neither a list nor an object")
        for region in regions:
            shape = region.get("shape_attributes", {}) if isinstance(region, dict) else {}
            if not isinstance(shape, dict) or shape.get("name") != "polygon":
                continue
            xs, ys = shape.get("all_points_x"), shape.get("all_points_y")
            if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys) or len(xs) < 3:
                raise AnnotationError(f"{path}: polygon of {key!r} needs matching x/y lists of 3+ points")
            try:
                fx, fy = tuple(float(v) for v in xs), tuple(float(v) for v in ys)
            except (TypeError, ValueError, OverflowError) as exc:
                raise AnnotationError(f"{path}: polygon of {key!r} has a non-numeric point") from exc
            if not all(math.isfinite(v) for v in fx + fy):
                raise AnnotationError(f"{path}: polygon of {key!r} has a NaN or infinite point")
            label = ""
            attrs = region.get("region_attributes")
            if isinstance(attrs, dict):
                label = str(next(iter(attrs.values()), "")) if attrs else ""
            polygons.append(Polygon(str(file_name), fx, fy, label))
    return polygons


def write_demo_truth(out_dir: Path, cells: list["CellSpec"], slice_rows: list[dict], rois: list["Roi"]) -> dict:
    """Write VIA per defective battery, a full-slice COCO file and the truth tables.

    Returns:
        Relative paths of what was written, for the manifest.
    """
    from .generator import crack_box, slice_filename

    truth_dir = out_dir / "truth"
    box_rows, crack_rows, cell_rows = [], [], []
    coco_images, coco_annotations = [], []
    image_ids: dict[tuple[str, int], int] = {}
    for row in slice_rows:
        image_ids[(row["battery_id"], row["slice_index"])] = len(image_ids) + 1
    sizes = {c.battery_id: c.image_size for c in cells}
    for row in slice_rows:
        size = sizes[row["battery_id"]]
        coco_images.append({"id": image_ids[(row["battery_id"], row["slice_index"])],
                            "file_name": row["file"], "width": size, "height": size,
                            "battery_id": row["battery_id"], "split": row["split"],
                            "slice_index": row["slice_index"]})
    for cell in cells:
        regions: dict[str, list[Polygon]] = {}
        for crack in cell.cracks:
            boxes = []
            for s in range(crack.first_slice, crack.last_slice + 1):
                poly = crack.polygon(s)
                x1, y1, x2, y2 = crack_box(poly, cell.image_size)
                boxes.append((x1, y1, x2, y2))
                box_rows.append({"crack_id": crack.crack_id, "split": cell.split,
                                 "battery_id": cell.battery_id, "slice_index": s, "roi": crack.roi,
                                 "x1": x1, "y1": y1, "x2": x2, "y2": y2})
                name = slice_filename(cell.battery_id, s)
                regions.setdefault(name, []).append(
                    Polygon(name, tuple(poly[:, 0]), tuple(poly[:, 1]), CATEGORY["name"]))
                flat = [float(round(v, 2)) for v in poly.reshape(-1)]
                coco_annotations.append({
                    "id": len(coco_annotations) + 1,
                    "image_id": image_ids[(cell.battery_id, s)],
                    "category_id": CATEGORY["id"],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": float((x2 - x1) * (y2 - y1)),
                    "segmentation": [flat],
                    "iscrowd": 0,
                    "crack_id": crack.crack_id,
                })
            b = np.array(boxes)
            crack_rows.append({
                "crack_id": crack.crack_id, "split": cell.split, "battery_id": cell.battery_id,
                "roi": crack.roi, "first_slice": crack.first_slice, "last_slice": crack.last_slice,
                "n_slices": crack.last_slice - crack.first_slice + 1,
                "x1": int(b[:, 0].min()), "y1": int(b[:, 1].min()),
                "x2": int(b[:, 2].max()), "y2": int(b[:, 3].max()),
                "length": round(crack.length, 2), "width": round(crack.width, 2),
                "contrast": round(crack.contrast, 3),
            })
        if regions:
            via_path = out_dir / "annotations" / cell.split / cell.battery_id / f"{cell.battery_id}.json"
            write_json(via_path, via_document(regions))
        cell_rows.append({"split": cell.split, "battery_id": cell.battery_id,
                          "n_cracks": len(cell.cracks), "verdict": "NG" if cell.cracks else "OK"})
    slices = pd.DataFrame(slice_rows)
    slices["label"] = np.where(slices["n_cracks"] > 0, "anomaly", "normal")
    write_table(truth_dir / "slices.csv", slices)
    write_table(truth_dir / "boxes.csv", pd.DataFrame(
        box_rows, columns=["crack_id", "split", "battery_id", "slice_index", "roi", "x1", "y1", "x2", "y2"]))
    write_table(truth_dir / "cracks.csv", pd.DataFrame(
        crack_rows, columns=["crack_id", "split", "battery_id", "roi", "first_slice", "last_slice",
                             "n_slices", "x1", "y1", "x2", "y2", "length", "width", "contrast"]))
    write_table(truth_dir / "cells.csv", pd.DataFrame(cell_rows))
    write_json(truth_dir / "coco.json", {
        "info": {"description": "anodect demo: full-slice crack annotations"},
        "images": coco_images, "annotations": coco_annotations, "categories": [CATEGORY]})
    return {"slices": "truth/slices.csv", "boxes": "truth/boxes.csv", "cracks": "truth/cracks.csv",
            "cells": "truth/cells.csv", "coco": "truth/coco.json", "via": "annotations/<split>/<battery>/"}
