"""The RF-DETR stage of the pipeline: build the training set, train, predict per scan."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..batches import scan_context, scan_file
from ..crops import CropSet
from ..devices import resolve_device, set_threads
from ..evidence import BoxTable
from ..io import atomic_dir
from ..annotations import AnnotatedScan, annotation_files, place_annotations
from .dataset import DatasetSettings, build_dataset, write_dataset
from .model import Detection, Detector

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = BoxTable.COLUMNS


def make_dataset(annotated: list[tuple[dict, str]], normal_crops: list[str], annotations_dir: str | Path,
                 settings: DatasetSettings, class_label: str, out_dir: str | Path, strict: bool = False) -> dict:
    """The COCO training folders from annotated scans' crops and normal scans' crops.

    Args:
        annotated: (sample-sheet record, crops path) of every annotated scan; the crops
            file must belong to the record's scan.
        normal_crops: crops paths of normal scans (backgrounds and negatives).
        annotations_dir: folder of VIA or COCO JSON files.
        settings: dataset settings.
        class_label: the single category's name.
        out_dir: the dataset folder to write.
        strict: stop at an unreadable annotation file instead of skipping it.
    """
    scans = [AnnotatedScan(rec, CropSet.load(p)) for rec, p in annotated]
    for scan in scans:
        if scan.crops.scan_id != scan.record["scan_id"]:
            raise ValueError(f"{scan.record['scan_id']}: crops file holds scan {scan.crops.scan_id}")
    if not scans:
        raise ValueError("RF-DETR training needs annotated scans (training.annotated_dir)")
    files = annotation_files(annotations_dir)
    placed, report = place_annotations(files, annotations_dir, scans, strict)
    log.info("annotations: %d files (%d unreadable), %d polygons placed on crops, %d outside filter_index_range, "
             "%d outside every ROI, %d outside the image, %d unmatched", len(files), len(report.rejected),
             report.matched, report.outside_range, report.outside_rois, len(report.outside_image),
             len(report.unmatched))
    if not placed:
        raise ValueError(f"no annotation under {annotations_dir} falls on a crop of the annotated scans "
                         f"({report.as_dict()})")
    normal = {cs.scan_id: cs for cs in (CropSet.load(p) for p in normal_crops)}
    annotated_sets = {s.crops.scan_id: s.crops for s in scans}
    shapes = {cs.crops.shape[-2:] for cs in [*annotated_sets.values(), *normal.values()]}
    contexts = {cs.context for cs in [*annotated_sets.values(), *normal.values()]}
    if len(shapes) != 1 or len(contexts) != 1:
        raise ValueError(f"crops differ in size {sorted(shapes)} or context {sorted(contexts)}")
    images, split_of = build_dataset(placed, annotated_sets, normal, settings)
    provenance = {"annotations": report.as_dict(), "context": contexts.pop(),
                  "crop_shape": [int(v) for v in shapes.pop()]}
    manifest = write_dataset(out_dir, images, split_of, class_label, settings, provenance)
    log.info("dataset %s: %s", manifest["dataset_id"], manifest["counts"])
    return manifest


def load_detector(checkpoint: str | Path, settings: dict) -> Detector:
    """Load a checkpoint once per job, on the configured device."""
    return Detector(checkpoint, resolve_device(settings.get("device", "auto")),
                    batch_size=settings.get("batch_size", 16),
                    trust_checkpoint=settings.get("trust_checkpoint", False))


def to_slice_boxes(detections: list[Detection], crop_set: CropSet, context: int) -> pd.DataFrame:
    """Crop boxes -> full-slice boxes, clipped to their ROI.

    Crops are scored with ``context`` pixels around the ROI; boxes lying wholly in
    that border are dropped, since decisions cover the ROI only.
    """
    n_rois = len(crop_set.roi_names)
    rows = []
    for k, det in enumerate(detections):
        s, r = divmod(k, n_rois)
        x0, y0, x1, y1 = (float(v) for v in crop_set.roi_boxes[r])
        ox, oy = crop_set.origin(r, context)
        boxes = det.xyxy + np.array([ox, oy, ox, oy], np.float32)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(x0, x1)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(y0, y1)
        keep = ((boxes[:, 2] - boxes[:, 0]) > 0.5) & ((boxes[:, 3] - boxes[:, 1]) > 0.5)
        for box, conf, cls in zip(boxes[keep], det.confidence[keep], det.class_id[keep]):
            rows.append({"slice_index": int(crop_set.slice_indices[s]), "roi": str(crop_set.roi_names[r]),
                         "x1": round(float(box[0]), 1), "y1": round(float(box[1]), 1),
                         "x2": round(float(box[2]), 1), "y2": round(float(box[3]), 1),
                         "confidence": round(float(conf), 4), "class_id": int(cls)})
    table = pd.DataFrame(rows, columns=PREDICTION_COLUMNS[1:-1])
    return table.sort_values(["slice_index", "roi", "confidence"], ascending=[True, True, False],
                             kind="stable").reset_index(drop=True)


def crops_for(detector: Detector, crop_set: CropSet) -> np.ndarray:
    """The scan's crops as the model was trained on them: [slice*roi, h, w]."""
    crops = crop_set.with_context(detector.context)
    return crops.reshape(-1, *crops.shape[-2:])


def predict_scan(detector: Detector, crops_path: str | Path, out_path: str | Path, floor: float,
                 threads: int) -> pd.DataFrame:
    """Predict every ROI crop of one scan and write its boxes (full-slice pixels) to ``out_path``."""
    set_threads(threads)
    t0 = time.perf_counter()
    crop_set = CropSet.load(crops_path)
    crops = crops_for(detector, crop_set)
    if len(crops) == 0:
        log.warning("%s: no usable slice, nothing to predict", crop_set.scan_id)
        empty = pd.DataFrame(columns=PREDICTION_COLUMNS)
        BoxTable(empty).save(out_path)
        return empty
    table = to_slice_boxes(detector.predict(crops, floor), crop_set, detector.context)
    table.insert(0, "scan_id", crop_set.scan_id)
    table["model_id"] = detector.model_id
    BoxTable(table).save(out_path)
    elapsed = time.perf_counter() - t0
    log.info("%s: %d crops in %.2f s (%.1f crops/s), %d boxes >= %.2f, best %.3f", crop_set.scan_id, len(crops),
             elapsed, len(crops) / max(elapsed, 1e-9), len(table), floor,
             float(table["confidence"].max()) if len(table) else 0.0)
    return table


def predict_batch(detector: Detector, crops_dir: str | Path, scan_ids: list[str], out_dir: str | Path,
                  floor: float, threads: int) -> None:
    """Predict each scan of a batch (``anodect.batches``) into ``out_dir``, one table per scan.

    The detector is loaded once by the caller for the whole batch; the folder appears
    whole or not at all, so a killed job leaves no half batch.
    """
    with atomic_dir(out_dir) as out:
        for scan_id in scan_ids:
            with scan_context(scan_id):
                predict_scan(detector, scan_file(crops_dir, scan_id, "crops"), scan_file(out, scan_id, "predictions"), floor,
                             threads)
