"""The segmenter's stage of the pipeline: train once on the normal scans, score each scan of a batch."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..batches import scan_context, scan_file
from ..crops import CropSet
from ..devices import resolve_device, set_threads
from ..evidence import ScoreMaps
from ..io import atomic_dir
from .model import AnnotatedCrack, Segmenter, SegmenterSettings, TrainingCell, split_cells

log = logging.getLogger(__name__)


def annotated_cracks(annotated: list[tuple[dict, str]], annotations_dir: str | Path, settings: SegmenterSettings,
                     strict: bool = False) -> tuple[list[AnnotatedCrack], dict]:
    """The cracks users drew on annotated scans (VIA or COCO, placed as RF-DETR's training set places
    them), each with its drawn polygon as the label; and what became of every annotation."""
    from ..annotations import AnnotatedScan, annotation_files, place_annotations

    scans = [AnnotatedScan(rec, CropSet.load(p)) for rec, p in annotated]
    scans = [s for s in scans if s.crops.n_slices]
    if not scans:
        return [], {"scans": 0}
    placed, report = place_annotations(annotation_files(annotations_dir), annotations_dir, scans, strict)
    cells = {s.crops.scan_id: TrainingCell.of(s.crops.scan_id, s.crops.crops, s.crops.slice_indices, settings.inputs)
             for s in scans}
    shape = scans[0].crops.crops.shape[-2:]
    cracks = [AnnotatedCrack(cells[a.scan_id], a.slice_pos, a.roi, a.mask(shape), a.source) for a in placed]
    cracks = [c for c in cracks if c.mask.any()]
    log.info("annotated real cracks: %d polygons on %d scans (%s)", len(cracks), len(scans),
             {k: v for k, v in report.as_dict().items() if k in ("matched", "outside_rois", "n_unmatched")})
    return cracks, {"scans": len(scans), **{k: v for k, v in report.as_dict().items()
                                            if k in ("matched", "outside_rois", "n_unmatched", "rejected_files")}}


def train(*, crop_paths: list[str], scans: list[dict], settings: SegmenterSettings, out_dir: str | Path,
          threads: int, annotated: list[tuple[dict, str]] | None = None, annotations_dir: str | None = None,
          strict: bool = False) -> Segmenter:
    """Train on the normal scans' crops with rendered cracks (and the annotated scans' real cracks
    when given), hold cells out for the threshold, save."""
    set_threads(threads)
    sets = [CropSet.load(p) for p in crop_paths]
    usable = [s for s in sets if s.n_slices]
    if not usable:
        raise ValueError("the crack segmenter needs at least one normal scan with usable slices (training.normal_dir)")
    contexts = {s.context for s in usable}
    if len(contexts) != 1:
        raise ValueError(f"training crops were cut with different contexts {sorted(contexts)}")
    cells = {s.scan_id: TrainingCell.of(s.scan_id, s.crops, s.slice_indices, settings.inputs) for s in usable}
    train_ids, held_ids = split_cells(list(cells), settings.heldout_fraction)
    device = resolve_device(settings.device)
    log.info("training the crack segmenter on %d cells (%d crops), %d held out for the threshold, on %s; "
             "%d steps of %d patches of %d px", len(train_ids), sum(cells[i].crops[:, :, 0, 0].size for i in train_ids),
             len(held_ids), device, settings.steps, settings.batch_size, settings.patch)
    real, report = annotated_cracks(annotated, annotations_dir, settings, strict) if annotated else ([], {})
    model = Segmenter(settings, device).fit([cells[i] for i in train_ids], [cells[i] for i in held_ids],
                                            contexts.pop(), scans, annotated=real, annotations=report)
    model.save(out_dir)
    return model


def load(folder: str | Path, settings: dict) -> Segmenter:
    """A saved segmenter on the configured device (loaded once per job)."""
    return Segmenter.load(folder, resolve_device(settings.get("device", "auto")), settings)


def score_scan(model: Segmenter, crops_path: str | Path, out_path: str | Path) -> dict:
    """Every slice x ROI of one scan: crack probability maps at ROI resolution and their maxima."""
    t0 = time.perf_counter()
    crop_set = CropSet.load(crops_path)
    s, r, h, w = crop_set.crops.shape
    model.check_compatible((h, w), crop_set.context)
    if s == 0:
        log.warning("%s: no usable slice, nothing to score", crop_set.scan_id)
        scores, maps, facts = np.zeros((0, r), np.float32), np.zeros(crop_set.inner().shape, np.float32), {}
    else:
        scores, maps, facts = model.score(crop_set.crops, crop_set.slice_indices, crop_set.context)
        if facts["no_distant_slices"]:
            log.warning("%s: %d of %d slices have no slice %d-%d slice numbers away (a short scan): judged on "
                        "the slice and its neighbours alone, without the residual", crop_set.scan_id,
                        facts["no_distant_slices"], s, *model.settings.inputs.distant)
    ScoreMaps.from_crops(crop_set, scores, maps, model.metadata.get("model_id", ""),
                         volume={"inputs": model.settings.inputs.distant}).save(out_path)
    elapsed = time.perf_counter() - t0
    log.info("%s: %d crops in %.2f s (%.1f crops/s), max probability %.3f", crop_set.scan_id, s * r, elapsed,
             s * r / max(elapsed, 1e-9), float(scores.max()) if s else float("nan"))
    return {"crops": s * r, "seconds": elapsed, "model_seconds": facts.get("seconds", 0.0)}


def score_batch(model: Segmenter, crops_dir: str | Path, scan_ids: list[str], out_dir: str | Path) -> None:
    """Score each scan of a batch into ``out_dir``, one score file per scan; the folder appears whole."""
    with atomic_dir(out_dir) as out:
        for scan_id in scan_ids:
            with scan_context(scan_id):
                score_scan(model, scan_file(crops_dir, scan_id, "crops"), scan_file(out, scan_id, "scores"))


__all__ = ["annotated_cracks", "load", "score_batch", "score_scan", "train"]
