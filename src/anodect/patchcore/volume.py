"""Evidence across slices: PatchCore maps judged against the scan's own volume.

A crack in a cylindrical cell runs through a few consecutive slices (2 to 12 in
practice); the cell's own structure (its winding, a tab, a deformed turn, where
the coating ends) runs through all of them. On real CT that structure, not seen in
any training cell, dominates a crop's largest patch score, while the map does rise
at the crack. Three steps use the volume, each in slice numbers (a missing slice
is a gap, never a neighbour):

1. ``slab``: every crop is averaged with its neighbouring slices before it is
   embedded (training and scoring alike), so the slice's own noise falls by about
   the square root of the slab while a crack that lasts several slices stays.
2. Per-pixel statistics over the scan's own slices (``reference_slices`` around
   each slice, all of them in a short scan): every map pixel becomes a robust
   z-score, (map - median) / (1.4826 MAD + the ROI's typical MAD), so what the
   cell shows in every slice scores about zero whatever its raw score.
3. ``window``: the z-scores are averaged over that many neighbouring slices, which
   favours what lasts a few slices over a one-slice flicker.

The crop's volume score is the largest value of its volume map. A defect that runs
through most of the reference slices is part of the cell's "normal" here and
fades from the volume maps; the raw maps, kept beside them in every score file,
still show it (``decisions.patchcore_evidence: slice`` decides on them).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..decisions import false_alarm_threshold  # noqa: F401 - re-exported: PatchCore sets its thresholds with it


@dataclass(frozen=True)
class VolumeSettings:
    """The ``patchcore.volume`` config keys."""

    slab: int = 3
    window: int = 3
    reference_slices: int = 41
    min_slices: int = 5

    @classmethod
    def from_config(cls, section: dict | None) -> "VolumeSettings":
        section = section or {}
        return cls(**{k: int(section[k]) for k in cls.__dataclass_fields__ if k in section})

    def as_dict(self) -> dict:
        return asdict(self)


def neighbour_mean(stack: np.ndarray, slice_indices: np.ndarray, width: int) -> np.ndarray:
    """Mean over the ``width`` slices nearest each slice by slice number (axis 0).

    Inside the scan that is the centred window; at its ends the window shifts
    inwards, so every mean is over the same number of slices and the noise left
    in it is the same (a two-slice mean at the ends raised every end slice's
    score). Only slices within ``width - 1`` slice numbers count: a skipped
    slice is never replaced by a far one, so near a gap the mean has fewer slices.
    """
    stack = np.asarray(stack)
    if width <= 1 or len(stack) <= 1:
        return stack.astype(np.float32)
    idx = np.asarray(slice_indices, np.int64)
    out = np.empty(stack.shape, np.float32)
    for k, s in enumerate(idx):
        distance = np.abs(idx - s)
        # nearest first; equal distances: the lower slice first (centred windows for odd widths)
        order = np.lexsort((idx, distance))
        near = order[:width]
        near = near[distance[near] <= width - 1]
        out[k] = stack[near].mean(axis=0, dtype=np.float32)
    return out


def slab_crops(crops: np.ndarray, slice_indices: np.ndarray, slab: int) -> np.ndarray:
    """Crops [S, R, H, W] uint8 averaged over ``slab`` neighbouring slices, still uint8."""
    if slab <= 1 or len(crops) <= 1:
        return crops
    return np.clip(np.rint(neighbour_mean(crops, slice_indices, slab)), 0, 255).astype(np.uint8)


def _reference_blocks(slice_indices: np.ndarray, reference: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(slices judged, reference slices) pairs: a window of ``reference`` slices kept inside the scan."""
    n = len(slice_indices)
    if n <= reference:
        return [(np.arange(n), np.arange(n))]
    # Statistics per block of a quarter window: within a block the reference moves
    # by less than a quarter of its length, and the cost stays linear in the scan.
    step = max(1, reference // 4)
    blocks = []
    for start in range(0, n, step):
        judged = np.arange(start, min(start + step, n))
        centre = (judged[0] + judged[-1]) // 2
        lo = int(min(max(centre - reference // 2, 0), n - reference))
        blocks.append((judged, np.arange(lo, lo + reference)))
    return blocks


def volume_maps(maps: np.ndarray, slice_indices: np.ndarray, settings: VolumeSettings) -> np.ndarray:
    """Raw maps [S, R, h, w] -> volume maps (robust z-scores over z, window-averaged).

    Scans with fewer than ``settings.min_slices`` slices have no volume to judge
    against: their volume maps are NaN (decisions then have no volume evidence).
    """
    maps = np.asarray(maps, np.float32)
    if len(maps) < max(settings.min_slices, 1):
        return np.full(maps.shape, np.nan, np.float32)
    z = np.empty(maps.shape, np.float32)
    for judged, ref in _reference_blocks(np.asarray(slice_indices), settings.reference_slices):
        sample = maps[ref]
        median = np.median(sample, axis=0)
        mad = 1.4826 * np.median(np.abs(sample - median), axis=0)
        # A pixel that never changes (flat background) would divide by ~0: its
        # spread is at least the ROI's typical spread.
        floor = np.median(mad.reshape(mad.shape[0], -1), axis=1).reshape(-1, 1, 1)
        z[judged] = (maps[judged] - median) / (mad + np.maximum(floor, 1e-6))
    return neighbour_mean(z, slice_indices, settings.window)


def volume_scores(vmaps: np.ndarray) -> np.ndarray:
    """Crop scores [S, R]: the largest value of each volume map (NaN where there is none)."""
    if vmaps.size == 0:
        return np.zeros(vmaps.shape[:2], np.float32)
    flat = vmaps.reshape(*vmaps.shape[:2], -1)
    with np.errstate(all="ignore"):
        return np.where(np.isnan(flat).all(-1), np.nan, np.nanmax(np.where(np.isnan(flat), -np.inf, flat), -1)
                        ).astype(np.float32)


__all__ = ["VolumeSettings", "false_alarm_threshold", "neighbour_mean", "slab_crops", "volume_maps",
           "volume_scores"]
