"""Real-background benchmark data: thin anode cracks injected into real X-ray CT of a cell.

The backgrounds are 20 consecutive real axial slices of one cylindrical cell
(``data/battery_xct/cell_vol``, MIT licence, see its SOURCE.md). One real volume
becomes many cells: each cell is the volume flipped or not, rotated about the
cell's axis, shifted by a few pixels, its slice order reversed or not and its
gain changed a little. Every view is resampled once (Lanczos), so the slice's own
noise and blur stay as the scanner made them.

Training and test cells must not share what PatchCore sees: every ROI of every
cell is mapped back into the source volume (its *footprint*), training footprints
are drawn in one angular sector of the winding and test footprints in another,
and ``footprint_overlap`` checks pixel by pixel that no test ROI covers a source
pixel of a training ROI. Flips and rotations give the test cells winding content
no training cell showed.

A crack is a break across one to three bright electrode layers, running roughly
along the radius: a capsule of the given width and length (edges soft by half a
pixel: partial volume), blurred by the scanner's point-spread function, that
darkens each pixel by at most ``depth`` grey levels and never below the dark gap
beside the layer, so nothing is painted black and the slice's noise remains.
It drifts and tapers through its slices like the demo's cracks. A crack enters
the truth only where it breaks a bright layer in every slice of its span: the
first slices of the volume (061-072) lie where the electrode coating ends and are
dimmer, so a crack there must still cross a layer that is there.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import tifffile

from ..config import Roi
from .generator import AXIS_FOLDER, SPLITS, CrackSpec, battery_name, slice_filename
from ..io import atomic_path, write_json
from ..synthesis import capsule_band, darkening

log = logging.getLogger(__name__)

# Crack difficulty: depth in grey levels of 255 (the slices' noise is about 3),
# width and length in pixels, span in slices. `medium` is the level of issue #13.
DIFFICULTY = {
    "easy": {"depth": (20.0, 28.0), "width": (2.0, 3.0), "length": (12.0, 30.0), "slices": (4, 8)},
    "medium": {"depth": (9.0, 25.0), "width": (1.0, 3.0), "length": (6.0, 30.0), "slices": (4, 8)},
    "hard": {"depth": (6.0, 12.0), "width": (1.0, 2.0), "length": (6.0, 15.0), "slices": (4, 8)},
}

# Angular sectors (degrees, modulo 180) of the winding that each split's ROI
# footprints are centred in: 90 degrees apart, so that ROIs of up to +-35 degrees
# of arc stay disjoint.
SECTORS = {"train": (-6.0, 6.0), "test": (84.0, 96.0)}


@dataclass(frozen=True)
class RealCTSettings:
    """The ``demo`` config section when ``demo.source`` is ``real_ct``."""

    source_dir: str = "data/battery_xct/cell_vol"
    out_dir: str = "results/real_ct/demo"
    seed: int = 7
    n_train_normal: int = 8
    n_train_defect: int = 4
    n_test: int = 12
    test_defect_fraction: float = 0.5
    cracks_per_cell: tuple[int, int] = (1, 2)
    difficulty: str = "medium"
    first_slice: int = 61  # index given to the volume's first slice (im061.tif)
    shift: float = 8.0  # px: largest shift of a cell's axis
    gain: tuple[float, float] = (0.92, 1.08)

    @classmethod
    def from_config(cls, config: dict) -> "RealCTSettings":
        demo = config.get("demo", {})
        # Counts, seed and folder are the demo's own keys; the rest belong to the real volume.
        shared = ("out_dir", "seed", "n_train_normal", "n_train_defect", "n_test", "test_defect_fraction",
                  "cracks_per_cell")
        kwargs = {k: demo[k] for k in shared if k in demo}
        kwargs.update({k: v for k, v in demo.get("real_ct", {}).items() if k in cls.__dataclass_fields__})
        for key in ("cracks_per_cell", "gain"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        if kwargs.get("difficulty", "medium") not in DIFFICULTY:
            raise ValueError(f"demo.real_ct.difficulty must be one of {sorted(DIFFICULTY)}")
        return cls(**kwargs)


@dataclass
class RealCrack(CrackSpec):
    """A crack with its darkening in grey levels (``contrast`` = depth / 255)."""

    depth: float = 0.0


@dataclass
class RealCell:
    """One view of the real volume and the cracks injected into it."""

    battery_id: str
    split: str
    index: int
    image_size: int
    first_slice: int
    last_slice: int
    flip: bool
    angle: float  # degrees, counter-clockwise, applied after the flip
    shift: tuple[float, float]
    reverse_z: bool
    gain: float
    cracks: list[RealCrack] = field(default_factory=list)


def load_volume(source_dir: str | Path) -> np.ndarray:
    """The real slices (sorted by name) as a float32 [z, H, W] volume."""
    files = sorted(Path(source_dir).glob("*.tif"))
    if not files:
        raise ValueError(f"{source_dir}: no real CT slices (*.tif) found")
    volume = np.stack([tifffile.imread(f) for f in files]).astype(np.float32)
    if volume.ndim != 3:
        raise ValueError(f"{source_dir}: slices are not 2-D grey images")
    return volume


def cell_axis(volume: np.ndarray) -> tuple[float, float]:
    """Centre (x, y) of the cell: a least-squares circle through the can's bright wall."""
    mean = volume.mean(axis=0)
    ys, xs = np.nonzero(mean > np.percentile(mean, 99.0))
    a = np.c_[xs, ys, np.ones_like(xs)].astype(np.float64)
    cx2, cy2, _ = np.linalg.lstsq(a, (xs.astype(np.float64) ** 2 + ys.astype(np.float64) ** 2), rcond=None)[0]
    return float(cx2 / 2), float(cy2 / 2)


def view_matrix(cell: RealCell, centre: tuple[float, float]) -> np.ndarray:
    """2x3 affine map from source pixels to the cell's pixels (flip, rotation, shift)."""
    cx, cy = centre
    size = cell.image_size
    t = math.radians(cell.angle)
    c, s = math.cos(t), math.sin(t)
    f = -1.0 if cell.flip else 1.0
    # about the axis: x' = R(F(x - centre)) + image centre + shift
    m = np.array([[c * f, s], [-s * f, c]])
    offset = np.array([size / 2 + cell.shift[0], size / 2 + cell.shift[1]]) - m @ np.array([cx, cy])
    return np.c_[m, offset]


def footprint(cell: RealCell, roi: Roi, centre: tuple[float, float], shape: tuple[int, int],
              margin: int = 2) -> np.ndarray:
    """Boolean mask of the source pixels an ROI of the cell shows (grown by ``margin``)."""
    inverse = cv2.invertAffineTransform(view_matrix(cell, centre))
    x0, y0 = roi.x_min - margin, roi.y_min - margin
    x1, y1 = roi.x_max + margin, roi.y_max + margin
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
    src = corners @ inverse[:, :2].T + inverse[:, 2]
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(src * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def footprint_overlap(cells: list[RealCell], rois: list[Roi], centre: tuple[float, float],
                      shape: tuple[int, int]) -> int:
    """Source pixels shown by both a training cell's ROI and a test cell's ROI."""
    train = np.zeros(shape, bool)
    test = np.zeros(shape, bool)
    for cell in cells:
        target = test if cell.split == "test" else train
        for roi in rois:
            target |= footprint(cell, roi, centre, shape)
    return int((train & test).sum())


def _footprint_angle(cell: RealCell, roi: Roi, centre: tuple[float, float]) -> float:
    """Source angle (degrees) of the ROI's centre about the cell's axis."""
    inverse = cv2.invertAffineTransform(view_matrix(cell, centre))
    p = np.array([(roi.x_min + roi.x_max) / 2, (roi.y_min + roi.y_max) / 2])
    sx, sy = inverse[:, :2] @ p + inverse[:, 2]
    return math.degrees(math.atan2(sy - centre[1], sx - centre[0]))


def _in_sector(angle: float, sector: tuple[float, float]) -> bool:
    a = (angle - sector[0]) % 180.0
    return a <= sector[1] - sector[0]


def render_slice(volume: np.ndarray, cell: RealCell, centre: tuple[float, float], k: int,
                 with_cracks: bool = True) -> np.ndarray:
    """Slice ``k`` (0-based in the cell's own order) as float grey levels of 255."""
    z = len(volume) - 1 - k if cell.reverse_z else k
    size = cell.image_size
    image = cv2.warpAffine(volume[z], view_matrix(cell, centre), (size, size), flags=cv2.INTER_LANCZOS4,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    image = np.clip(image, 0, None) * cell.gain
    if with_cracks:
        for crack in cell.cracks:
            darkening = crack_darkening(image, crack, cell.first_slice + k)
            if darkening is not None:
                (x0, y0, x1, y1), delta = darkening
                image[y0:y1, x0:x1] -= delta
    return image


def crack_darkening(image: np.ndarray, crack: RealCrack, slice_index: int):
    """Window and grey levels a crack removes from one slice (``synthesis.darkening``), or None
    outside its span."""
    geo = crack.geometry(slice_index)
    if geo is None:
        return None
    x, y, length, width = geo
    band, window, _ = capsule_band(x, y, crack.angle, length, width, image.shape)
    found = darkening(image, band, window, crack.depth)
    if found is None:
        raise ValueError(f"crack {crack.crack_id} reaches the edge of the slice")
    return found


def _plan_crack(rng: np.random.Generator, clean: list[np.ndarray], cell: RealCell, crack_id: str,
                rois: list[Roi], level: dict) -> RealCrack:
    n_slices = cell.last_slice - cell.first_slice + 1
    axis = (cell.image_size / 2 + cell.shift[0], cell.image_size / 2 + cell.shift[1])
    for _ in range(400):
        roi = rois[rng.integers(len(rois))]
        n = int(rng.integers(level["slices"][0], min(level["slices"][1], n_slices) + 1))
        first = cell.first_slice + int(rng.integers(0, n_slices - n + 1))
        length = float(rng.uniform(*level["length"]))
        width = float(rng.uniform(*level["width"]))
        depth = float(rng.uniform(*level["depth"]))
        x = float(rng.uniform(roi.x_min, roi.x_max))
        y = float(rng.uniform(roi.y_min, roi.y_max))
        angle = math.atan2(y - axis[1], x - axis[0]) + float(rng.normal(0, 0.3))
        steps = rng.normal(0, 0.5, size=(n, 2))
        steps[0] = 0
        drift = [tuple(map(float, d)) for d in np.cumsum(steps, axis=0)]
        crack = RealCrack(crack_id, roi.name, first, first + n - 1, x, y, angle, length, width,
                          depth / 255.0, drift, depth=depth)
        margin = 4
        if not all((p := crack.polygon(s))[:, 0].min() >= roi.x_min + margin
                   and p[:, 0].max() <= roi.x_max - 1 - margin
                   and p[:, 1].min() >= roi.y_min + margin and p[:, 1].max() <= roi.y_max - 1 - margin
                   for s in range(crack.first_slice, crack.last_slice + 1)):
            continue
        # In the truth only if it breaks a bright layer in every slice: the darkening
        # must add up to at least 3 px of crack at full depth.
        visible = True
        for s in range(crack.first_slice, crack.last_slice + 1):
            _, delta = crack_darkening(clean[s - cell.first_slice], crack, s)
            if delta.sum() < 3.0 * width * depth:
                visible = False
                break
        if visible:
            return crack
    raise ValueError(f"could not place a visible crack in the ROIs of {cell.battery_id}")


def plan_cells(settings: RealCTSettings, volume: np.ndarray, rois: list[Roi]) -> list[RealCell]:
    """Draw every cell's view and cracks from the seed; checks train/test disjointness."""
    level = DIFFICULTY[settings.difficulty]
    size = int(max(volume.shape[1:]))
    centre = cell_axis(volume)
    first, last = settings.first_slice, settings.first_slice + len(volume) - 1
    counts = {"train_normal": settings.n_train_normal, "train_defect": settings.n_train_defect,
              "test": settings.n_test}
    n_defect_test = int(round(settings.n_test * settings.test_defect_fraction))
    cells = []
    for split in SPLITS:
        sector = SECTORS["test" if split == "test" else "train"]
        for i in range(counts[split]):
            rng = np.random.default_rng([settings.seed, SPLITS.index(split), i])
            for _ in range(10_000):
                cell = RealCell(battery_name(split, i + 1), split, len(cells), size, first, last,
                                flip=bool(rng.integers(2)), angle=float(rng.uniform(0, 360)),
                                shift=tuple(float(v) for v in rng.uniform(-settings.shift, settings.shift, 2)),
                                reverse_z=bool(rng.integers(2)), gain=float(rng.uniform(*settings.gain)))
                if all(_in_sector(_footprint_angle(cell, roi, centre), sector) for roi in rois):
                    break
            else:
                raise ValueError(f"no view puts every ROI in the {split} sector: ROIs too far apart")
            cracked = split == "train_defect" or (split == "test" and i < n_defect_test)
            if cracked:
                n = int(rng.integers(settings.cracks_per_cell[0], settings.cracks_per_cell[1] + 1))
                clean = [render_slice(volume, cell, centre, k, with_cracks=False) for k in range(len(volume))]
                cell.cracks = [_plan_crack(rng, clean, cell, f"{cell.battery_id}#{j + 1}", rois, level)
                               for j in range(n)]
            cells.append(cell)
    overlap = footprint_overlap(cells, rois, centre, volume.shape[1:])
    if overlap:
        raise ValueError(f"training and test ROIs share {overlap} source pixels: place the ROIs closer to "
                         "each other's opposite side of the cell axis")
    return cells


def _write_cell(volume: np.ndarray, cell: RealCell, centre: tuple[float, float], out_dir: Path) -> list[dict]:
    folder = out_dir / "scans" / cell.split / cell.battery_id / AXIS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(cell.last_slice - cell.first_slice + 1):
        s = cell.first_slice + k
        # 16-bit, as scanners export: grey level x 256, rounded.
        image = np.clip(np.rint(render_slice(volume, cell, centre, k) * 256.0), 0, 65535).astype(np.uint16)
        path = folder / slice_filename(cell.battery_id, s)
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, image)
        rows.append({"split": cell.split, "battery_id": cell.battery_id, "slice_index": s,
                     "file": str(path.relative_to(out_dir)),
                     "n_cracks": sum(cr.geometry(s) is not None for cr in cell.cracks)})
    return rows


def generate(out_dir: str | Path, settings: RealCTSettings, rois: list[Roi]) -> dict:
    """Write the real-background set: scans, VIA annotations, COCO, truth tables, manifest.

    The layout and truth formats are the synthetic demo's (``anodect.demo.generator``),
    so the pipeline, the RF-DETR training set and the report read it the same way.
    """
    from . import truth as demo_truth

    out_dir = Path(out_dir)
    volume = load_volume(settings.source_dir)
    size = int(max(volume.shape[1:]))
    for roi in rois:
        if roi.x_min < 0 or roi.y_min < 0 or roi.x_max > size or roi.y_max > size:
            raise ValueError(f"ROI {roi.name} lies outside the {size}x{size} real slices")
    centre = cell_axis(volume)
    cells = plan_cells(settings, volume, rois)
    slice_rows = [row for cell in cells for row in _write_cell(volume, cell, centre, out_dir)]
    truth = demo_truth.write_demo_truth(out_dir, cells, slice_rows, rois)
    manifest = {
        "generator": "anodect.demo.realct",
        "settings": {**asdict(settings), "out_dir": str(out_dir)},
        "source": {"dir": settings.source_dir, "slices": int(len(volume)), "size": size,
                   "cell_axis": [round(c, 2) for c in centre]},
        "difficulty": {settings.difficulty: DIFFICULTY[settings.difficulty]},
        "rois": [asdict(r) for r in rois],
        "cells": [asdict(c) for c in cells],
        "counts": {split: sum(c.split == split for c in cells) for split in SPLITS},
        "n_slices": len(slice_rows),
        "n_cracks": sum(len(c.cracks) for c in cells),
        "train_test_overlap_px": 0,
        "truth": truth,
    }
    write_json(out_dir / "manifest.json", manifest)
    log.info("real-background set: %d cells, %d slices, %d cracks (%s) in %s", len(cells), len(slice_rows),
             manifest["n_cracks"], settings.difficulty, out_dir)
    return manifest


def generate_configured(demo: dict, rois: list[Roi], crack_range: tuple[int, int] | None, workers: int = 1) -> dict:
    """The generate_demo rule: the synthetic demo or the real-background set, by ``demo.source``."""
    if demo.get("source", "synthetic") == "real_ct":
        return generate(demo["out_dir"], RealCTSettings.from_config({"demo": demo}), rois)
    from .generator import DemoSettings
    from .generator import generate as generate_synthetic

    return generate_synthetic(demo["out_dir"], DemoSettings.from_config({"demo": demo}), rois,
                              crack_range=crack_range, workers=workers)
