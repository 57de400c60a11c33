"""Cracks across slices: per-slice boxes linked into 3-D cracks, confirmed by their length.

A crack in a cylindrical cell runs along the axis, so it shows in consecutive axial
slices at nearly the same place. Boxes of the same scan and ROI are linked when they
overlap (after growing each by ``link_margin`` pixels, so a crack whose box shifts a
little from slice to slice stays one crack) and when at most ``max_gap`` slices
without a linked box lie between them. Gaps are counted in slice numbers (in steps of
the scan's slice spacing): a slice missing from the scan (unreadable, or absent from
disk) is a slice where the crack was not seen, so it breaks a run unless ``max_gap``
allows it. A box that overlaps two open tracks joins them (a crack that forks, or two
ends of one crack that meet), so a branching crack is one crack, not two short ones.

A track becomes a confirmed crack when at least ``min_consecutive_slices`` slices
carry one of its boxes (4 by default, the original tool's rule); with ``max_gap > 0``
that still means 4 slices with the crack seen, the gaps between them not counted.

Unlike the original tool (original-tool.md §4–5), an isolated detection is never
emitted later as part of another run, a slice is either in a confirmed crack or not
(never both), and runs of any length are kept whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import reduce


@dataclass(frozen=True)
class Detection:
    """One box in one slice: full-slice corners, x2/y2 exclusive (``anodect.regions``)."""

    scan_id: str
    roi: str
    slice_index: int
    x1: float
    y1: float
    x2: float
    y2: float
    score: float


@dataclass(eq=False)  # identity: two tracks with the same boxes are still two tracks
class Track:
    """Boxes linked across slices; a crack once it is long enough."""

    scan_id: str
    roi: str
    detections: list[Detection] = field(default_factory=list)
    crack_id: str = ""

    @property
    def slices(self) -> list[int]:
        return sorted({d.slice_index for d in self.detections})

    @property
    def first_slice(self) -> int:
        return min(d.slice_index for d in self.detections)

    @property
    def last_slice(self) -> int:
        return max(d.slice_index for d in self.detections)

    def last_boxes(self) -> list[Detection]:
        last = self.last_slice
        return [d for d in self.detections if d.slice_index == last]

    def box(self) -> tuple[float, float, float, float]:
        """The 2-D extent of the crack over all its slices (x1, y1, x2, y2)."""
        return (min(d.x1 for d in self.detections), min(d.y1 for d in self.detections),
                max(d.x2 for d in self.detections), max(d.y2 for d in self.detections))

    def record(self, battery_id: str = "", axis: str = "") -> dict:
        x1, y1, x2, y2 = self.box()
        scores = [d.score for d in self.detections]
        return {
            "crack_id": self.crack_id, "scan_id": self.scan_id, "battery_id": battery_id, "axis": axis,
            "roi": self.roi, "first_slice": self.first_slice, "last_slice": self.last_slice,
            "n_slices": len(self.slices), "x1": x1, "y1": y1, "x2": x2, "y2": y2,
            "z1": self.first_slice, "z2": self.last_slice,
            "peak_score": max(scores), "mean_score": sum(scores) / len(scores),
        }


@dataclass(frozen=True)
class TrackingSettings:
    min_consecutive_slices: int = 4
    max_gap: int = 0
    link_margin: float = 2.0

    def __post_init__(self):
        if self.min_consecutive_slices < 1 or self.max_gap < 0 or self.link_margin < 0:
            raise ValueError(f"invalid tracking settings {self}")


def _overlap(a: Detection, b: Detection, margin: float) -> float:
    """Intersection area of two boxes each grown by ``margin``; 0 when apart."""
    w = min(a.x2, b.x2) - max(a.x1, b.x1) + 2 * margin
    h = min(a.y2, b.y2) - max(a.y1, b.y1) + 2 * margin
    return max(w, 0.0) * max(h, 0.0)


def slice_step(slices) -> int:
    """A scan's slice spacing in slice numbers: the greatest common divisor of the
    differences between its slice numbers (1 for a usual scan, 2 when only every other
    slice was exported)."""
    numbers = sorted(set(int(s) for s in slices))
    return reduce(math.gcd, (b - a for a, b in zip(numbers, numbers[1:])), 0) or 1


def link(detections: list[Detection], observed: dict[str, list[int]], settings: TrackingSettings) -> list[Track]:
    """Link detections into tracks, scan by scan and ROI by ROI.

    Args:
        detections: boxes above the decision threshold, any order.
        observed: per scan, the slice numbers of the scan (those analysed, and any
            listed but unreadable); they give the scan's slice spacing. Gaps are
            counted in slice numbers, so a slice missing from the scan is a gap.
        settings: linking and confirmation rules.

    Returns:
        Every track, confirmed or not, in a fixed order (scan, ROI, first slice).
    """
    by_key: dict[tuple[str, str], list[Detection]] = {}
    for d in detections:
        by_key.setdefault((d.scan_id, d.roi), []).append(d)
    tracks: list[Track] = []
    for (scan_id, roi), dets in sorted(by_key.items()):
        step = slice_step(set(observed.get(scan_id, [])) | {d.slice_index for d in dets})
        by_slice: dict[int, list[Detection]] = {}
        for d in sorted(dets, key=lambda d: (d.slice_index, d.x1, d.y1, -d.score)):
            by_slice.setdefault(d.slice_index, []).append(d)
        open_tracks: list[Track] = []
        for s in sorted(by_slice):
            # Tracks whose last box lies more than max_gap slices back are closed.
            open_tracks = [t for t in open_tracks if (s - t.last_slice) // step - 1 <= settings.max_gap]
            # Each detection is compared with the boxes its candidate tracks had
            # before this slice, so two boxes in one slice do not chain each other.
            reference = [(t, t.last_boxes()) for t in open_tracks]
            merged_into: dict[int, Track] = {}

            def current(t: Track) -> Track:
                while id(t) in merged_into:
                    t = merged_into[id(t)]
                return t

            for d in by_slice[s]:
                hits = []
                for t, boxes in reference:
                    t = current(t)
                    if t not in hits and max(_overlap(d, c, settings.link_margin) for c in boxes) > 0:
                        hits.append(t)
                if not hits:
                    track = Track(scan_id, roi)
                    open_tracks.append(track)
                    tracks.append(track)
                else:
                    # The box joins every track it touches: the earliest keeps the others' boxes.
                    hits.sort(key=lambda t: (t.first_slice, tracks.index(t)))
                    track = hits[0]
                    for other in hits[1:]:
                        track.detections.extend(other.detections)
                        merged_into[id(other)] = track
                        tracks.remove(other)
                        open_tracks.remove(other)
                track.detections.append(d)
    tracks.sort(key=lambda t: (t.scan_id, t.roi, t.first_slice, t.box()))
    return tracks


def confirm(tracks: list[Track], settings: TrackingSettings) -> list[Track]:
    """The tracks that run through enough slices, numbered per scan."""
    cracks = [t for t in tracks if len(t.slices) >= settings.min_consecutive_slices]
    counters: dict[str, int] = {}
    for t in cracks:
        counters[t.scan_id] = counters.get(t.scan_id, 0) + 1
        t.crack_id = f"{t.scan_id}:{t.roi}:{counters[t.scan_id]}"
    return cracks


def anomalous_slices(cracks: list[Track], observed: dict[str, list[int]]) -> dict[str, set[int]]:
    """Per scan, the observed slices from first to last slice of each confirmed crack.

    A slice inside a crack's span where the model missed the box (an allowed gap)
    is part of the crack: the crack runs through it. A slice missing from the scan
    is in no table, so it is not listed.
    """
    out: dict[str, set[int]] = {}
    for t in cracks:
        span = {s for s in observed.get(t.scan_id, t.slices) if t.first_slice <= s <= t.last_slice}
        out.setdefault(t.scan_id, set()).update(span | set(t.slices))
    return out
