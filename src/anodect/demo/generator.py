"""Synthetic axial CT of cylindrical Li-ion cells, with anode cracks and their ground truth.

A cell is a steel can around a jelly roll: an Archimedean spiral of double-sided
anode (graphite on a bright copper foil), separator and cathode (oxide on an
aluminium foil), wound on a hollow mandrel. Each cell has its own radius, centre,
rotation, number of turns, winding ellipticity and contrast; its layers change
slowly from slice to slice. Slices get scanner blur, intensity-dependent noise,
ring artefacts about the rotation axis and streaks from the can, and are written
as 16-bit TIFFs in the original tool's naming (``<battery>/[Z軸]/<battery>_負極_NNNN.tif``).

An anode crack is a thin dark break across one or more anode layers inside an ROI,
lasting 2 to 12 consecutive slices, drifting and tapering along the way. The crack
only darkens anode pixels inside its band, and blur is a 5x5 kernel, so a slice
rendered with and without its cracks differs inside the annotated polygon grown
by ``BLUR_RADIUS`` pixels and nowhere else.

Everything is drawn from ``numpy.random.default_rng`` streams keyed by (seed, cell)
and (seed, cell, slice), so a seed gives the same demo whatever the worker count.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import tifffile

from ..config import Roi
from ..io import atomic_path, write_json
from ..synthesis import capsule_band, capsule_polygon, taper

log = logging.getLogger(__name__)

BLUR_RADIUS = 2  # the scanner blur's kernel is (2*BLUR_RADIUS+1)^2: finite support
AXIS_FOLDER = "[Z軸]"
SPLITS = ("train_normal", "train_defect", "test")
_SPLIT_PREFIX = {"train_normal": ("N", "正常セル"), "train_defect": ("D", "欠陥セル"), "test": ("T", "検査セル")}

# One turn of the jelly roll from the inside out: (material, share of the pitch, intensity).
# The copper foil counts as anode: a crack through the anode breaks it too.
_LAYERS = (
    ("separator", 0.06, 0.12),
    ("anode", 0.21, 0.30),
    ("copper", 0.04, 0.95),
    ("anode", 0.21, 0.30),
    ("separator", 0.06, 0.12),
    ("cathode", 0.18, 0.62),
    ("aluminium", 0.06, 0.42),
    ("cathode", 0.18, 0.62),
)
_VOID = 0.10  # electrolyte-filled gap: what a crack shows
_LUT_SIZE = 4096


@dataclass
class CrackSpec:
    """One crack: where it starts, how it drifts, and how hard it is to see."""

    crack_id: str
    roi: str
    first_slice: int
    last_slice: int
    x: float
    y: float
    angle: float
    length: float
    width: float
    contrast: float
    drift: list[tuple[float, float]] = field(default_factory=list)  # per slice offset of the centre

    def geometry(self, slice_index: int) -> tuple[float, float, float, float] | None:
        """(x, y, length, width) of the crack in this slice, or None outside its span."""
        if not self.first_slice <= slice_index <= self.last_slice:
            return None
        k = slice_index - self.first_slice
        n = self.last_slice - self.first_slice + 1
        dx, dy = self.drift[k]
        return self.x + dx, self.y + dy, self.length * taper(k, n), self.width

    def polygon(self, slice_index: int) -> np.ndarray | None:
        """Corners (4x2, x/y) of the rectangle outside which the crack changes nothing."""
        geo = self.geometry(slice_index)
        if geo is None:
            return None
        x, y, length, width = geo
        return capsule_polygon(x, y, self.angle, length, width)


@dataclass
class CellSpec:
    """Everything that makes one synthetic cell what it is."""

    battery_id: str
    split: str
    index: int
    seed: int
    image_size: int
    first_slice: int
    last_slice: int
    cx: float
    cy: float
    r_mandrel: float
    r_wind: float
    r_can_in: float
    r_can_out: float
    n_turns: int
    phase: float
    twist: float
    ellipticity: float
    ellipse_angle: float
    gain: float
    offset: float
    noise: float
    cracks: list[CrackSpec] = field(default_factory=list)

    @property
    def pitch(self) -> float:
        return (self.r_wind - self.r_mandrel) / self.n_turns


@dataclass(frozen=True)
class DemoSettings:
    """The ``demo`` config section, plus the ROIs and the analysed slice range."""

    out_dir: str = "results/demo"
    seed: int = 7
    image_size: int = 1024
    n_train_normal: int = 10
    n_train_defect: int = 6
    n_test: int = 12
    test_defect_fraction: float = 0.5
    first_slice: int = 203
    last_slice: int = 232
    crack_slices: tuple[int, int] = (2, 12)
    cracks_per_cell: tuple[int, int] = (1, 2)
    contrast: tuple[float, float] = (0.3, 0.9)
    width: tuple[float, float] = (1.2, 3.0)
    length: tuple[float, float] = (12.0, 36.0)

    @classmethod
    def from_config(cls, config: dict) -> "DemoSettings":
        demo = config.get("demo", {})
        kwargs = {k: demo[k] for k in cls.__dataclass_fields__ if k in demo}
        for key in ("crack_slices", "cracks_per_cell", "contrast", "width", "length"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


def _polar(cell: "CellSpec", xx: np.ndarray, yy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radius (with the winding's ellipticity) and angle of pixels about the cell's axis."""
    dx, dy = xx - cell.cx, yy - cell.cy
    theta = np.arctan2(dy, dx)
    r = np.hypot(dx, dy) * (1 + cell.ellipticity * np.cos(2 * (theta - cell.ellipse_angle)))
    return r.astype(np.float32), theta.astype(np.float32)


def _spiral(cell: "CellSpec", r: np.ndarray, theta: np.ndarray, slice_index: int):
    """Position in the jelly roll: LUT index within the turn, turn number, inside-winding mask."""
    t = (r - cell.r_mandrel) / cell.pitch - (theta + cell.phase + cell.twist * slice_index) / (2 * math.pi)
    turn = np.floor(t)
    idx = np.minimum(((t - turn) * _LUT_SIZE).astype(np.int32), _LUT_SIZE - 1)
    turn_i = turn.astype(np.int32)
    winding = (turn_i >= 0) & (turn_i < cell.n_turns) & (r < cell.r_wind) & (r >= cell.r_mandrel)
    return idx, turn, winding


def _crack_band(crack: "CrackSpec", slice_index: int, shape: tuple[int, int]):
    """Soft mask (0..1) of a crack in a window of the slice, and the window's origin."""
    x, y, length, width = crack.geometry(slice_index)
    return capsule_band(x, y, crack.angle, length, width, shape)


def _anode_crossed(cell: "CellSpec", crack: "CrackSpec", slice_index: int, lut_anode: np.ndarray) -> float:
    """Anode area (pixels) the crack darkens in one slice."""
    band, _, (xx, yy) = _crack_band(crack, slice_index, (cell.image_size, cell.image_size))
    r, theta = _polar(cell, xx, yy)
    idx, _, winding = _spiral(cell, r, theta, slice_index)
    return float((band * np.where(winding, lut_anode[idx], 0)).sum())


def battery_name(split: str, number: int) -> str:
    """Folder names as users have them: brackets, a space and Japanese text."""
    prefix, label = _SPLIT_PREFIX[split]
    return f"[{prefix}{number:02d}] {label}"


def slice_filename(battery_id: str, slice_index: int) -> str:
    return f"{battery_id}_負極_{slice_index:04d}.tif"


def _plan_crack(
    rng: np.random.Generator, cell: CellSpec, crack_id: str, rois: list[Roi],
    settings: DemoSettings, crack_range: tuple[int, int],
) -> CrackSpec:
    scale = settings.image_size / 1024
    lo, hi = crack_range
    span_max = min(settings.crack_slices[1], hi - lo + 1)
    span_min = min(settings.crack_slices[0], span_max)
    for _ in range(200):
        roi = rois[rng.integers(len(rois))]
        n = int(rng.integers(span_min, span_max + 1))
        first = int(rng.integers(lo, hi - n + 2))
        length = float(rng.uniform(*settings.length)) * scale
        width = float(rng.uniform(*settings.width)) * scale
        contrast = float(rng.uniform(*settings.contrast))
        x = float(rng.uniform(roi.x_min, roi.x_max))
        y = float(rng.uniform(roi.y_min, roi.y_max))
        r = math.hypot(x - cell.cx, y - cell.cy)
        if not cell.r_mandrel + 2 * cell.pitch < r < cell.r_wind - 2 * cell.pitch:
            continue
        # Cracks run across the layers: roughly along the radius.
        angle = math.atan2(y - cell.cy, x - cell.cx) + float(rng.normal(0, 0.35))
        steps = rng.normal(0, 0.6 * scale, size=(n, 2))
        steps[0] = 0
        drift = [tuple(map(float, d)) for d in np.cumsum(steps, axis=0)]
        crack = CrackSpec(crack_id, roi.name, first, first + n - 1, x, y, angle, length,
                          width, contrast, drift)
        margin = 1 + BLUR_RADIUS
        inside = all(
            (poly := crack.polygon(s))[:, 0].min() >= roi.x_min + margin
            and poly[:, 0].max() <= roi.x_max - 1 - margin
            and poly[:, 1].min() >= roi.y_min + margin
            and poly[:, 1].max() <= roi.y_max - 1 - margin
            for s in range(crack.first_slice, crack.last_slice + 1)
        )
        # A crack in the truth must be a crack in the pixels: in every slice it
        # has to break through most of an anode layer, not slip between two.
        lut_anode = CellRenderer._layer_lut(cell.pitch)[1]
        visible = inside and all(
            _anode_crossed(cell, crack, s, lut_anode) >= 0.3 * crack.width * cell.pitch
            for s in range(crack.first_slice, crack.last_slice + 1)
        )
        if visible:
            return crack
    raise ValueError(
        f"could not place a crack inside the ROIs of cell {cell.battery_id}: "
        "ROIs too small for demo.length, or outside the winding"
    )


def plan_cells(settings: DemoSettings, rois: list[Roi], crack_range: tuple[int, int]) -> list[CellSpec]:
    """Draw every cell of the demo (geometry, contrast, cracks) from the seed."""
    size = settings.image_size
    scale = size / 1024
    counts = {"train_normal": settings.n_train_normal, "train_defect": settings.n_train_defect,
              "test": settings.n_test}
    n_test_defect = int(round(settings.n_test * settings.test_defect_fraction))
    # Which test cells are defective is itself drawn from the seed, so the
    # verdict cannot be guessed from the cell number.
    order_rng = np.random.default_rng([settings.seed, 999_999])
    test_defect = set(order_rng.permutation(settings.n_test)[:n_test_defect].tolist())
    cells = []
    serial = 0
    for split in SPLITS:
        for i in range(counts[split]):
            rng = np.random.default_rng([settings.seed, serial])
            r_can_out = rng.uniform(0.445, 0.455) * size
            r_can_in = r_can_out - rng.uniform(7, 9) * scale
            cell = CellSpec(
                battery_id=battery_name(split, i + 1),
                split=split,
                index=serial,
                seed=settings.seed,
                image_size=size,
                first_slice=settings.first_slice,
                last_slice=settings.last_slice,
                cx=size / 2 + rng.uniform(-10, 10) * scale,
                cy=size / 2 + rng.uniform(-10, 10) * scale,
                r_mandrel=rng.uniform(0.045, 0.065) * size,
                r_wind=r_can_in - rng.uniform(4, 8) * scale,
                r_can_in=r_can_in,
                r_can_out=r_can_out,
                n_turns=int(rng.integers(20, 27)),
                phase=rng.uniform(0, 2 * math.pi),
                twist=rng.normal(0, 0.003),
                ellipticity=rng.uniform(0, 0.012),
                ellipse_angle=rng.uniform(0, math.pi),
                gain=rng.uniform(0.9, 1.1),
                offset=rng.uniform(1000, 2500),
                noise=rng.uniform(0.02, 0.035),
            )
            defective = split == "train_defect" or (split == "test" and i in test_defect)
            if defective:
                n_cracks = int(rng.integers(settings.cracks_per_cell[0], settings.cracks_per_cell[1] + 1))
                for k in range(n_cracks):
                    cell.cracks.append(
                        _plan_crack(rng, cell, f"{split[0:2]}{i + 1:02d}c{k + 1}", rois, settings, crack_range)
                    )
            cells.append(cell)
            serial += 1
    return cells


class CellRenderer:
    """Renders the slices of one cell; the per-cell fields are computed once."""

    def __init__(self, cell: CellSpec):
        self.cell = cell
        size = cell.image_size
        scale = size / 1024
        rng = np.random.default_rng([cell.seed, cell.index, 1])
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        self.r, self.theta = _polar(cell, xx, yy)
        r = np.hypot(xx - cell.cx, yy - cell.cy)
        self.strip_grid = np.arange(-1, cell.n_turns + 3, dtype=np.float32)
        self.turn_gain = (1 + rng.normal(0, 0.04, len(self.strip_grid))).astype(np.float32)
        # Beam hardening darkens the middle of a dense cylinder ("cupping").
        self.cupping = (1 - 0.1 * np.clip(1 - (r / cell.r_wind) ** 2, 0, 1)).astype(np.float32)
        self.lut_value, self.lut_anode = self._layer_lut(cell.pitch)
        self.background = self._background(rng, scale)
        self.artefacts = self._artefacts(rng, size, scale)
        self.texture_keys = {}
        self._texture_rng_seed = [cell.seed, cell.index, 2]

    @staticmethod
    def _layer_lut(pitch: float) -> tuple[np.ndarray, np.ndarray]:
        u = (np.arange(_LUT_SIZE) + 0.5) / _LUT_SIZE
        value = np.zeros(_LUT_SIZE, np.float32)
        anode = np.zeros(_LUT_SIZE, np.float32)
        edge = 0.0
        for material, share, intensity in _LAYERS:
            sel = (u >= edge) & (u < edge + share + 1e-9)
            value[sel] = intensity
            anode[sel] = 1.0 if material in ("anode", "copper") else 0.0
            edge += share
        # Smooth the profile by about half a pixel so layer edges are anti-aliased.
        sigma_bins = max(0.45 / pitch * _LUT_SIZE, 1.0)
        radius = int(4 * sigma_bins)
        kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_bins) ** 2)
        kernel /= kernel.sum()
        wrap = lambda a: np.convolve(np.concatenate([a[-radius:], a, a[:radius]]), kernel, "valid")
        return wrap(value).astype(np.float32), wrap(anode).astype(np.float32)

    def _background(self, rng: np.random.Generator, scale: float) -> np.ndarray:
        c, r = self.cell, self.r
        bg = np.full(r.shape, 0.02, np.float32)  # air
        holder_in = c.r_can_out + 0.02 * c.image_size
        bg[(r >= holder_in) & (r < holder_in + 0.015 * c.image_size)] = 0.07  # sample holder
        bg[(r >= c.r_can_in) & (r < c.r_can_out)] = 1.0  # steel can
        bg[(r >= c.r_wind) & (r < c.r_can_in)] = _VOID
        bg[r < c.r_mandrel] = 0.03  # hollow mandrel
        return bg

    @staticmethod
    def _artefacts(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        r_axis = np.hypot(xx - size / 2, yy - size / 2)
        # Ring artefacts: detector elements that read a little high or low trace
        # circles about the rotation axis.
        profile = np.zeros(int(size * 0.75) + 2, np.float32)
        n_rings = int(rng.integers(4, 10))
        centres = rng.integers(5, len(profile) - 5, n_rings)
        profile[centres] = rng.normal(0, 0.035, n_rings)
        profile = np.convolve(profile, [0.25, 0.5, 0.25], "same")
        field = profile[np.minimum(r_axis.astype(np.int32), len(profile) - 1)]
        # Streaks: beam hardening along lines that graze the steel can.
        for _ in range(int(rng.integers(2, 6))):
            angle = rng.uniform(0, math.pi)
            offset = rng.uniform(-0.45, 0.45) * size
            dist = np.abs((xx - size / 2) * math.sin(angle) - (yy - size / 2) * math.cos(angle) - offset)
            field += rng.choice([-1, 1]) * rng.uniform(0.008, 0.02) * np.exp(-dist / (1.5 * scale))
        return field

    def _texture(self, slice_index: int) -> np.ndarray:
        """Slow density variation of the coatings, continuous from slice to slice."""
        c = self.cell
        step = 8
        k0 = (slice_index - c.first_slice) // step
        frac = ((slice_index - c.first_slice) % step) / step
        fields = []
        for k in (k0, k0 + 1):
            if k not in self.texture_keys:
                rng = np.random.default_rng(self._texture_rng_seed + [k + 1000])
                low = max(c.image_size // 32, 4)
                small = cv2.GaussianBlur(rng.normal(0, 1, (low, low)).astype(np.float32), (0, 0), 1.0)
                self.texture_keys[k] = cv2.resize(small, (c.image_size, c.image_size),
                                                  interpolation=cv2.INTER_CUBIC)
            fields.append(self.texture_keys[k])
        return 1 + 0.04 * ((1 - frac) * fields[0] + frac * fields[1])

    def phantom(self, slice_index: int, with_cracks: bool = True) -> np.ndarray:
        """Noise-free attenuation image of one slice (float32, roughly 0..1)."""
        c = self.cell
        idx, turn, winding = _spiral(c, self.r, self.theta, slice_index)
        # Coating density drifts along the wound strip. Index it by the position
        # along the strip (turn plus angle), not by turn alone, or every layer
        # would jump in brightness where the angle wraps, inside the ROIs.
        strip = turn + (self.theta + math.pi) / (2 * math.pi)
        value = self.lut_value[idx] * np.interp(strip, self.strip_grid, self.turn_gain).astype(np.float32)
        value *= self._texture(slice_index) * self.cupping
        image = np.where(winding, value, self.background).astype(np.float32)
        if with_cracks:
            anode = np.where(winding, self.lut_anode[idx], 0.0).astype(np.float32)
            for crack in c.cracks:
                self._apply_crack(image, anode, crack, slice_index)
        return image

    @staticmethod
    def _apply_crack(image: np.ndarray, anode: np.ndarray, crack: CrackSpec, slice_index: int) -> None:
        if crack.geometry(slice_index) is None:
            return
        band, (x0, y0, x1, y1), _ = _crack_band(crack, slice_index, image.shape)
        region = image[y0:y1, x0:x1]
        weight = crack.contrast * band * anode[y0:y1, x0:x1]
        region -= weight * (region - _VOID)

    def render(self, slice_index: int, with_cracks: bool = True) -> np.ndarray:
        """One slice as the scanner exports it: blurred, noisy, 16-bit."""
        c = self.cell
        image = self.phantom(slice_index, with_cracks)
        k = 2 * BLUR_RADIUS + 1
        image = cv2.GaussianBlur(image, (k, k), 0.9, borderType=cv2.BORDER_REFLECT)
        rng = np.random.default_rng([c.seed, c.index, 3, slice_index])
        z = rng.standard_normal(image.shape, dtype=np.float32)
        image = image + self.artefacts + c.noise * np.sqrt(np.maximum(image, 0) + 0.1) * z
        return np.clip(np.rint(image * c.gain * 52000 + c.offset), 0, 65535).astype(np.uint16)


def crack_box(polygon: np.ndarray, image_size: int) -> tuple[int, int, int, int]:
    """Integer box around a polygon: corners (x1, y1, x2, y2), pixels x1..x2-1 and y1..y2-1 (the
    project's box convention, ``anodect.regions``), covering every pixel the polygon touches."""
    x1, y1 = np.floor(polygon.min(axis=0)).astype(int)
    x2, y2 = np.ceil(polygon.max(axis=0)).astype(int)
    clip = lambda v: int(min(max(v, 0), image_size - 1))
    return clip(x1), clip(y1), clip(x2) + 1, clip(y2) + 1


def _render_cell(args: tuple[CellSpec, str]) -> list[dict]:
    cell, out_dir = args
    renderer = CellRenderer(cell)
    folder = Path(out_dir) / "scans" / cell.split / cell.battery_id / AXIS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(cell.first_slice, cell.last_slice + 1):
        image = renderer.render(s)
        path = folder / slice_filename(cell.battery_id, s)
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, image)
        rows.append({"split": cell.split, "battery_id": cell.battery_id, "slice_index": s,
                     "file": str(path.relative_to(out_dir)),
                     "n_cracks": sum(cr.geometry(s) is not None for cr in cell.cracks)})
    return rows


def generate(
    out_dir: str | Path, settings: DemoSettings, rois: list[Roi],
    crack_range: tuple[int, int] | None = None, workers: int = 1,
) -> dict:
    """Write the demo: scans, VIA annotations, COCO, truth tables and a manifest.

    Args:
        out_dir: destination folder (``demo.out_dir``).
        settings: generator settings.
        rois: the configured ROIs; cracks are placed inside them.
        crack_range: inclusive slice range cracks must lie in (the analysed
            range); defaults to the generated range.
        workers: processes to render cells with; the output does not depend on it.

    Returns:
        The manifest written to ``manifest.json``.
    """
    from . import truth as demo_truth

    out_dir = Path(out_dir)
    lo = settings.first_slice if crack_range is None else max(crack_range[0], settings.first_slice)
    hi = settings.last_slice if crack_range is None else min(crack_range[1], settings.last_slice)
    if lo > hi:
        raise ValueError(f"no slice of demo range {settings.first_slice}..{settings.last_slice} "
                         f"lies in the analysed range {crack_range}")
    cells = plan_cells(settings, rois, (lo, hi))
    jobs = [(cell, str(out_dir)) for cell in cells]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            slice_rows = [row for rows in pool.map(_render_cell, jobs) for row in rows]
    else:
        slice_rows = [row for job in jobs for row in _render_cell(job)]
    truth = demo_truth.write_demo_truth(out_dir, cells, slice_rows, rois)
    manifest = {
        "generator": "anodect.demo.generator",
        "settings": {**asdict(settings), "out_dir": str(out_dir)},
        "crack_range": [lo, hi],
        "rois": [asdict(r) for r in rois],
        "cells": [asdict(c) for c in cells],
        "counts": {split: sum(c.split == split for c in cells) for split in SPLITS},
        "n_slices": len(slice_rows),
        "n_cracks": sum(len(c.cracks) for c in cells),
        "truth": truth,
    }
    write_json(out_dir / "manifest.json", manifest)
    log.info("demo: %d cells, %d slices, %d cracks in %s", len(cells), len(slice_rows),
             manifest["n_cracks"], out_dir)
    return manifest
