"""The PatchCore stage of the pipeline: train once, score each scan, write one file per scan."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..batches import scan_context, scan_file
from ..crops import CropSet
from ..devices import resolve_device, set_threads
from ..io import atomic_dir
from ..evidence import ScoreMaps
from .legacy import OriginalPatchCore
from .model import PatchCore, PatchCoreSettings, ScanScores
from .plugin import is_original_model
from .volume import VolumeSettings, volume_maps, volume_scores

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
    usable = [s for s in sets if s.n_slices]
    device = resolve_device(settings.device)
    log.info("training PatchCore on %d crops of %d scans (%s, %s, volume %s)",
             sum(s.crops.shape[0] * s.crops.shape[1] for s in usable), len(usable), settings.backbone, device,
             settings.volume.as_dict())
    model = PatchCore(settings, device).fit_scans([(s.crops, s.slice_indices) for s in usable], contexts.pop(),
                                                  training_scans=scans)
    model.save(out_dir)
    auto = model.metadata["auto_threshold"]
    log.info("memory bank %s, model %s; automatic thresholds at %.2g false alarms per held-out crop: "
             "slice %s, volume %s", model.bank.shape, model.metadata["model_id"], auto["false_alarm_rate"],
             auto.get("slice"), auto.get("volume"))
    return model


class Scorer:
    """A loaded PatchCore, anodect's own or the original tool's: two loaders of one model.

    Both give the same evidence file: raw scores and maps, and the volume evidence
    (the original's with no slab, as it was trained).
    """

    def __init__(self, model, volume: VolumeSettings, model_id: str):
        self.model = model
        self.volume = volume
        self.model_id = model_id

    @classmethod
    def anodect(cls, model: PatchCore) -> "Scorer":
        return cls(model, VolumeSettings.from_model(model.metadata.get("volume")),
                   model.metadata.get("model_id", "original"))

    @classmethod
    def original(cls, model: OriginalPatchCore) -> "Scorer":
        return cls(model, VolumeSettings(slab=1), model.metadata.get("model_id", model.metadata.get("weights_id",
                                                                                                    "original")))

    def check(self, crop_set: CropSet) -> None:
        """Crops the model cannot score (another size or context) stop here, naming the difference."""
        check = getattr(self.model, "check_compatible", None)
        if check is not None:
            check(crop_set.crops.shape[-2:], crop_set.context)

    def evidence(self, crop_set: CropSet) -> ScanScores:
        s, r, h, w = crop_set.crops.shape
        if hasattr(self.model, "score_volume"):
            return self.model.score_volume(crop_set.crops, crop_set.slice_indices, crop_set.context)
        raw = self.model.score(crop_set.crops.reshape(s * r, h, w), crop_set.context)
        maps = raw.maps.reshape(s, r, *raw.maps.shape[1:])
        vmaps = volume_maps(maps, crop_set.slice_indices, self.volume)
        return ScanScores(raw.scores.reshape(s, r), maps, volume_scores(vmaps), vmaps, raw.timings)


def load(folder: str | Path, settings: PatchCoreSettings, resize_size=(168, 128)) -> Scorer:
    """A saved anodect model, or the original tool's files, from ``folder``."""
    device = resolve_device(settings.device)
    folder = Path(folder)
    if is_original_model(folder):
        return Scorer.original(OriginalPatchCore(folder, resize_size, settings.weights_path,
                                                 settings.download_weights, device,
                                                 batch_size=min(settings.batch_size, 8)))
    return Scorer.anodect(PatchCore.load(folder, device, settings.batch_size, settings.weights_path,
                                         settings.download_weights))


def score_scan(scorer: Scorer, crops_path: str | Path, out_path: str | Path) -> dict:
    """Score every slice x ROI of one scan and write its score file; returns timings."""
    t0 = time.perf_counter()
    crop_set = CropSet.load(crops_path)
    s, r, h, w = crop_set.crops.shape
    scorer.check(crop_set)
    if s == 0:
        # A scan with no usable slice (see crops.crop_scan): an empty score file keeps the run going.
        empty = np.zeros(crop_set.inner().shape, np.float32)
        result = ScanScores(np.zeros((0, r), np.float32), empty, np.zeros((0, r), np.float32), empty)
        log.warning("%s: no usable slice, nothing to score", crop_set.scan_id)
    else:
        result = scorer.evidence(crop_set)
    if s and s < scorer.volume.min_slices:
        log.warning("%s: %d slices, fewer than patchcore.volume.min_slices (%d): no volume evidence for this "
                    "scan, only its raw maps", crop_set.scan_id, s, scorer.volume.min_slices)
    ScoreMaps.from_crops(crop_set, result.scores, result.maps, scorer.model_id, result.volume_scores,
                         result.volume_maps, scorer.volume.as_dict()).save(out_path)
    elapsed = time.perf_counter() - t0
    log.info("%s: %d crops in %.2f s (%.1f crops/s), max score %.3f, max volume score %.3f", crop_set.scan_id,
             s * r, elapsed, s * r / max(elapsed, 1e-9), float(result.scores.max()) if s else float("nan"),
             float(np.nanmax(result.volume_scores)) if s and np.isfinite(result.volume_scores).any() else float("nan"))
    return {"crops": s * r, "seconds": elapsed, **result.timings}


def score_batch(scorer: Scorer, crops_dir: str | Path, scan_ids: list[str], out_dir: str | Path) -> None:
    """Score each scan of a batch (``anodect.batches``) into ``out_dir``, one file per scan.

    The model is loaded once by the caller for the whole batch; the folder appears whole
    or not at all, so a killed job leaves no half batch.
    """
    with atomic_dir(out_dir) as out:
        for scan_id in scan_ids:
            with scan_context(scan_id):
                score_scan(scorer, scan_file(crops_dir, scan_id, "crops"), scan_file(out, scan_id, "scores"))
