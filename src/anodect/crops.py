"""ROI crops: the first stage. Each scan's filtered slices become one array file.

Later stages (PatchCore, RF-DETR, drawing) read ``[slice, roi, H, W]`` uint8 crops
from this file and never touch the TIFFs again. A slice that cannot be used is
recorded in the scan's QC table with the reason and skipped; the rest goes on.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .batches import scan_context, scan_file
from .config import Roi
from .imaging import SliceReadError, Window, choose_window, read_slice
from .io import atomic_dir, load_arrays, save_arrays, write_table

log = logging.getLogger(__name__)

QC_COLUMNS = ["scan_id", "slice_index", "path", "page", "status", "reason", "height", "width", "dtype"]


class NoUsableSlices(RuntimeError):
    """Every slice of a scan was skipped; ``qc`` says why for each."""

    def __init__(self, message: str, qc: pd.DataFrame | None = None):
        super().__init__(message)
        self.qc = qc if qc is not None else pd.DataFrame(columns=QC_COLUMNS)


class SkippedSlices(RuntimeError):
    """Slices were skipped while ``strict`` asks for every slice to be usable."""


@dataclass
class CropSet:
    """The ROI crops of one scan and where each came from."""

    scan_id: str
    crops: np.ndarray  # uint8 [slice, roi, H, W]
    slice_indices: np.ndarray  # int [slice]
    paths: np.ndarray  # str [slice]
    roi_names: np.ndarray  # str [roi]
    roi_boxes: np.ndarray  # int [roi, 4]: x_min, y_min, x_max, y_max (max exclusive)
    window: tuple[float, float]
    context: int = 0  # pixels of surrounding slice kept on every side of each ROI
    pages: np.ndarray | None = None  # int [slice]: page of a stack, -1 for a file per slice

    def __post_init__(self):
        if self.pages is None:
            self.pages = np.full(len(self.slice_indices), -1, np.int64)

    def slice_names(self) -> list[str]:
        """Each slice's name (``discovery.slice_name``): file stem, or stack stem and slice number."""
        from .discovery import slice_name

        return [slice_name(p, g, i) for p, g, i in zip(self.paths, self.pages, self.slice_indices)]

    def save(self, path: str | Path) -> None:
        save_arrays(
            path,
            scan_id=np.array(self.scan_id),
            crops=self.crops,
            slice_indices=self.slice_indices.astype(np.int64),
            paths=self.paths.astype(str),
            roi_names=self.roi_names.astype(str),
            roi_boxes=self.roi_boxes.astype(np.int64),
            window=np.array(self.window, np.float64),
            context=np.array(self.context, np.int64),
            pages=np.asarray(self.pages, np.int64),
        )

    @classmethod
    def load(cls, path: str | Path) -> "CropSet":
        a = load_arrays(path)
        return cls(
            scan_id=str(a["scan_id"]),
            crops=a["crops"],
            slice_indices=a["slice_indices"],
            paths=a["paths"],
            roi_names=a["roi_names"],
            roi_boxes=a["roi_boxes"],
            window=(float(a["window"][0]), float(a["window"][1])),
            context=int(a["context"]) if "context" in a else 0,
            pages=a["pages"] if "pages" in a else None,
        )

    @staticmethod
    def read_meta(path: str | Path) -> dict:
        """Slice indices, ROI names and boxes, window and context of a crops file, without its pixels."""
        a = load_arrays(path, ("slice_indices", "roi_names", "roi_boxes", "window", "context"))
        return {"slice_indices": [int(i) for i in a["slice_indices"]], "roi_names": [str(n) for n in a["roi_names"]],
                "roi_boxes": a["roi_boxes"], "window": (float(a["window"][0]), float(a["window"][1])),
                "context": int(a["context"]) if "context" in a else 0}

    @property
    def n_slices(self) -> int:
        return int(self.crops.shape[0])

    # ---- geometry: the one place crop and slice pixels are related --------------------------
    # A crop of ROI r is the slice's pixels [y_min - c, y_max + c) x [x_min - c, x_max + c)
    # for c pixels of context; boxes are corners on pixel edges (``anodect.regions``).

    def origin(self, roi: int, context: int | None = None) -> tuple[int, int]:
        """Slice (x, y) of the top-left pixel of ROI ``roi``'s crop.

        Args:
            roi: the ROI's position in ``roi_names``.
            context: pixels of context the crop keeps (default: this set's own; 0 for
                maps and crops cut to the ROI).
        """
        return crop_origin(self.roi_boxes[roi], self.context if context is None else context)

    def roi_in_crop(self, roi: int) -> tuple[int, int, int, int]:
        """ROI ``roi``'s box in its crop's pixels (x1, y1, x2, y2; max exclusive)."""
        c = self.context
        x0, y0, x1, y1 = (int(v) for v in self.roi_boxes[roi])
        return c, c, c + x1 - x0, c + y1 - y0

    def with_context(self, context: int) -> np.ndarray:
        """The crops keeping ``context`` of their pixels of context, [slice, roi, h, w].

        Raises:
            ValueError: when the crops have less context than asked for.
        """
        if context > self.context:
            raise ValueError(f"{self.scan_id}: crops have {self.context} px of context, {context} are needed "
                             "(set crop_context to at least that)")
        return trim_context(self.crops, self.context - context)

    def inner(self) -> np.ndarray:
        """The crops without their context: exactly the ROI pixels, [slice, roi, h, w]."""
        return self.with_context(0)


def crop_origin(roi_box, context: int) -> tuple[int, int]:
    """Slice (x, y) of the top-left pixel of a crop of ``roi_box`` (x_min, y_min, ...) with ``context``."""
    return int(roi_box[0]) - context, int(roi_box[1]) - context


def trim_context(crops: np.ndarray, by: int) -> np.ndarray:
    """Crops [..., H, W] less ``by`` pixels on every side."""
    return crops[..., by:crops.shape[-2] - by, by:crops.shape[-1] - by] if by else crops


def cut_with_context(image: np.ndarray, roi: Roi, context: int) -> np.ndarray:
    """``image[roi]`` grown by ``context`` pixels per side; outside the image, mirrored.

    Models see what lies around the ROI, so patches at its edge are judged with
    their real neighbourhood instead of padding.
    """
    y0, y1 = roi.y_min - context, roi.y_max + context
    x0, x1 = roi.x_min - context, roi.x_max + context
    h, w = image.shape
    part = image[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)]
    pad = ((max(-y0, 0), max(y1 - h, 0)), (max(-x0, 0), max(x1 - w, 0)))
    if any(p for pair in pad for p in pair):
        part = np.pad(part, pad, mode="symmetric")
    return part


def _roi_fits(rois: list[Roi], shape: tuple[int, int]) -> str | None:
    h, w = shape
    bad = [r.name for r in rois if r.x_max > w or r.y_max > h]
    if bad:
        return f"ROI {', '.join(bad)} outside the {w}x{h} image"
    return None


def _check_pixels(image: np.ndarray, rois: list[Roi]) -> tuple[np.ndarray, str, str]:
    """A slice's pixels made usable, or why they cannot be.

    Returns:
        The image, a problem (the slice is skipped when not empty) and a note for
        the QC table (the slice is kept).
    """
    note = ""
    if image.dtype.kind == "f":
        bad = ~np.isfinite(image)
        if bad.all():
            return image, "no finite pixel (NaN or infinite everywhere)", ""
        if bad.any():
            h, w = image.shape
            inside = [r.name for r in rois if bad[max(r.y_min, 0):min(r.y_max, h), max(r.x_min, 0):min(r.x_max, w)].any()]
            if inside:
                return image, f"NaN or infinite pixels inside ROI {', '.join(inside)}", ""
            # Float reconstructions often carry NaN outside the field of view: harmless
            # away from the ROIs, but they would poison the window and the context.
            image = np.where(bad, np.nanmin(np.where(bad, np.nan, image)), image)
            note = f"{int(bad.sum())} NaN/infinite pixels outside the ROIs set to the slice minimum"
    low, high = image.min(), image.max()
    if low == high:
        return image, f"constant image (every pixel {low.item()!r}): no CT content", ""
    return image, "", note


def extract_crops(
    scan_id: str,
    slices: pd.DataFrame,
    rois: list[Roi],
    window_settings: dict,
    expected_shape: tuple[int, int] | None = None,
    context: int = 0,
) -> tuple[CropSet, pd.DataFrame]:
    """Read a scan's slices once, window them and cut every ROI.

    Args:
        scan_id: the scan's id in the sample sheet.
        slices: rows with ``slice_index``, ``path`` and ``page`` (-1 for single-page files).
        rois: ROIs, all of one size.
        window_settings: the ``window`` config section.
        expected_shape: (height, width) every slice must have; by default the most
            common shape among readable slices.
        context: pixels of surrounding slice to keep around every ROI.

    Returns:
        The crops and the QC table (one row per slice, ``status`` ok or skipped).

    Raises:
        NoUsableSlices: no slice could be used.
    """
    slices = slices.sort_values("slice_index", kind="stable")
    qc_rows: list[dict] = []
    raw: list[tuple[int, str, np.ndarray, dict]] = []
    for row in slices.itertuples(index=False):
        page = None if int(row.page) < 0 else int(row.page)
        rec = {"scan_id": scan_id, "slice_index": int(row.slice_index), "path": row.path,
               "page": int(row.page), "status": "ok", "reason": "", "height": 0, "width": 0, "dtype": ""}
        try:
            image = read_slice(row.path, page)
        except SliceReadError as exc:
            rec.update(status="skipped", reason=str(exc))
            log.warning("%s: slice %s skipped: %s", scan_id, row.slice_index, exc)
            qc_rows.append(rec)
            continue
        rec.update(height=image.shape[0], width=image.shape[1], dtype=str(image.dtype))
        qc_rows.append(rec)
        raw.append((int(row.slice_index), row.path, image, rec))

    shape = expected_shape
    if shape is None and raw:
        shape = Counter(img.shape for _, _, img, _ in raw).most_common(1)[0][0]
    kept: list[tuple[int, str, np.ndarray, int]] = []  # index, path, ROI cuts, page
    samples: list[np.ndarray] = []
    for index, path, image, rec in raw:
        if image.shape != tuple(shape):
            rec.update(status="skipped",
                       reason=f"{path}: size {image.shape[1]}x{image.shape[0]} differs from the scan's "
                              f"{shape[1]}x{shape[0]} (width x height)")
            log.warning("%s: slice %d skipped: %s", scan_id, index, rec["reason"])
            continue
        problem = _roi_fits(rois, image.shape)
        if problem:
            rec.update(status="skipped", reason=f"{path}: {problem}")
            continue
        image, problem, note = _check_pixels(image, rois)
        if problem:
            rec.update(status="skipped", reason=f"{path}: {problem}")
            log.warning("%s: slice %d skipped: %s", scan_id, index, rec["reason"])
            continue
        rec["reason"] = note
        cut = np.stack([cut_with_context(image, r, context) for r in rois])
        kept.append((index, path, cut, rec["page"]))
        # A strided view of the whole slice sets the window; the slice itself is
        # dropped here so a long stack never sits in memory at once.
        samples.append(np.ascontiguousarray(image[::4, ::4]))

    qc = pd.DataFrame(qc_rows, columns=QC_COLUMNS)
    if not kept:
        reasons = "; ".join(f"{r['slice_index']}: {r['reason']}" for r in qc_rows[:5]) or "no slice listed"
        more = f" and {len(qc_rows) - 5} more" if len(qc_rows) > 5 else ""
        raise NoUsableSlices(f"scan {scan_id}: no usable slice ({reasons}{more})", qc)
    window = choose_window(samples, window_settings)
    crops = np.stack([window.apply(cut) for _, _, cut, _ in kept])
    crop_set = CropSet(
        scan_id=scan_id,
        crops=crops,
        slice_indices=np.array([i for i, *_ in kept], np.int64),
        paths=np.array([p for _, p, *_ in kept], dtype=str),
        roi_names=np.array([r.name for r in rois], dtype=str),
        roi_boxes=np.array([r.as_box() for r in rois], np.int64),
        window=(window.low, window.high),
        context=context,
        pages=np.array([page for *_, page in kept], np.int64),
    )
    return crop_set, qc


def empty_crop_set(scan_id: str, rois: list[Roi], context: int) -> CropSet:
    """A scan with no usable slice: zero slices, so every later stage has a file to read."""
    h, w = rois[0].crop_shape(context)
    return CropSet(scan_id, np.zeros((0, len(rois), h, w), np.uint8), np.zeros(0, np.int64), np.zeros(0, str),
                   np.array([r.name for r in rois], dtype=str), np.array([r.as_box() for r in rois], np.int64),
                   (0.0, 0.0), context)


def crop_scan(scan_id: str, slices: pd.DataFrame, rois: list[Roi], window_settings: dict,
              expected_shape: tuple[int, int] | None, context: int, strict: bool) -> tuple[CropSet, pd.DataFrame]:
    """The crop_rois rule: ``extract_crops`` with the run's policy for bad slices.

    Not strict (the default): bad slices are skipped and listed in the QC table; a
    scan with no usable slice gets an empty crop set, its battery the verdict
    ``NO DATA``, and the rest of the run goes on. Strict: any skipped slice fails
    the scan's job (and so the run, unless Snakemake runs with ``--keep-going``).

    Raises:
        NoUsableSlices, SkippedSlices: only when ``strict``.
    """
    try:
        crop_set, qc = extract_crops(scan_id, slices, rois, window_settings, expected_shape, context)
    except NoUsableSlices as exc:
        if strict:
            raise
        log.error("%s; the battery gets the verdict NO DATA (set strict: true to stop instead)", exc)
        return empty_crop_set(scan_id, rois, context), exc.qc
    bad = qc[qc["status"] != "ok"]
    if strict and len(bad):
        first = bad.iloc[0]
        raise SkippedSlices(f"scan {scan_id}: {len(bad)} slice(s) unusable and strict is set, e.g. slice "
                            f"{first['slice_index']}: {first['reason']}")
    return crop_set, qc


def crop_batch(records: list[dict], slices_of, rois: list[Roi], window_settings: dict, context: int,
               strict: bool, crops_dir: str | Path, qc_dir: str | Path) -> None:
    """Crop each scan of a batch (``anodect.batches``): ``{scan}.npz`` in ``crops_dir``, its QC
    table ``{scan}.tsv`` in ``qc_dir``; both folders appear whole or not at all.

    Args:
        records: the batch's sample-sheet rows (``scan_id``, ``height``, ``width``).
        slices_of: scan id -> that scan's slice rows (``workflow.scan_slices``).
    """
    with atomic_dir(crops_dir) as crops_out, atomic_dir(qc_dir) as qc_out:
        for record in records:
            scan_id = record["scan_id"]
            shape = (record["height"], record["width"])
            with scan_context(scan_id):
                crop_set, qc = crop_scan(scan_id, slices_of(scan_id), rois, window_settings,
                                         expected_shape=shape if min(shape) > 0 else None, context=context,
                                         strict=strict)
                write_table(scan_file(qc_out, scan_id, "qc"), qc)
                crop_set.save(scan_file(crops_out, scan_id, "crops"))
            log.info("%s: %d slices kept, %d skipped, window %.1f..%.1f", scan_id, crop_set.n_slices,
                     int((qc["status"] != "ok").sum()), *crop_set.window)


__all__ = ["CropSet", "NoUsableSlices", "QC_COLUMNS", "SkippedSlices", "Window", "crop_batch", "crop_scan",
           "empty_crop_set", "extract_crops"]
