"""What users look at: slices with their boxes drawn, in the original tool's folders and CSVs.

Each scan's slices are drawn once per model into a staging folder
(``anomaly/`` or ``normal/`` by the decision); ``publish`` then links them into the
original layout ``inference_<model>/{anomaly,normal}/<battery>/<axis>/<stem>.png``
and writes the original ``AI_RESULTS`` CSVs. A slice is in exactly one folder.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import supervision as sv

from .crops import CropSet
from .imaging import SliceReadError, Window, read_slice
from .decisions import NO_DATA, scan_verdict
from .io import atomic_dir, read_table, write_bytes

log = logging.getLogger(__name__)

LOG_HEADER = ["Name", "Result", "NG_countL", "NG_countP", "NG_countE"]
DETECTED_HEADER = ["file_name", "xmin", "ymin", "xmax", "ymax", "L", "P", "E"]
# Confirmed cracks in red (the original's colour), detections that did not make a crack in amber.
PALETTE = sv.ColorPalette([sv.Color(255, 40, 40), sv.Color(255, 190, 0)])


def draw(image: np.ndarray, boxes: pd.DataFrame, class_label: str, thickness: int = 2) -> np.ndarray:
    """A BGR copy (OpenCV's and supervision's order) of a grey slice with ``boxes`` drawn and
    labelled with their score; boxes of confirmed cracks carry ``class_label``."""
    bgr = np.repeat(image[..., None], 3, axis=2)
    if not len(boxes):
        return bgr
    confirmed = boxes["crack_id"].fillna("").astype(str) != ""
    # Boxes are corners on pixel edges (anodect.regions), what supervision draws.
    xyxy = boxes[["x1", "y1", "x2", "y2"]].to_numpy(np.float32)
    dets = sv.Detections(xyxy=xyxy, confidence=boxes["score"].to_numpy(np.float32),
                         class_id=np.where(confirmed, 0, 1))
    labels = [f"{class_label} {s:.2f}" if c else f"unconfirmed {s:.2f}"
              for s, c in zip(boxes["score"], confirmed)]
    bgr = sv.BoxAnnotator(color=PALETTE, thickness=thickness).annotate(bgr, dets)
    return sv.LabelAnnotator(color=PALETTE, text_color=sv.Color.BLACK, text_scale=0.4, text_padding=2,
                             smart_position=True).annotate(bgr, dets, labels=labels)


def render_scan(slices: pd.DataFrame, detections: pd.DataFrame, window: tuple[float, float], class_label: str,
                out_dir: str | Path, thickness: int = 2) -> dict:
    """Draw every slice of one scan into ``out_dir/{anomaly,normal}/<stem>.png``.

    Args:
        slices: the scan's slice table (``decisions.SLICE_COLUMNS``: path, anomaly).
        detections: the scan's detections (crack_id empty when not confirmed).
        window: the scan's grey window (from its crops), so images match what the models saw.
        class_label: label of confirmed boxes.
        out_dir: staging folder; written whole or not at all.

    Returns:
        Counts of images written per folder and of slices that could not be read.
    """
    counts = {"anomaly": 0, "normal": 0, "unreadable": 0}
    win = Window(*window)
    with atomic_dir(out_dir) as tmp:
        for folder in ("anomaly", "normal"):
            (tmp / folder).mkdir()
        for row in slices.itertuples():
            page = int(getattr(row, "page", -1))
            try:
                image = win.apply(read_slice(row.path, None if page < 0 else page))
            except SliceReadError as exc:
                counts["unreadable"] += 1
                log.warning("slice %s not drawn: %s", row.slice_index, exc)
                continue
            folder = "anomaly" if row.anomaly else "normal"
            boxes = detections[detections["slice_index"] == row.slice_index]
            ok, png = cv2.imencode(".png", draw(image, boxes, class_label, thickness),
                                   [cv2.IMWRITE_PNG_COMPRESSION, 1])
            if not ok:
                raise RuntimeError(f"PNG encoding failed for {row.path}")
            (tmp / folder / f"{_name(row)}.png").write_bytes(png.tobytes())
            counts[folder] += 1
    return counts


def render_decided(folder: str | Path, crops_path: str | Path, class_label: str, out_dir: str | Path,
                   thickness: int = 2) -> dict:
    """Draw one scan's decisions: the tables ``decisions.decide_scan`` wrote in ``folder``.

    The tables are read back as written (a few kB), so the boxes drawn are the boxes
    the CSVs and the report hold, to the last digit; the grey window is the crops'.
    """
    folder = Path(folder)
    return render_scan(read_table(folder / "slices.csv"), read_table(folder / "detections.csv"),
                       CropSet.read_meta(crops_path)["window"], class_label, out_dir, thickness)


def _name(row) -> str:
    """A slice table row's slice name (tables written before stacks were named: the file stem)."""
    name = getattr(row, "slice_name", None)
    return str(name) if isinstance(name, str) and name else Path(row.path).stem


def inclusive_pixels(x1: float, y1: float, x2: float, y2: float) -> tuple[int, int, int, int]:
    """Corners -> the first and last pixel covered on each axis (at least one pixel)."""
    px1, py1 = math.floor(x1), math.floor(y1)
    return px1, py1, max(px1, math.ceil(x2) - 1), max(py1, math.ceil(y2) - 1)


def _csv_bytes(header: list[str], rows: list[list]) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def ai_results(battery: str, slices: pd.DataFrame, detections: pd.DataFrame, verdict: str = "") -> dict[str, bytes]:
    """The original's two CSVs for one battery, as bytes: ``<battery>_log.csv`` (one row per
    anomaly image) and ``<battery>_detected.csv`` (one row per box of a confirmed crack).

    ``xmin..xmax`` and ``ymin..ymax`` are the inclusive pixel bounds the original's PatchCore
    wrote (its box was the min and max pixel of a cluster): our corners converted once, here,
    as the first and last pixel the box covers.

    A ``NO DATA`` battery (too few slices judged) gets one row in ``_log.csv``: the battery's
    name, ``Result`` ``NO DATA``, the counts empty. The original's header-only file means OK,
    so a NO DATA battery written that way would read as OK; with the row, a reader that counts
    rows sends it to review as it would an NG one, and one that reads ``Result`` sees why.
    """
    name = battery.replace("/", "").replace("[", "").replace("]", "")
    anomaly = slices[slices["anomaly"].astype(bool)].sort_values("slice_index")
    stems = {int(r.slice_index): f"{_name(r)}.png" for r in anomaly.itertuples()}
    log_rows = [[stems[int(i)], "NG", 1, "", ""] for i in anomaly["slice_index"]]
    if verdict == NO_DATA and not log_rows:
        log_rows = [[name, NO_DATA, "", "", ""]]
    confirmed = detections[(detections["crack_id"].fillna("").astype(str) != "")
                           & detections["slice_index"].isin(stems)].sort_values(["slice_index", "roi"])
    det_rows = [[stems[int(r.slice_index)], *inclusive_pixels(r.x1, r.y1, r.x2, r.y2), 1, "", ""]
                for r in confirmed.itertuples()]
    return {f"{name}_log.csv": _csv_bytes(LOG_HEADER, log_rows),
            f"{name}_detected.csv": _csv_bytes(DETECTED_HEADER, det_rows)}


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(src, dst)


def publish(scans: list[dict], staged: dict[str, str], tables: dict[str, tuple[pd.DataFrame, pd.DataFrame]],
            out_dir: str | Path, export_csv: bool, min_slices: int = 1) -> None:
    """Lay out one model's images as the original did and write its AI_RESULTS.

    Args:
        scans: sample-sheet records of the inspected scans (scan_id, battery_id, battery_path, axis).
        staged: scan_id -> staging folder of ``render_scan``.
        tables: scan_id -> (slice table, detections).
        out_dir: ``<output_inference_dir>/inference_<model>``, replaced whole.
        export_csv: write ``AI_RESULTS/<battery>/<battery>_{log,detected}.csv`` (``export_ai_csv_files``).
        min_slices: ``decisions.min_consecutive_slices``: fewer slices judged is NO DATA.
    """
    with atomic_dir(out_dir) as tmp:
        for scan in scans:
            sid = scan["scan_id"]
            for folder in ("anomaly", "normal"):
                target = tmp / folder / scan["battery_path"] / scan["axis"]
                for png in sorted((Path(staged[sid]) / folder).glob("*.png")):
                    _link_or_copy(png, target / png.name)
            if export_csv:
                slices, detections = tables[sid]
                cracks = detections["crack_id"].fillna("").astype(str)
                verdict = scan_verdict(int(cracks[cracks != ""].nunique()), len(slices), min_slices)
                battery_dir = tmp / "AI_RESULTS" / scan["battery_path"]
                for name, data in ai_results(scan["battery_id"], slices, detections, verdict).items():
                    write_bytes(battery_dir / name, data)


def publish_scans(scans: list[dict], image_dirs: list[str], slice_tables: list[str], detection_tables: list[str],
                  out_dir: str | Path, export_csv: bool, min_slices: int = 1) -> None:
    """``publish`` from the rule's file lists, which follow the order of ``scans``."""
    from .io import read_table

    staged = {s["scan_id"]: d for s, d in zip(scans, image_dirs, strict=True)}
    tables = {s["scan_id"]: (read_table(sl), read_table(det))
              for s, sl, det in zip(scans, slice_tables, detection_tables, strict=True)}
    publish(scans, staged, tables, out_dir, export_csv, min_slices)
