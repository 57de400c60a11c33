"""The PatchCore stage of the pipeline: train once, score each scan, write one file per scan."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..crops import CropSet
from ..devices import resolve_device, set_threads
from .legacy import OriginalPatchCore, is_original_model
from .model import PatchCore, PatchCoreSettings, ScoreResult, save_scores

log = logging.getLogger(__name__)


def train(crop_paths: list[str], scans: list[dict], settings: PatchCoreSettings, out_dir: str | Path,
          threads: int) -> PatchCore:
    """Build and save a memory bank from the crops of normal scans."""
    set_threads(threads)
    sets = [CropSet.load(p) for p in crop_paths]
    if not sets:
        raise ValueError("PatchCore training needs at least one normal scan (training.normal_dir)")
    contexts = {s.context for s in sets}
    if len(contexts) != 1:
        raise ValueError(f"training crops were cut with different contexts {sorted(contexts)}")
    crops = np.concatenate([s.crops.reshape(-1, *s.crops.shape[2:]) for s in sets])
    device = resolve_device(settings.device)
    log.info("training PatchCore on %d crops of %d scans (%s, %s)", len(crops), len(sets), settings.backbone, device)
    model = PatchCore(settings, device).fit(crops, contexts.pop(), training_scans=scans)
    model.save(out_dir)
    log.info("memory bank %s, model %s, train scores %s", model.bank.shape, model.metadata["model_id"],
             model.metadata["train_score_stats"])
    return model


def load(folder: str | Path, settings: PatchCoreSettings, resize_size=(168, 128)):
    """A saved anodect model, or the original tool's files, from ``folder``."""
    device = resolve_device(settings.device)
    folder = Path(folder)
    if is_original_model(folder):
        return OriginalPatchCore(folder, resize_size, settings.weights_path, settings.download_weights,
                                 device, batch_size=min(settings.batch_size, 8))
    return PatchCore.load(folder, device, settings.batch_size, settings.weights_path, settings.download_weights)


def score_scan(model, crops_path: str | Path, out_path: str | Path) -> dict:
    """Score every slice x ROI of one scan and write its score file; returns timings."""
    t0 = time.perf_counter()
    crop_set = CropSet.load(crops_path)
    s, r, h, w = crop_set.crops.shape
    if isinstance(model, PatchCore):
        model.check_compatible((h, w), crop_set.context)
    if s == 0:
        # A scan with no usable slice (see crops.crop_scan): an empty score file keeps the run going.
        c = crop_set.context
        result = ScoreResult(np.zeros(0, np.float32), np.zeros((0, h - 2 * c, w - 2 * c), np.float32))
        log.warning("%s: no usable slice, nothing to score", crop_set.scan_id)
    else:
        result = model.score(crop_set.crops.reshape(s * r, h, w), crop_set.context)
    model_id = model.metadata.get("model_id", model.metadata.get("weights_id", "original"))
    save_scores(out_path, result, crop_set, model_id)
    elapsed = time.perf_counter() - t0
    log.info("%s: %d crops in %.2f s (%.1f crops/s), max score %.3f", crop_set.scan_id, s * r, elapsed,
             s * r / max(elapsed, 1e-9), float(result.scores.max()) if len(result.scores) else float("nan"))
    return {"crops": s * r, "seconds": elapsed, **result.timings}
