"""Cracks rendered into real slices: the crack segmenter's training data and the benchmarks' truth.

A crack is a break across the bright electrode layers, running through a few
consecutive slices: a capsule of a given width and length (edges soft by half a
pixel: partial volume) about a centre line that drifts from slice to slice and
tapers towards its ends, blurred by the scanner's point-spread function. It darkens
each pixel by at most ``depth`` grey levels and never below the dark gap beside the
layer, so nothing is painted black, the slice's own noise stays, and a crack where
there is no bright layer changes little. Its *footprint* is exactly the pixels it
changes by at least ``FOOTPRINT_LEVEL`` grey levels; every other pixel moves by less.

It works on any scan the pipeline reads: a stack of crops (8-bit windowed, or the
float grey levels of a 16-bit slice) of any size, in the stack's own pixels and
slice positions. The real-CT benchmark (``anodect.demo.realct``) and the crack
segmenter (``anodect.segmenter``) draw with this module; the synthetic demo keeps
its own cells and shares only the capsule.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

PSF_SIGMA = 0.8  # px: the scanner blur given to a crack; chosen by eye against the real layer edges, not fitted
GAP_WINDOW = 9  # px: the dark gap beside a bright layer lies within this window
FOOTPRINT_LEVEL = 0.5  # grey levels: a pixel changed by this much or more is in the footprint
PAD = 4  # px around a crack's capsule that its blur reaches


def taper(k: int, n: int) -> float:
    """Length factor of slice ``k`` of ``n``: full in the middle of the span, 55 % at its ends."""
    return 0.55 + 0.45 * math.sin(math.pi * (k + 0.5) / n)


def capsule_polygon(x: float, y: float, angle: float, length: float, width: float) -> np.ndarray:
    """Corners (4x2, x/y) of the rectangle outside which a capsule changes nothing."""
    half_w = width / 2 + 0.5
    half_l = length / 2 + half_w
    ux, uy = math.cos(angle), math.sin(angle)
    vx, vy = -uy, ux
    return np.array([(x - ux * half_l - vx * half_w, y - uy * half_l - vy * half_w),
                     (x + ux * half_l - vx * half_w, y + uy * half_l - vy * half_w),
                     (x + ux * half_l + vx * half_w, y + uy * half_l + vy * half_w),
                     (x - ux * half_l + vx * half_w, y - uy * half_l + vy * half_w)])


def capsule_band(x: float, y: float, angle: float, length: float, width: float, shape: tuple[int, int]):
    """Soft mask (0..1) of a capsule in a window of an image, the window (x0, y0, x1, y1), and its grid."""
    poly = capsule_polygon(x, y, angle, length, width)
    x0, y0 = np.maximum(np.floor(poly.min(axis=0)).astype(int), 0)
    x1, y1 = np.ceil(poly.max(axis=0)).astype(int) + 1
    x1, y1 = min(x1, shape[1]), min(y1, shape[0])
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    ux, uy = math.cos(angle), math.sin(angle)
    along = (xx - x) * ux + (yy - y) * uy
    across = -(xx - x) * uy + (yy - y) * ux
    # Distance to the crack's centre segment (a capsule), soft by half a pixel.
    dist = np.hypot(np.maximum(np.abs(along) - length / 2, 0), across)
    return np.clip(width / 2 + 0.5 - dist, 0, 1), (x0, y0, x1, y1), (xx, yy)


def darkening(image: np.ndarray, band: np.ndarray, window: tuple[int, int, int, int], depth: float,
              clip: bool = False):
    """The grey levels a break removes from ``image`` around ``band`` (a capsule's soft mask).

    Args:
        image: the slice (float grey levels).
        band: the capsule in ``window`` (``capsule_band``).
        window: (x0, y0, x1, y1) of ``band`` in the image.
        depth: the most a pixel loses.
        clip: cut the window at the image's edges instead of refusing a crack that reaches them.

    Returns:
        (x0, y0, x1, y1) of the changed window and the darkening there; None when the
        crack reaches the edge and ``clip`` is False.
    """
    x0, y0, x1, y1 = window
    band = np.pad(band, PAD)
    x0, y0, x1, y1 = x0 - PAD, y0 - PAD, x1 + PAD, y1 + PAD
    h, w = image.shape
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        if not clip:
            return None
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x1, w), min(y1, h)
        band = band[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        x0, y0, x1, y1 = cx0, cy0, cx1, cy1
    blurred = cv2.GaussianBlur(band, (0, 0), PSF_SIGMA)
    local = cv2.GaussianBlur(image, (0, 0), 1.0)
    gap = cv2.erode(local, np.ones((GAP_WINDOW, GAP_WINDOW), np.uint8))
    # What a break can take away: the layer down to the gap beside it, at most `depth`.
    room = np.clip(local[y0:y1, x0:x1] - gap[y0:y1, x0:x1], 0, depth)
    return (x0, y0, x1, y1), blurred * room


@dataclass(frozen=True)
class Crack:
    """A crack through consecutive slices of a stack, in the stack's own coordinates.

    Attributes:
        x, y: centre (pixels) in its first slice.
        angle: direction of its length (radians).
        length, width: pixels, in the middle of its span (it tapers to 55 % at the ends).
        depth: the most grey levels it removes from a pixel.
        first: position of its first slice in the stack (0-based).
        drift: offset (dx, dy) of its centre in each slice of its span; its length is the span.
        branches: further segments (angle offset in radians, length factor) from its centre:
            a branching crack.
        tapered: whether it tapers towards the ends of its span.
    """

    x: float
    y: float
    angle: float
    length: float
    width: float
    depth: float
    first: int
    drift: tuple = ((0.0, 0.0),)
    branches: tuple = ()
    tapered: bool = True

    @property
    def n_slices(self) -> int:
        return len(self.drift)

    @property
    def last(self) -> int:
        return self.first + self.n_slices - 1

    def segments(self, k: int) -> list[tuple[float, float, float, float, float]]:
        """The capsules (x, y, angle, length, width) of slice ``k`` of its span."""
        dx, dy = self.drift[k]
        length = self.length * (taper(k, self.n_slices) if self.tapered else 1.0)
        x, y = self.x + dx, self.y + dy
        out = [(x, y, self.angle, length, self.width)]
        for offset, factor in self.branches:
            a = self.angle + offset
            bl = length * factor
            # A branch starts at the crack's centre and runs out along its own direction.
            out.append((x + math.cos(a) * bl / 2, y + math.sin(a) * bl / 2, a, bl, self.width))
        return out

    def as_dict(self) -> dict:
        return asdict(self)


def render(stack: np.ndarray, crack: Crack, clip: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A copy of ``stack`` [S, H, W] (float grey levels) with the crack in, and its footprint [S, H, W].

    The footprint holds every pixel the crack changes by ``FOOTPRINT_LEVEL`` or more;
    slices outside the crack's span are returned unchanged.
    """
    out = np.array(stack, np.float32, copy=True)
    mask = np.zeros(out.shape, bool)
    for k in range(crack.n_slices):
        s = crack.first + k
        if not 0 <= s < len(out):
            continue
        delta = np.zeros(out.shape[1:], np.float32)
        for x, y, a, length, width in crack.segments(k):
            band, window, _ = capsule_band(x, y, a, length, width, out.shape[1:])
            if band.size == 0:
                continue
            found = darkening(out[s], band, window, crack.depth, clip=clip)
            if found is None:
                continue
            (x0, y0, x1, y1), d = found
            # Branches overlap at the centre: the deeper break wins, nothing is removed twice.
            np.maximum(delta[y0:y1, x0:x1], d, out=delta[y0:y1, x0:x1])
        out[s] -= delta
        mask[s] = delta >= FOOTPRINT_LEVEL
    return out, mask


@dataclass(frozen=True)
class CrackRanges:
    """Where the parameters of a rendered crack are drawn from (uniform in each range).

    Attributes:
        depth: grey levels removed at most (of the crop's 0-255 scale).
        width, length: pixels.
        slices: how many consecutive slices it spans.
        drift: standard deviation (px) of its centre's step from slice to slice.
        across: share of cracks that run across the layers where they lie (their direction
            the local structure's gradient, as a break of the electrode layers runs along the
            cell's radius); the others take any direction.
        angle_jitter: standard deviation (radians) of a crack's direction about the layers' normal.
        branch_probability: the share of cracks with one branch.
    """

    depth: tuple[float, float] = (4.0, 40.0)
    width: tuple[float, float] = (1.0, 3.5)
    length: tuple[float, float] = (6.0, 40.0)
    slices: tuple[int, int] = (3, 10)
    drift: float = 0.5
    across: float = 0.8
    angle_jitter: float = 0.5
    branch_probability: float = 0.0

    @classmethod
    def from_config(cls, section: dict) -> "CrackRanges":
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in section.items()
                  if k in cls.__dataclass_fields__}
        return cls(**kwargs)


def layer_normal(image: np.ndarray, x: float, y: float, radius: int = 6) -> float:
    """Direction (radians) across the layers around (x, y): the dominant gradient orientation
    of the structure tensor in a window of ``radius`` px."""
    h, w = image.shape
    x0, x1 = max(0, int(x) - radius), min(w, int(x) + radius + 1)
    y0, y1 = max(0, int(y) - radius), min(h, int(y) + radius + 1)
    patch = cv2.GaussianBlur(np.asarray(image, np.float32), (0, 0), 1.0)[y0:y1, x0:x1]
    if patch.shape[0] < 3 or patch.shape[1] < 3:
        return 0.0
    gy, gx = np.gradient(patch)
    jxx, jyy, jxy = float((gx * gx).sum()), float((gy * gy).sum()), float((gx * gy).sum())
    return 0.5 * math.atan2(2 * jxy, jxx - jyy)


def sample(rng: np.random.Generator, shape: tuple[int, int], n_slices: int, ranges: CrackRanges,
           centre: tuple[float, float] | None = None, margin: int = 2, image: np.ndarray | None = None) -> Crack:
    """A crack drawn from ``ranges`` inside an image of ``shape``, in a stack of ``n_slices``.

    Args:
        centre: where the crack is centred (default: anywhere ``margin`` px inside the image).
        image: a slice of the stack, for cracks across its layers (``ranges.across``); without
            it every crack takes any direction.
    """
    n = int(rng.integers(ranges.slices[0], min(ranges.slices[1], n_slices) + 1))
    first = int(rng.integers(0, n_slices - n + 1))
    h, w = shape
    if centre is None:
        x, y = float(rng.uniform(margin, w - margin)), float(rng.uniform(margin, h - margin))
    else:
        x, y = centre
    if image is not None and rng.random() < ranges.across:
        angle = layer_normal(image, x, y) + float(rng.normal(0, ranges.angle_jitter))
    else:
        angle = float(rng.uniform(0, math.pi))
    steps = rng.normal(0, ranges.drift, size=(n, 2))
    steps[0] = 0
    drift = tuple(tuple(map(float, d)) for d in np.cumsum(steps, axis=0))
    branches = ()
    if ranges.branch_probability and rng.random() < ranges.branch_probability:
        branches = ((float(rng.choice([-1, 1]) * rng.uniform(0.4, 1.0)), float(rng.uniform(0.4, 0.8))),)
    return Crack(x, y, angle, float(rng.uniform(*ranges.length)), float(rng.uniform(*ranges.width)),
                 float(rng.uniform(*ranges.depth)), first, drift, branches)


@dataclass
class Rendered:
    """Cracks rendered into one scan's crops: what a benchmark or a POD study scores."""

    crops: np.ndarray  # uint8 [S, R, H, W]
    footprint: np.ndarray  # bool [S, R, H, W]
    cracks: list = field(default_factory=list)  # (roi index, Crack)


def render_into_crops(crops: np.ndarray, cracks: list[tuple[int, Crack]]) -> Rendered:
    """Render each (ROI, crack) into a scan's uint8 crops [S, R, H, W] (rounded back to 8 bits)."""
    out = crops.astype(np.float32)
    mask = np.zeros(crops.shape, bool)
    for r, crack in cracks:
        stack, m = render(out[:, r], crack)
        out[:, r] = stack
        mask[:, r] |= m
    return Rendered(np.clip(np.rint(out), 0, 255).astype(np.uint8), mask, list(cracks))


__all__ = ["Crack", "CrackRanges", "FOOTPRINT_LEVEL", "GAP_WINDOW", "PSF_SIGMA", "Rendered", "capsule_band",
           "capsule_polygon", "darkening", "layer_normal", "render", "render_into_crops", "sample", "taper"]
