"""Annotations as users bring them: the original tool's VIA polygon JSON (read and written).

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
