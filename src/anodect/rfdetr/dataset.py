"""The detection training set: ROI crops of annotated scans plus copy-paste crops, as COCO.

Fixes the original's data pipeline (original-tool.md §6, §7.15-16): one category
for every box; batteries, not images, are split, so no battery's crops sit in two
splits and synthetic crops only combine defects and normal crops of the same split;
every random choice comes from one seeded generator; several defects pasted into
one crop keep their distance; defects too big for the ROI are skipped instead of
crashing ``randint``; circles are searched once per crop.

Beside the pasted defects, ``rendered_crops`` normal crops per run get cracks drawn
by ``anodect.synthesis`` (the renderer the crack segmenter learns from), each box
the crack's exact footprint: examples from normal cells alone, as many as asked.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from ..groundtruth import CATEGORY
from ..synthesis import CrackRanges, render, sample
from ..io import atomic_dir, write_json, write_table
from ..annotations import CropAnnotation

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
ANNOTATIONS_FILE = "_annotations.coco.json"  # the name rfdetr's roboflow loader reads


@dataclass(frozen=True)
class DatasetSettings:
    """How the training set is built (config section ``rfdetr.dataset``)."""

    split: tuple[float, float, float] = (0.7, 0.2, 0.1)
    synthetic_crops: int = 400
    background_crops: int = 100
    defects_per_crop: tuple[int, int] = (1, 2)
    paste: str = "difference"  # difference: add the defect's change to the new background; pixels: the original's
    avoid_circles: bool = True
    margin: int = 3
    contrast_factor: float = 0.6
    max_shift: int = 80
    rendered_crops: int = 0
    cracks: CrackRanges = CrackRanges()
    seed: int = 0

    @classmethod
    def from_config(cls, section: dict) -> "DatasetSettings":
        s = dict(section)
        if isinstance(s.get("split"), dict):
            s["split"] = tuple(float(s["split"].get(k, 0.0)) for k in SPLITS)
        for key in ("split", "defects_per_crop"):
            if key in s:
                s[key] = tuple(s[key])
        if isinstance(s.get("cracks"), dict):
            s["cracks"] = CrackRanges.from_config(s["cracks"])
        return cls(**{k: v for k, v in s.items() if k in cls.__dataclass_fields__})


def split_batteries(names: list[str], fractions: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Assign whole batteries to train/valid/test, seeded and independent of listing order.

    Rounded counts, except that train always gets one battery, and valid (then test)
    gets one when its fraction is positive and there are batteries to spare.
    """
    names = sorted(names)
    n = len(names)
    total = sum(fractions) or 1.0
    want = [f / total * n for f in fractions]
    counts = [0, int(round(want[1])), int(round(want[2]))]
    for i in (1, 2):
        if fractions[i] > 0 and counts[i] == 0 and n - sum(counts[1:]) > 1:
            counts[i] = 1
    while n and n - counts[1] - counts[2] < 1:
        counts[2 if counts[2] else 1] -= 1
    counts[0] = n - counts[1] - counts[2]
    order = np.random.default_rng(seed).permutation(n)
    out, start = {}, 0
    for split, count in zip(SPLITS, counts):
        for i in order[start:start + count]:
            out[names[i]] = split
        start += count
    return out


def find_circles(crop: np.ndarray) -> np.ndarray:
    """Round features of a crop (x, y, r); the original avoids pasting on them.

    Same Hough settings as the original, but on the crop it pastes into, once.
    """
    blurred = cv2.GaussianBlur(crop, (9, 9), 2)
    found = cv2.HoughCircles(blurred, cv2.HOUGH_GRADIENT, dp=1.2, minDist=20, param1=50, param2=22,
                             minRadius=12, maxRadius=20)
    return np.zeros((0, 3)) if found is None else found[0]


@dataclass
class Paster:
    """Pastes annotated defects into normal crops, keeping them inside the ROI."""

    settings: DatasetSettings
    rng: np.random.Generator
    roi_in_crop: tuple[int, int, int, int]  # x1, y1, x2, y2 of the ROI inside a crop
    min_distance: int = 12
    tries: int = 20

    def paste(self, target: np.ndarray, source: np.ndarray, ann: CropAnnotation,
              taken: list[tuple[int, int, int, int]], circles: np.ndarray,
              change: np.ndarray | None = None) -> tuple[int, int, int, int] | None:
        """Paste ``ann``'s defect from ``source`` into ``target`` (in place).

        With ``change`` (the defect minus its own background, over the box), the change is
        added to the new place, so the target keeps its own electrode layers. Without
        it, the pixels are copied with the original's contrast shift, which carries the
        source's layers along and leaves a visible seam.

        Returns:
            The pasted box (x1, y1, x2, y2, exclusive max) in crop pixels, or None when
            no place was found (defect larger than the ROI, or every try collided).
        """
        x1, y1, x2, y2 = ann.box
        w, h = x2 - x1, y2 - y1
        m = self.settings.margin
        ax1, ay1, ax2, ay2 = self.roi_in_crop
        ax1, ay1, ax2, ay2 = ax1 + m, ay1 + m, ax2 - m, ay2 - m
        if w > ax2 - ax1 or h > ay2 - ay1:
            return None
        mask = ann.mask(source.shape)[y1:y2, x1:x2]
        patch = source[y1:y2, x1:x2].astype(np.int16)
        for _ in range(self.tries):
            nx = int(self.rng.integers(ax1, ax2 - w + 1))
            ny = int(self.rng.integers(ay1, ay2 - h + 1))
            box = (nx, ny, nx + w, ny + h)
            if any(_gap(box, t) < self.min_distance for t in taken):
                continue
            if any(_point_gap(box, cx, cy) < r + 7 for cx, cy, r in circles):
                continue
            region = target[ny:ny + h, nx:nx + w]
            if change is not None:
                region[mask] = np.clip(region[mask] + change[mask], 0, 255).astype(np.uint8)
                return box
            # Match the defect's level to its new background, as the original does.
            shift = (np.median(region[mask]) - np.median(patch[mask])) * self.settings.contrast_factor
            shift = int(np.clip(shift, -self.settings.max_shift, self.settings.max_shift))
            region[mask] = np.clip(patch[mask] + shift, 0, 255).astype(np.uint8)
            return box
        return None


def defect_change(crop_set, ann: CropAnnotation, annotated_slices: set[int], neighbours: int = 4):
    """What the defect does to its crop over its box: the crop minus the same place in
    the nearest slices of the scan whose ROI carries no annotation (the electrode
    layers change little from one slice to the next). None when no such slice exists.
    """
    clean = [p for p in range(crop_set.n_slices) if (p, ann.roi) not in annotated_slices]
    if not clean:
        return None
    clean = sorted(clean, key=lambda p: (abs(p - ann.slice_pos), p))[:neighbours]
    x1, y1, x2, y2 = ann.box
    background = np.median(crop_set.crops[clean, ann.roi, y1:y2, x1:x2].astype(np.float32), axis=0)
    return crop_set.crops[ann.slice_pos, ann.roi, y1:y2, x1:x2].astype(np.float32) - background


def _gap(a, b) -> float:
    dx = max(b[0] - a[2], a[0] - b[2], 0)
    dy = max(b[1] - a[3], a[1] - b[3], 0)
    return float(np.hypot(dx, dy))


def _point_gap(box, x, y) -> float:
    dx = max(box[0] - x, x - box[2], 0)
    dy = max(box[1] - y, y - box[3], 0)
    return float(np.hypot(dx, dy))


@dataclass
class _Image:
    file_name: str
    pixels: np.ndarray
    boxes: list[tuple[int, int, int, int]]
    kind: str  # real, synthetic (pasted), rendered, background
    scan_id: str
    slice_index: int
    roi: str
    sources: list[str] = field(default_factory=list)  # scan:slice:roi of pasted defects


def build_dataset(annotations: list[CropAnnotation], annotated: dict, normal: dict,
                  settings: DatasetSettings) -> tuple[dict[str, list[_Image]], dict[str, str]]:
    """Every image of every split, in a fixed order.

    Args:
        annotations: placed annotations (``annotations.place_annotations``).
        annotated: scan_id -> CropSet of annotated scans.
        normal: scan_id -> CropSet of normal scans (backgrounds for pasting and negatives).
        settings: dataset settings.

    Returns:
        Images per split, and the split of every scan.
    """
    rng = np.random.default_rng(settings.seed)
    split_of = split_batteries(list(annotated), settings.split, settings.seed)
    split_of.update(split_batteries(list(normal), settings.split, settings.seed + 1))
    images: dict[str, list[_Image]] = {s: [] for s in SPLITS}

    by_crop: dict[tuple[str, int, int], list[CropAnnotation]] = {}
    for ann in annotations:
        by_crop.setdefault((ann.scan_id, ann.slice_pos, ann.roi), []).append(ann)
    for (scan_id, pos, roi), anns in sorted(by_crop.items()):
        cs = annotated[scan_id]
        images[split_of[scan_id]].append(_Image(
            f"{scan_id}_{int(cs.slice_indices[pos]):04d}_{cs.roi_names[roi]}.png", cs.crops[pos, roi],
            [a.box for a in anns], "real", scan_id, int(cs.slice_indices[pos]), str(cs.roi_names[roi])))

    changes: dict[int, np.ndarray | None] = {}
    if settings.paste == "difference":
        marked: dict[str, set] = {}
        for ann in annotations:
            marked.setdefault(ann.scan_id, set()).add((ann.slice_pos, ann.roi))
        for ann in annotations:
            changes[id(ann)] = defect_change(annotated[ann.scan_id], ann, marked[ann.scan_id])
    fractions = np.asarray(settings.split, float) / (sum(settings.split) or 1.0)
    for split, frac in zip(SPLITS, fractions):
        defects = [a for a in annotations if split_of[a.scan_id] == split]
        pool = [(sid, p, r) for sid in sorted(normal) if split_of[sid] == split
                for p in range(normal[sid].n_slices) for r in range(len(normal[sid].roi_names))]
        if not pool:
            continue
        n_syn = int(round(settings.synthetic_crops * frac)) if defects else 0
        n_bg = int(round(settings.background_crops * frac))
        order = rng.permutation(len(pool))
        picks = [pool[i] for i in np.resize(order, n_syn + n_bg)] if n_syn + n_bg else []
        for k, (sid, p, r) in enumerate(picks):
            cs = normal[sid]
            base = f"{sid}_{int(cs.slice_indices[p]):04d}_{cs.roi_names[r]}"
            common = dict(scan_id=sid, slice_index=int(cs.slice_indices[p]), roi=str(cs.roi_names[r]))
            if k >= n_syn:
                images[split].append(_Image(f"bg{k - n_syn:05d}_{base}.png", cs.crops[p, r], [], "background",
                                            **common))
                continue
            img = _synthetic(cs, p, r, defects, annotated, settings, rng, changes)
            if img is None:
                continue
            pixels, boxes, sources = img
            images[split].append(_Image(f"syn{k:05d}_{base}.png", pixels, boxes, "synthetic", **common,
                                        sources=sources))
        # Rendered cracks come last, from a generator of their own: the crops above stay as they were.
        n_ren = int(round(settings.rendered_crops * frac))
        if n_ren:
            ren_rng = np.random.default_rng([settings.seed, SPLITS.index(split), 1])
            order = ren_rng.permutation(len(pool))
            for k, i in enumerate(np.resize(order, n_ren)):
                sid, p, r = pool[int(i)]
                cs = normal[sid]
                base = f"{sid}_{int(cs.slice_indices[p]):04d}_{cs.roi_names[r]}"
                img = rendered_crop(cs.crops[p, r], cs.roi_in_crop(r), settings, ren_rng)
                if img is not None:
                    images[split].append(_Image(f"ren{k:05d}_{base}.png", *img, "rendered", scan_id=sid,
                                                slice_index=int(cs.slice_indices[p]), roi=str(cs.roi_names[r])))
    if not any(i.boxes for i in images["valid"]) and any(i.boxes for i in images["train"]):
        # One annotated battery cannot be in two splits; rfdetr still needs positives to
        # validate on, so valid borrows train's images and the manifest says so.
        log.warning("no annotated battery left for the valid split: it reuses the train images "
                    "(annotate more batteries for an independent validation)")
        images["valid"] = [*images["valid"], *(i for i in images["train"] if i.boxes)]
    return images, split_of


def _synthetic(cs, p, r, defects, annotated, settings, rng, changes):
    paster = Paster(settings, rng, cs.roi_in_crop(r))
    target = cs.crops[p, r].copy()
    circles = find_circles(target) if settings.avoid_circles else np.zeros((0, 3))
    lo, hi = settings.defects_per_crop
    boxes, sources = [], []
    for i in rng.choice(len(defects), size=int(rng.integers(lo, hi + 1)), replace=True):
        ann = defects[int(i)]
        source = annotated[ann.scan_id].crops[ann.slice_pos, ann.roi]
        change = changes.get(id(ann))
        if settings.paste == "difference" and change is None:
            continue
        box = paster.paste(target, source, ann, boxes, circles, change)
        if box is not None:
            boxes.append(box)
            sources.append(f"{ann.scan_id}:{ann.slice_index}:{annotated[ann.scan_id].roi_names[ann.roi]}")
    return (target, boxes, sources) if boxes else None


def rendered_crop(crop: np.ndarray, roi: tuple[int, int, int, int], settings: DatasetSettings,
                  rng: np.random.Generator) -> tuple[np.ndarray, list] | None:
    """A normal crop with ``defects_per_crop`` rendered cracks centred in its ROI, boxed by their footprints.

    Returns:
        (pixels, boxes), or None when no crack left a footprint (laid where no bright
        layer was to break).
    """
    x0, y0, x1, y1 = roi
    ranges = CrackRanges(**{**settings.cracks.__dict__, "slices": (1, 1)})  # one crop: one slice
    stack = crop.astype(np.float32)[None]
    boxes = []
    lo, hi = settings.defects_per_crop
    for _ in range(int(rng.integers(lo, hi + 1))):
        centre = (float(rng.uniform(x0 + 4, x1 - 4)), float(rng.uniform(y0 + 4, y1 - 4)))
        crack = sample(rng, crop.shape, 1, ranges, centre=centre, image=stack[0])
        before = stack
        stack, footprint = render(stack, crack)
        # Boxed inside the ROI, as the truth is: the part in the crop's context is not inspected.
        ys, xs = np.nonzero(footprint[0, y0:y1, x0:x1])
        if not len(xs):
            stack = before
            continue
        boxes.append((x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1))
    if not boxes:
        return None
    return np.clip(np.rint(stack[0]), 0, 255).astype(np.uint8), boxes


def coco_document(images: list[_Image], class_label: str) -> dict:
    """A COCO file with one category: the original's ids 0 (synthetic) and 1 (real)
    made rfdetr learn two labels for one class."""
    category = dict(CATEGORY, name=class_label)
    doc = {"info": {"description": "anodect RF-DETR training crops"}, "licenses": [],
           "categories": [category], "images": [], "annotations": []}
    for image_id, img in enumerate(images, start=1):
        h, w = img.pixels.shape[:2]
        doc["images"].append({"id": image_id, "file_name": img.file_name, "width": int(w), "height": int(h)})
        for x1, y1, x2, y2 in img.boxes:
            doc["annotations"].append({
                "id": len(doc["annotations"]) + 1, "image_id": image_id, "category_id": category["id"],
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
                "segmentation": []})
    return doc


def write_dataset(out_dir: str | Path, images: dict[str, list[_Image]], split_of: dict[str, str],
                  class_label: str, settings: DatasetSettings, provenance: dict) -> dict:
    """Write the split folders, a box table and a manifest; the folder appears whole or not at all."""
    with atomic_dir(out_dir) as tmp:
        rows, counts = [], {}
        for split in SPLITS:
            folder = tmp / split
            folder.mkdir()
            for img in images[split]:
                Image.fromarray(img.pixels).save(folder / img.file_name)
                for b in img.boxes or [None]:
                    rows.append({"split": split, "file_name": img.file_name, "kind": img.kind,
                                 "scan_id": img.scan_id, "slice_index": img.slice_index, "roi": img.roi,
                                 "x1": None if b is None else b[0], "y1": None if b is None else b[1],
                                 "x2": None if b is None else b[2], "y2": None if b is None else b[3],
                                 "pasted_from": ";".join(img.sources)})
            doc = coco_document(images[split], class_label)
            write_json(folder / ANNOTATIONS_FILE, doc)
            counts[split] = {kind: sum(1 for i in images[split] if i.kind == kind)
                             for kind in ("real", "synthetic", "rendered", "background")}
            counts[split]["boxes"] = len(doc["annotations"])
        write_table(tmp / "boxes.csv", pd.DataFrame(rows, columns=[
            "split", "file_name", "kind", "scan_id", "slice_index", "roi", "x1", "y1", "x2", "y2", "pasted_from"]))
        shared = {i.file_name for i in images["train"]} & {i.file_name for i in images["valid"]}
        manifest = {"settings": asdict(settings), "class_label": class_label, "counts": counts,
                    "valid_reuses_train": bool(shared),
                    "splits": dict(sorted(split_of.items())), **provenance}
        digest = hashlib.sha256()
        for split in SPLITS:
            for img in images[split]:
                digest.update(f"{split}/{img.file_name}{img.boxes}".encode())
                digest.update(img.pixels.tobytes())
        manifest["dataset_id"] = digest.hexdigest()[:16]
        write_json(tmp / "dataset.json", manifest)
    return manifest
