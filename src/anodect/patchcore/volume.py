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
   z-score, (map - centre) / (1.4826 spread + the ROI's typical spread), so what the
   cell shows in every slice scores about zero whatever its raw score.
3. ``window``: the z-scores are averaged over that many neighbouring slices, which
   favours what lasts a few slices over a one-slice flicker.

Missing slices (issue #30, ``benchmarks/missing_slices.py``) decided two settings:

- ``reference: trimmed-harrell-davis``: the centre and spread are trimmed
  Harrell-Davis medians (the order statistics around the middle weighted by a Beta
  kernel) rather than plain medians. On
  real CT a pixel's slices often fall in two groups (the coating starts part-way
  through the scan); the plain median then jumps from one group to the other when
  one slice is left out, and every z-score of the other group jumps with it.
  ``kernel_width`` (1.5): the kernel cut to 1.5/sqrt(n) of the quantiles rather than
  Akinshin's 1/sqrt(n). On 20-slice real scans the narrower cut weighted 4 order
  statistics, and with groups of 12 and 8 slices its spread still jumped when one
  went (a normal cell's run score rose by 0.72 of the threshold); the wider cut
  gives up cracks through more than 0.5 - 0.75/sqrt(n) of the reference slices
  (33 % of 20, 38 % of 41), which the narrower one still finds up to 39 %.
- ``edges: centred``: slab and window are centred on the slice in slice numbers and
  average the slices that exist there (fewer beside a gap and at the scan's ends),
  and a z-score from fewer slices is scaled by sqrt(slices present / width), so
  fewer slices are never more evidence. ``shifted`` (before) took the nearest
  slices, across a gap or shifted inwards at the ends: near a gap a slab then came
  from one side only, and a normal cell's verdict hung on one slice. A slice alone
  between gaps is not judged.

The crop's volume score is the largest value of its volume map. A defect that runs
through most of the reference slices is part of the cell's "normal" here and
fades from the volume maps; the raw maps, kept beside them in every score file,
still show it (``decisions.patchcore_evidence: slice`` decides on them).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy.stats import beta

from .files import LEGACY_VOLUME

from ..decisions import false_alarm_threshold  # noqa: F401 - re-exported: PatchCore sets its thresholds with it


@dataclass(frozen=True)
class VolumeSettings:
    """The ``patchcore.volume`` config keys."""

    slab: int = 3
    window: int = 3
    reference_slices: int = 41
    min_slices: int = 5
    reference: str = "trimmed-harrell-davis"
    edges: str = "centred"
    kernel_width: float = 1.5

    def __post_init__(self):
        if self.reference not in REFERENCES:
            raise ValueError(f"patchcore.volume.reference must be one of {', '.join(REFERENCES)}, "
                             f"not {self.reference!r}")
        if self.edges not in EDGES:
            raise ValueError(f"patchcore.volume.edges must be one of {', '.join(EDGES)}, not {self.edges!r}")
        if not self.kernel_width > 0:
            raise ValueError(f"patchcore.volume.kernel_width must be above 0, not {self.kernel_width!r}")

    @classmethod
    def from_config(cls, section: dict | None) -> "VolumeSettings":
        section = section or {}
        kinds = {"int": int, "float": float, "str": str}
        return cls(**{f.name: kinds[f.type](section[f.name]) for f in fields(cls) if f.name in section})

    @classmethod
    def from_model(cls, section: dict | None) -> "VolumeSettings":
        """The settings a saved model was trained with (keys it predates at their old behaviour)."""
        section = dict(section or {"slab": 1})
        return cls.from_config({**LEGACY_VOLUME, **section})

    def as_dict(self) -> dict:
        return asdict(self)


# ``complete`` averages slabs as ``centred`` does (the same crops, the same bank) and judges
# only the slices whose slab is whole.
EDGES = ("centred", "complete", "shifted")


def neighbour_mean(stack: np.ndarray, slice_indices: np.ndarray, width: int) -> np.ndarray:
    """``edges: shifted``: the mean over the ``width`` slices nearest each slice by slice number (axis 0).

    Inside the scan that is the centred window; at its ends the window shifts
    inwards, so every mean is over the same number of slices. Only slices within
    ``width - 1`` slice numbers count: a skipped slice is never replaced by a far
    one, but near a gap the mean may take its slices from one side.
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


def centred_mean(stack: np.ndarray, slice_indices: np.ndarray, width: int,
                 valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``edges: centred``: the mean over the slices that exist among the ``width`` slice numbers
    centred on each slice (axis 0), and how many there were (fewer beside a gap and at the ends).

    ``valid`` (per slice) leaves slices out of every mean; a slice with none is NaN.
    """
    stack = np.asarray(stack)
    idx = np.asarray(slice_indices, np.int64)
    valid = np.ones(len(idx), bool) if valid is None else np.asarray(valid, bool)
    if width <= 1 or len(stack) == 0:
        out = stack.astype(np.float32)
        out[~valid] = np.nan
        return out, valid.astype(np.float32)
    lo = idx - width // 2
    inside = (idx[None, :] >= lo[:, None]) & (idx[None, :] <= lo[:, None] + width - 1) & valid[None, :]
    out = np.full(stack.shape, np.nan, np.float32)
    for k in range(len(idx)):
        if inside[k].any():
            out[k] = stack[inside[k]].mean(axis=0, dtype=np.float32)
    return out, inside.sum(axis=1).astype(np.float32)


def slab_crops(crops: np.ndarray, slice_indices: np.ndarray, slab: int, edges: str = "centred") -> np.ndarray:
    """Crops [S, R, H, W] uint8 averaged over ``slab`` neighbouring slices, still uint8."""
    if slab <= 1 or len(crops) <= 1:
        return crops
    mean = neighbour_mean(crops, slice_indices, slab) if edges == "shifted" else \
        centred_mean(crops, slice_indices, slab)[0]
    return np.clip(np.rint(mean), 0, 255).astype(np.uint8)


def harrell_davis_median(sample: np.ndarray, width: float | None = 1.0) -> np.ndarray:
    """The Harrell-Davis median over axis 0: the order statistics weighted by a Beta((n+1)/2,
    (n+1)/2) kernel, cut to its central ``width``/sqrt(n) (quantiles; 1 is Akinshin 2022's
    trimmed form) or uncut (``width`` None).

    Leaving one slice out moves it a little where the plain median of two groups of slices
    jumps from one group to the other. The uncut kernel weights every slice, so a crack in a
    large share of the reference pulls it; a cut kernel keeps most of the median's
    robustness, and the wider the cut, the more of its smoothness.
    """
    n = len(sample)
    a = (n + 1) / 2
    half = 0.5 if width is None else min(0.5, 0.5 * width / math.sqrt(n))
    edges = np.clip(np.arange(n + 1) / n, 0.5 - half, 0.5 + half)
    weights = np.diff(beta.cdf(edges, a, a))
    weights = (weights / weights.sum()).astype(np.float32)
    used = np.flatnonzero(weights > 0)
    lo, hi = int(used[0]), int(used[-1])
    # Only the weighted order statistics need sorting.
    ordered = np.sort(np.partition(sample, [lo, hi], axis=0)[lo:hi + 1], axis=0)
    return np.tensordot(weights[lo:hi + 1], ordered, axes=(0, 0)).astype(np.float32)


REFERENCES = ("trimmed-harrell-davis", "harrell-davis", "median")


def centre_function(settings: VolumeSettings):
    """The per-pixel centre (over axis 0) that ``settings.reference`` names."""
    if settings.reference == "median":
        return lambda a: np.median(a, axis=0)
    width = settings.kernel_width if settings.reference == "trimmed-harrell-davis" else None
    return lambda a: harrell_davis_median(a, width)


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
    idx = np.asarray(slice_indices)
    if settings.edges != "shifted":
        # A crop averaged over fewer slices is noisier than the rest, and PatchCore scores
        # noise as distance, which scaling cannot take back: ``complete`` judges only whole
        # slabs; ``centred`` leaves out only a slice alone between gaps.
        _, in_slab = centred_mean(np.zeros(len(idx)), idx, settings.slab)
        judged_ok = in_slab >= settings.slab if settings.edges == "complete" else 2 * in_slab > settings.slab
    else:
        in_slab, judged_ok = np.full(len(idx), float(settings.slab)), np.ones(len(idx), bool)
    if judged_ok.sum() < max(settings.min_slices, 1):
        return np.full(maps.shape, np.nan, np.float32)
    centre_of = centre_function(settings)
    z = np.full(maps.shape, np.nan, np.float32)
    for judged, ref in _reference_blocks(idx[judged_ok], settings.reference_slices):
        judged, ref = np.flatnonzero(judged_ok)[judged], np.flatnonzero(judged_ok)[ref]
        sample = maps[ref]
        centre = centre_of(sample)
        spread = 1.4826 * centre_of(np.abs(sample - centre))
        # A pixel that never changes (flat background) would divide by ~0: its
        # spread is at least the ROI's typical spread.
        floor = np.median(spread.reshape(spread.shape[0], -1), axis=1).reshape(-1, 1, 1)
        z[judged] = (maps[judged] - centre) / (spread + np.maximum(floor, 1e-6))
    if settings.edges == "shifted":
        return neighbour_mean(z, idx, settings.window)
    # A slab or window of fewer slices is noisier: scaled so that its null spread is a
    # full one's, fewer slices never count as more evidence.
    z *= np.sqrt(in_slab / max(settings.slab, 1))[:, None, None, None]
    zw, in_window = centred_mean(z, idx, settings.window, judged_ok)
    zw[~judged_ok] = np.nan
    return zw * np.sqrt(in_window / max(settings.window, 1))[:, None, None, None]


def volume_scores(vmaps: np.ndarray) -> np.ndarray:
    """Crop scores [S, R]: the largest value of each volume map (NaN where there is none)."""
    if vmaps.size == 0:
        return np.zeros(vmaps.shape[:2], np.float32)
    flat = vmaps.reshape(*vmaps.shape[:2], -1)
    with np.errstate(all="ignore"):
        return np.where(np.isnan(flat).all(-1), np.nan, np.nanmax(np.where(np.isnan(flat), -np.inf, flat), -1)
                        ).astype(np.float32)


__all__ = ["EDGES", "REFERENCES", "VolumeSettings", "centre_function", "centred_mean", "false_alarm_threshold",
           "harrell_davis_median", "neighbour_mean",
           "slab_crops", "volume_maps", "volume_scores"]
