"""Boxes from PatchCore anomaly maps: every region above the map threshold, never none.

The original tool kept only the DBSCAN cluster with the highest mean and dropped a
crop whose score was above threshold when no cluster was found (original-tool.md
§4, §7.9). Here a flagged crop gets one box per connected region of its map above
``map_threshold``; when blurring has pulled the whole map under that level, the
region around the peak (pixels above half the peak) is used instead, so a crop
above threshold always yields at least one box.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Region:
    """A box in ROI pixel coordinates with the map values inside it.

    Boxes follow the project's one convention, that of COCO, torchvision and RF-DETR:
    corners ``(x1, y1, x2, y2)`` on pixel edges, pixel ``j`` spanning ``[j, j + 1)``,
    so a region of pixels 10..12 is ``x1 = 10, x2 = 13`` and its width is ``x2 - x1``.
    Every box table (detections, cracks, truth) uses it; only the original tool's
    ``AI_RESULTS`` CSVs are written as inclusive pixel bounds, as the original wrote them.
    """

    x1: int
    y1: int
    x2: int
    y2: int
    peak: float
    mean: float
    area: int

    def shifted(self, dx: int, dy: int) -> "Region":
        """The same region in full-slice coordinates, given the ROI's origin."""
        return Region(self.x1 + dx, self.y1 + dy, self.x2 + dx, self.y2 + dy, self.peak, self.mean, self.area)


def _components(mask: np.ndarray, values: np.ndarray, min_area: int, join: int = 0) -> list[Region]:
    """Connected regions of ``mask``; with ``join``, pieces up to ``2 * join`` px apart are one region
    (its box and area those of its own pixels)."""
    mask = mask.astype(np.uint8)
    grouped = mask if join <= 0 else cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE,
                                                                                (2 * join + 1, 2 * join + 1)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(grouped, connectivity=8)
    regions = []
    for k in range(1, n):
        if join <= 0:
            x, y, w, h, area = stats[k]
            inside = values[labels == k]
        else:
            ys, xs = np.nonzero((labels == k) & (mask > 0))
            if not len(xs):
                continue
            x, y, w, h, area = xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1, len(xs)
            inside = values[ys, xs]
        if area < min_area:
            continue
        regions.append(Region(int(x), int(y), int(x + w), int(y + h), float(inside.max()),
                              float(inside.mean()), int(area)))
    return sorted(regions, key=lambda r: -r.peak)


def regions_from_map(anomaly_map: np.ndarray, score: float, threshold: float, map_threshold: float | None = None,
                     min_area: int = 4, join: int = 0) -> list[Region]:
    """Boxes of a crop's anomaly map, or [] when the crop's score is not above ``threshold``.

    Args:
        anomaly_map: [h, w] map at ROI resolution.
        score: the crop's image score.
        threshold: ``patchcore_threshold``.
        map_threshold: map level that outlines a region (default: ``threshold``).
        min_area: smallest region kept, in pixels.
        join: pieces of a region up to ``2 * join`` px apart are one region (a crack across the
            electrode layers shows only where it breaks a bright layer: one piece per layer).

    Returns:
        Regions, strongest first; at least one when ``score > threshold``.
    """
    if not score > threshold:
        return []
    values = np.asarray(anomaly_map, np.float32)
    level = threshold if map_threshold is None else map_threshold
    regions = _components(values > level, values, min_area, join)
    if not regions:
        peak = float(values.max())
        regions = _components(values >= 0.5 * peak, values, 1)
        y, x = np.unravel_index(int(values.argmax()), values.shape)
        regions = [r for r in regions if r.x1 <= x < r.x2 and r.y1 <= y < r.y2][:1]
    return regions
