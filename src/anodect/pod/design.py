"""The study's cracks: rendered at a grid of sizes into normal scans that no model trained on.

Every crack is drawn by ``anodect.synthesis`` (a break across the bright layers,
blurred by the scanner, never darker than the gap beside the layer) into a copy of
a clean normal scan's crops, so each model sees it through its normal scoring. The
design is a balanced random one: each crack takes one level of depth, width, length
and span, each level of a factor used equally often, the combinations shuffled with
the seed. One set of cracks then serves the fit of every predictor (each curve
averaged over the other factors' levels) and the fit of depth and length together.

A copy holds several cracks: one per ROI in each of a few blocks of slices, the
blocks far enough apart that neither the slab, the volume window nor the tracking
joins two of them. Slices at the scan's ends are left out (the volume evidence sees
only one side there).

A crack's *depth* is what it really removed: the largest grey-level drop it made in
the 8-bit crops inside the ROI, not the renderer's nominal depth, which a faint layer
cannot give; its width and length are the capsule's. Cracks whose footprint misses
the ROI, or that changed nothing, are listed and left out of the fits.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import scipy.ndimage

from ..crops import CropSet
from ..synthesis import (FOOTPRINT_LEVEL, GAP_WINDOW, PSF_SIGMA, Crack, CrackRanges, Rendered, capsule_band,
                         render_into_crops, sample)

log = logging.getLogger(__name__)

CRACK_COLUMNS = ["crack_id", "copy_id", "source_scan", "roi", "roi_index", "first_pos", "last_pos", "first_slice",
                 "last_slice", "x", "y", "angle", "depth_nominal", "depth", "width", "length", "slices",
                 "noise_sigma", "depth_sigma", "footprint_px", "usable"]


@dataclass(frozen=True)
class PodSettings:
    """The ``pod`` config keys that shape the cracks (``pod`` in config/README.md)."""

    cracks: int = 90
    depth: tuple = (4.0, 6.0, 9.0, 13.0, 19.0, 27.0, 40.0)
    width: tuple = (1.0, 1.5, 2.0, 3.0)
    length: tuple = (6.0, 10.0, 15.0, 22.0, 32.0)
    slices: tuple = (6,)
    gap: int = 3
    seed: int = 0
    voxel_size_um: float | None = None
    renderer: str = "project"

    def __post_init__(self):
        if self.renderer not in RENDERERS:
            raise ValueError(f"pod.renderer must be one of {', '.join(RENDERERS)}, not {self.renderer!r}")

    @classmethod
    def from_config(cls, section: dict) -> "PodSettings":
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in section.items()
                  if k in cls.__dataclass_fields__}
        return cls(**kwargs)

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def pull_into_crops(crops: np.ndarray, cracks: list[tuple[int, Crack]]) -> Rendered:
    """The demo generator's crack physics on the same capsules: the layer pulled towards the dark gap
    beside it by a share ``contrast`` inside the capsule, then the scanner's blur.

    The project's renderer removes up to ``depth`` grey levels (capped, additive); this one removes
    a share of what each pixel has above the gap (proportional), so a crack fades with its layer. A
    second generator, for the models trained on the project's renderer (the crack segmenter):
    ``contrast`` is set so that the pixel with the most room loses at most ``depth``.
    """
    out = crops.astype(np.float32)
    mask = np.zeros(crops.shape, bool)
    for r, crack in cracks:
        for k in range(crack.n_slices):
            s = crack.first + k
            if not 0 <= s < len(out):
                continue
            image = out[s, r]
            local = cv2.GaussianBlur(image, (0, 0), 1.0)
            room = np.maximum(local - cv2.erode(local, np.ones((GAP_WINDOW, GAP_WINDOW), np.uint8)), 0)
            band = np.zeros(image.shape, np.float32)
            for x, y, a, length, width in crack.segments(k):
                b, (x0, y0, x1, y1), _ = capsule_band(x, y, a, length, width, image.shape)
                np.maximum(band[y0:y1, x0:x1], b, out=band[y0:y1, x0:x1])
            inside = band > 0.5
            if not inside.any():
                continue
            contrast = min(1.0, crack.depth / max(float(room[inside].max()), 1e-6))
            delta = cv2.GaussianBlur(contrast * band, (0, 0), PSF_SIGMA) * room
            out[s, r] -= delta
            mask[s, r] |= delta >= FOOTPRINT_LEVEL
    return Rendered(np.clip(np.rint(out), 0, 255).astype(np.uint8), mask, list(cracks))


RENDERERS = {"project": render_into_crops, "pull": pull_into_crops}


def noise_sigma(crops: np.ndarray) -> float:
    """The scan's noise in grey levels, from its ROI crops [S, R, H, W].

    Immerkaer's Laplacian-difference kernel cancels planar structure; the median of its
    absolute response (not the mean) keeps the layer edges out of the estimate. For
    white noise the kernel's response has 6 sigma (the root of its squared weights, 36).
    """
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    flat = crops.reshape(-1, *crops.shape[-2:]).astype(np.float32)
    responses = np.concatenate([np.abs(scipy.ndimage.convolve(c, kernel, mode="nearest")[1:-1, 1:-1]).ravel()
                                for c in flat])
    if np.issubdtype(crops.dtype, np.integer):
        # 8-bit crops give whole-number responses: their plain median moves in steps of 0.25 sigma
        # (every real-CT cell read 1.24). The grouped median interpolates within the median's bin.
        counts = np.bincount(np.rint(responses).astype(np.int64))
        below = np.cumsum(counts) - counts
        m = int(np.searchsorted(np.cumsum(counts), len(responses) / 2, side="right"))
        median = max(m - 0.5 + (len(responses) / 2 - below[m]) / counts[m], 0.0)
    else:
        median = float(np.median(responses))
    return float(1.4826 * median / 6.0)


def balanced_levels(levels: tuple, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` values of a factor, each level equally often (to within one), in a seeded order."""
    values = np.resize(np.asarray(levels, float), n)
    return values[rng.permutation(n)]


def blocks(n_slices: int, span: int, gap: int) -> list[int]:
    """First positions of the slice blocks a copy holds cracks in (one slice kept free at each end)."""
    out, first = [], 1
    while first + span <= n_slices - 1:
        out.append(first)
        first += span + gap
    return out


@dataclass
class Copy:
    """One cracked copy of a clean scan."""

    copy_id: str
    source: CropSet
    cracks: list = field(default_factory=list)  # (crack_id, roi index, Crack)


def _place(rng: np.random.Generator, image: np.ndarray, inner: tuple[int, int, int, int], first: int, span: int,
           depth: float, width: float, length: float) -> Crack:
    """A crack of the given size centred on a bright pixel of the ROI (a layer it can break), across the layers."""
    x1, y1, x2, y2 = inner
    pad = 6
    region = image[y1 + pad:y2 - pad, x1 + pad:x2 - pad].astype(np.float32)
    bright = np.argwhere(region >= np.percentile(region, 70))
    y, x = bright[rng.integers(len(bright))] + (y1 + pad, x1 + pad)
    ranges = CrackRanges(slices=(span, span), across=1.0)
    crack = sample(rng, image.shape, span, ranges, centre=(float(x), float(y)), image=image)
    return replace(crack, depth=float(depth), width=float(width), length=float(length), first=first)


def plan(sources: list[CropSet], settings: PodSettings) -> list[Copy]:
    """Every crack of the study, in copies of the clean scans (round robin over the scans, seeded)."""
    rng = np.random.default_rng(settings.seed)
    n = int(settings.cracks)
    factors = {k: balanced_levels(getattr(settings, k), n, rng) for k in ("depth", "width", "length", "slices")}
    usable = [s for s in sources if s.n_slices]
    span_max = int(max(settings.slices))
    usable = [s for s in usable if blocks(s.n_slices, span_max, settings.gap)]
    if not usable:
        raise ValueError(f"no normal scan has room for a crack of {span_max} slices (the study's cells have "
                         f"{sorted({s.n_slices for s in sources})} slices)")
    copies, k, c = [], 0, 0
    while k < n:
        src = usable[c % len(usable)]
        copy = Copy(f"pod{c:03d}_{src.scan_id}", src)
        c += 1
        for first in blocks(src.n_slices, span_max, settings.gap):
            for r in range(len(src.roi_names)):
                if k >= n:
                    break
                span = int(factors["slices"][k])
                start = first + (span_max - span) // 2
                mid = start + span // 2
                crack = _place(rng, src.crops[mid, r], src.roi_in_crop(r), start, span, factors["depth"][k],
                               factors["width"][k], factors["length"][k])
                copy.cracks.append((f"c{k:04d}", r, crack))
                k += 1
        copies.append(copy)
    return copies


def render_copy(copy: Copy, sigma: float, voxel_size_um: float | None = None, renderer: str = "project"
                ) -> tuple[CropSet, np.ndarray, list[dict]]:
    """The cracked crops, the footprint [S, R, H, W] (inside the ROIs) and one record per crack."""
    src = copy.source
    draw = RENDERERS[renderer]
    rendered = draw(src.crops, [(r, crack) for _, r, crack in copy.cracks])
    inside = np.zeros(src.crops.shape[1:], bool)
    for r in range(len(src.roi_names)):
        x1, y1, x2, y2 = src.roi_in_crop(r)
        inside[r, y1:y2, x1:x2] = True
    drop = src.crops.astype(np.int16) - rendered.crops.astype(np.int16)
    footprint = np.zeros(src.crops.shape, np.uint16)  # crack number + 1 per pixel (0: none)
    records = []
    for number, (crack_id, r, crack) in enumerate(copy.cracks):
        # Each crack's own footprint: its ROI's footprint in its slices (two cracks of a ROI lie in
        # blocks of slices apart, and the blur stays in the slice), so no pixel is credited twice.
        alone = rendered.footprint[:, r] & inside[r]
        span_mask = np.zeros(len(alone), bool)
        span_mask[max(crack.first, 0):crack.last + 1] = True
        alone &= span_mask[:, None, None]
        footprint[:, r][alone] = number + 1
        depth = float(drop[:, r][alone].max()) if alone.any() else 0.0
        span = slice(crack.first, crack.last + 1)
        records.append({
            "crack_id": crack_id, "copy_id": copy.copy_id, "source_scan": src.scan_id,
            "roi": str(src.roi_names[r]), "roi_index": r, "first_pos": crack.first, "last_pos": crack.last,
            "first_slice": int(src.slice_indices[span][0]), "last_slice": int(src.slice_indices[span][-1]),
            "x": round(crack.x, 2), "y": round(crack.y, 2), "angle": round(crack.angle, 4),
            "depth_nominal": crack.depth, "depth": depth, "width": crack.width, "length": crack.length,
            "slices": crack.n_slices, "noise_sigma": sigma,
            "depth_sigma": depth / sigma if sigma > 0 else math.nan,
            "footprint_px": int(alone.sum()), "usable": bool(depth >= 1.0),
        })
        if voxel_size_um:
            records[-1].update(width_um=crack.width * voxel_size_um, length_um=crack.length * voxel_size_um)
    cracked = replace(src, scan_id=copy.copy_id, crops=rendered.crops)
    return cracked, footprint, records


def build(sources: list[CropSet], settings: PodSettings, crops_dir: str | Path, footprint_dir: str | Path
          ) -> pd.DataFrame:
    """Write the cracked copies as crop files (``<copy_id>.npz``; the clean scans stay the run's own),
    each copy's footprint beside them, and return the crack table (``CRACK_COLUMNS``)."""
    from ..batches import scan_file
    from ..io import save_arrays

    crops_dir, footprint_dir = Path(crops_dir), Path(footprint_dir)
    sigma = {s.scan_id: noise_sigma(s.inner()) for s in sources if s.n_slices}
    rows = []
    for copy in plan(sources, settings):
        cracked, footprint, records = render_copy(copy, sigma[copy.source.scan_id], settings.voxel_size_um,
                                                  settings.renderer)
        cracked.save(scan_file(crops_dir, copy.copy_id, "crops"))
        save_arrays(footprint_dir / f"{copy.copy_id}.npz", footprint=footprint)
        rows.extend(records)
    table = pd.DataFrame(rows)
    extra = [c for c in table.columns if c not in CRACK_COLUMNS]
    log.info("%d cracks in %d copies of %d clean scans (noise sigma %s grey levels); %d left out (no footprint "
             "inside the ROI)", len(table), table["copy_id"].nunique(), len(sources),
             ", ".join(f"{v:.2f}" for v in sigma.values()), int((~table["usable"]).sum()))
    return table[CRACK_COLUMNS + extra]


__all__ = ["CRACK_COLUMNS", "Copy", "PodSettings", "RENDERERS", "pull_into_crops", "balanced_levels", "blocks", "build", "noise_sigma", "plan",
           "render_copy"]
