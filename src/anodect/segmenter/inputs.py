"""What the segmenter reads: each crop with its neighbouring slices and its residual against
the scan's own distant slices.

All in slice numbers: the neighbours of slice 210 are 209 and 211, and a missing one
(a gap, or the scan's end) is the slice itself, never the next one found; the
distant slices are those 4 to 10 slice numbers away that exist. A crack runs
through a few slices, so the median of the distant slices is the cell's own normal
structure there, and the residual shows what is new in this slice; the neighbours
tell a crack (which continues) from noise (which does not). A slice with no distant
slice (a scan of fewer than 5 slices) gets a zero residual and is counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

CHANNELS = 4  # slice, previous, next, residual
CENTRE, SCALE = 128.0, 64.0  # grey levels of the windowed crops -> about -2..2
RESIDUAL_CLIP = 8.0  # noise sigmas


@dataclass(frozen=True)
class InputSettings:
    """Which slices make the residual (in slice numbers) and how it is scaled."""

    distant: tuple[int, int] = (4, 10)
    match: int = 4  # radius of the local gain/offset match of the reference to the slice; 0 = none

    @classmethod
    def from_config(cls, section: dict) -> "InputSettings":
        return cls(distant=tuple(section.get("distant", cls.distant)), match=int(section.get("match", cls.match)))


def reference(image: np.ndarray, far: np.ndarray, settings: InputSettings) -> np.ndarray:
    """What ``image`` would be without anything new: the median of its distant slices ``far``
    [n, H, W], with ``match`` > 0 fitted to the image by a local gain and offset.

    On real CT a cell's layers brighten and dim from slice to slice (the coating's density
    along the cell, the scanner's drift), so the plain median leaves the layers' pattern in
    the residual at several times the noise. A gain and offset fitted in each
    ``2·match+1`` window (a guided filter with the median as guide) takes that out; a crack, a
    few pixels wide in a larger window, is not fitted away.
    """
    ref = median(far)
    if not settings.match:
        return ref
    img = np.asarray(image, np.float32)
    k = (2 * settings.match + 1,) * 2

    def box(a):
        return cv2.boxFilter(a, -1, k, borderType=cv2.BORDER_REFLECT)

    mean_r, mean_i = box(ref), box(img)
    cov = box(ref * img) - mean_r * mean_i
    var = box(ref * ref) - mean_r * mean_r
    gain = cov / (var + MATCH_EPS)
    offset = mean_i - gain * mean_r
    return box(gain) * ref + box(offset)


MATCH_EPS = 4.0  # grey levels²: where the reference is flat (variance below the noise's) keep the gain near 0


@lru_cache(maxsize=None)
def _sorting_network(n: int) -> tuple[tuple[int, int], ...]:
    """Batcher's odd-even merge sort for ``n`` values: the compare-exchange pairs, in order.

    Built for the next power of two; a pair reaching past ``n`` would compare with a value
    padded at +inf, which never moves, so it is dropped.
    """
    size = 1
    while size < n:
        size *= 2
    pairs, p = [], 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < n:
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return tuple(pairs)


def median(values: np.ndarray) -> np.ndarray:
    """``np.median(values, axis=0)`` in float32, equal to it, about 6x faster for 14 slices
    (``benchmarks/segmenter_speed.py --median-only``).

    numpy partitions each pixel's few values separately; a sorting network compares whole
    slices at once (53 compare-exchanges of two images for 14 slices), which is what makes
    the residual cheap enough to score a scan at the network's own speed.
    """
    a = np.array(values, dtype=np.float32, copy=True)
    n = len(a)
    if n == 0:
        raise ValueError("the median of no slices")
    for i, j in _sorting_network(n):
        low = np.minimum(a[i], a[j])
        np.maximum(a[i], a[j], out=a[j])
        a[i] = low
    if n % 2:
        return a[n // 2]
    return (a[n // 2 - 1] + a[n // 2]) / np.float32(2)


def neighbours(indices: np.ndarray, position: int) -> tuple[int, int]:
    """Positions of slice numbers ``i - 1`` and ``i + 1`` (the slice itself where absent)."""
    lookup = {int(v): k for k, v in enumerate(indices)}
    i = int(indices[position])
    return lookup.get(i - 1, position), lookup.get(i + 1, position)


def distant(indices: np.ndarray, position: int, settings: InputSettings) -> np.ndarray:
    """Positions of the slices ``distant[0]`` to ``distant[1]`` slice numbers away, both sides."""
    lo, hi = settings.distant
    gap = np.abs(np.asarray(indices, np.int64) - int(indices[position]))
    return np.flatnonzero((gap >= lo) & (gap <= hi))


def scan_sigma(residuals: np.ndarray) -> float:
    """The residual's noise (robust: 1.4826 x MAD), floored so a flat scan does not blow up."""
    r = np.asarray(residuals, np.float32)
    r = r[np.isfinite(r)]
    if not r.size:
        return 1.0
    return max(float(1.4826 * np.median(np.abs(r - np.median(r)))), 0.5)


def residuals(stack: np.ndarray, indices: np.ndarray, settings: InputSettings) -> tuple[np.ndarray, int]:
    """Each slice minus the median of its distant slices, [S, ...] float32 (grey levels).

    Returns:
        The residuals and how many slices had no distant slice (their residual is 0).
    """
    stack = np.asarray(stack, np.float32)
    out = np.zeros_like(stack)
    missing = 0
    for p in range(len(stack)):
        far = distant(indices, p, settings)
        if len(far):
            out[p] = stack[p] - reference(stack[p], stack[far], settings)
        else:
            missing += 1
    return out, missing


def channels(stack: np.ndarray, indices: np.ndarray, positions, residual: np.ndarray, sigma: float) -> np.ndarray:
    """The network's input for ``positions`` of a stack [S, ...]: [len(positions), 4, ...] float32."""
    stack = np.asarray(stack, np.float32)
    out = []
    for p in positions:
        before, after = neighbours(indices, p)
        image = (np.stack([stack[p], stack[before], stack[after]]) - CENTRE) / SCALE
        res = np.clip(residual[p] / sigma, -RESIDUAL_CLIP, RESIDUAL_CLIP)[None]
        out.append(np.concatenate([image, res]).astype(np.float32))
    return np.stack(out) if out else np.zeros((0, CHANNELS, *stack.shape[1:]), np.float32)


def scan_inputs(crops: np.ndarray, indices: np.ndarray, settings: InputSettings) -> tuple[np.ndarray, dict]:
    """Every crop of a scan [S, R, H, W] uint8 as the network reads it: [S, R, 4, H, W].

    Returns:
        The inputs and facts for the log: the residual's noise per ROI and the slices
        without a distant slice.
    """
    s, r = crops.shape[:2]
    out = np.zeros((s, r, CHANNELS, *crops.shape[2:]), np.float32)
    sigmas, missing = [], 0
    for k in range(r):
        res, missing = residuals(crops[:, k], indices, settings)
        sigma = scan_sigma(res[np.any(res != 0, axis=(1, 2))]) if len(res) else 1.0
        sigmas.append(sigma)
        out[:, k] = channels(crops[:, k], indices, range(s), res, sigma)
    return out, {"sigma": sigmas, "no_distant_slices": missing}


__all__ = ["CHANNELS", "InputSettings", "channels", "distant", "median", "neighbours", "reference", "residuals",
           "scan_inputs", "scan_sigma"]
