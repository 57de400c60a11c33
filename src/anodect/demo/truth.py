"""The demo's ground truth: what the generators drew, written as the files a user
would bring (VIA polygons per battery folder, COCO) and as tidy tables."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..groundtruth import CATEGORY, Polygon, via_document
from ..io import write_json, write_table

if TYPE_CHECKING:
    from ..config import Roi
    from .generator import CellSpec


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
