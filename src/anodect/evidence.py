"""Per-scan model evidence, one class per kind of file, like ``CropSet`` for crops.

A model writes one of two kinds of evidence per scan, thresholds not applied:

* ``ScoreMaps`` (``.npz``): a score and a map at ROI resolution per slice x ROI,
  raw and, where the model makes it, the volume evidence (z-scores against the
  scan's own slices). PatchCore and the crack segmenter write these.
* ``BoxTable`` (``.csv``): every scored box per crop, in slice pixels. RF-DETR
  writes these.

Each class writes, reads and validates its file; the decisions, the evaluation and
the report read evidence through these classes and ``for_model``, never by a
model's name or by raw keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .crops import crop_origin
from .io import load_arrays, read_table, save_arrays, write_table
from .regions import regions_from_map

BOX_COLUMNS = ["slice_index", "roi", "x1", "y1", "x2", "y2", "score", "crop_score"]
CROP_SCORE_COLUMNS = ["model", "scan_id", "slice_index", "roi", "score"]


class EvidenceError(ValueError):
    """An evidence file that cannot be used; the message names the file and why."""


@dataclass
class ScoreMaps:
    """One scan's score maps: scores [slice, roi] and float16 maps [slice, roi, h, w] over the ROI.

    Attributes:
        scan_id: the scan.
        scores, maps: the raw evidence of every crop.
        volume_scores, volume_maps: the volume evidence (NaN where a scan is too short
            to have one; NaN throughout for a model that makes none).
        slice_indices, roi_names, roi_boxes: the crops' slices and ROIs (``CropSet``).
        model_id: the model that wrote it.
        volume_settings: how the volume evidence was made (JSON).
    """

    FORMAT = 1  # the version of the file's layout, written with it
    EVIDENCE = {"slice": ("scores", "maps"), "volume": ("volume_scores", "volume_maps")}
    REQUIRED = ("scan_id", "scores", "maps", "slice_indices", "roi_names", "roi_boxes")
    SUFFIX = ".npz"

    scan_id: str
    scores: np.ndarray
    maps: np.ndarray
    slice_indices: np.ndarray
    roi_names: np.ndarray
    roi_boxes: np.ndarray
    model_id: str = ""
    volume_scores: np.ndarray | None = None
    volume_maps: np.ndarray | None = None
    volume_settings: str = "{}"

    def save(self, path: str | Path) -> None:
        """Write the file atomically (``io.save_arrays``)."""
        s, r = self.scores.shape
        vs = self.volume_scores if self.volume_scores is not None else np.full((s, r), np.nan, np.float32)
        vm = self.volume_maps if self.volume_maps is not None else np.full(self.maps.shape, np.nan, np.float16)
        save_arrays(
            path,
            scan_id=np.array(self.scan_id),
            scores=self.scores.astype(np.float32),
            maps=self.maps.astype(np.float16),
            volume_scores=np.asarray(vs, np.float32),
            volume_maps=np.asarray(vm, np.float16),
            volume_settings=np.array(self.volume_settings),
            slice_indices=np.asarray(self.slice_indices),
            roi_names=np.asarray(self.roi_names),
            roi_boxes=np.asarray(self.roi_boxes),
            model_id=np.array(self.model_id),
            format=np.array(self.FORMAT),
        )

    @classmethod
    def from_crops(cls, crop_set, scores, maps, model_id: str, volume_scores=None, volume_maps=None,
                   volume: dict | None = None) -> "ScoreMaps":
        """Evidence for the crops of ``crop_set`` (its scan, slices and ROIs)."""
        return cls(crop_set.scan_id, np.asarray(scores), np.asarray(maps), crop_set.slice_indices,
                   crop_set.roi_names, crop_set.roi_boxes, model_id, volume_scores, volume_maps,
                   json.dumps(volume or {}, sort_keys=True))

    @classmethod
    def read(cls, path: str | Path, evidence: str | None = None) -> "ScoreMaps":
        """Read and check a score file; with ``evidence``, only that evidence's arrays are loaded.

        Raises:
            EvidenceError: a key missing, a newer format, or arrays that disagree in shape.
        """
        keys = None
        if evidence is not None:
            keys = (*cls.REQUIRED, "model_id", "volume_settings", "format", *cls.EVIDENCE[evidence])
        try:
            a = load_arrays(path, keys)
        except (OSError, ValueError) as exc:
            raise EvidenceError(f"{path}: unreadable score file ({exc})") from exc
        missing = [k for k in cls.REQUIRED if k not in a]
        if missing:
            raise EvidenceError(f"{path}: not a score file (missing {', '.join(missing)})")
        version = int(a["format"]) if "format" in a else 1
        if version > cls.FORMAT:
            raise EvidenceError(f"{path}: score file format {version} is newer than this anodect reads "
                                f"({cls.FORMAT}); update anodect")
        out = cls(str(a["scan_id"]), a["scores"], a["maps"], a["slice_indices"], a["roi_names"], a["roi_boxes"],
                  str(a.get("model_id", "")), a.get("volume_scores"), a.get("volume_maps"),
                  str(a.get("volume_settings", "{}")))
        n = (len(out.slice_indices), len(out.roi_names))
        if out.scores.shape != n or out.maps.shape[:2] != n:
            raise EvidenceError(f"{path}: scores {out.scores.shape} and maps {out.maps.shape} do not match "
                                f"{n[0]} slices x {n[1]} ROIs")
        if evidence is not None and out.arrays(evidence)[0] is None:
            raise EvidenceError(f"{path}: no {evidence} evidence ({cls.EVIDENCE[evidence][0]}); rerun its scoring")
        return out

    @classmethod
    def from_arrays(cls, a: dict) -> "ScoreMaps":
        """Evidence held in memory under the file's names (as ``save`` writes them)."""
        return cls(str(a["scan_id"]), a["scores"], a["maps"], np.asarray(a["slice_indices"]),
                   np.asarray(a["roi_names"]), np.asarray(a["roi_boxes"]), str(a.get("model_id", "")),
                   a.get("volume_scores"), a.get("volume_maps"), str(a.get("volume_settings", "{}")))

    # ---- what decisions and the evaluation ask of any evidence ---------------------------

    def judged(self, settings) -> bool:
        """Whether the scan can be judged on the evidence ``settings`` use (NaN throughout: not)."""
        return self.has(settings.evidence)

    def judged_slices(self, settings, observed) -> list[int]:
        """The slices of ``observed`` that have this evidence: a slice without it (volume evidence
        of a slice alone between gaps) was not judged, and counts as not seen."""
        scores = self.arrays(settings.evidence)[0]
        if scores is None:
            return list(observed)
        have = {int(i) for i, row in zip(self.slice_indices, np.asarray(scores, np.float32)) if np.isfinite(row).any()}
        return [s for s in observed if int(s) in have]

    def flagged(self, settings) -> pd.DataFrame:
        """The boxes of the crops above the decision threshold (``decisions.DecisionSettings``)."""
        return self.boxes(settings.threshold, settings.map_threshold, settings.min_region_area, settings.evidence,
                          settings.box_score, settings.region_join)

    def ranked(self, settings) -> pd.DataFrame:
        """Every box drawn before the threshold, each scored with its crop's score (for box AP):
        the regions of every crop at the configured map level."""
        level = settings.threshold if settings.map_threshold is None else settings.map_threshold
        return self.boxes(-np.inf, level, settings.min_region_area, settings.evidence, settings.box_score,
                          settings.region_join)

    def crop_table(self, model: str, settings, crop_meta: dict | None = None) -> pd.DataFrame:
        """Every crop's threshold-free score on the evidence ``settings`` use."""
        return self.crop_scores(model, settings.evidence)

    def display_maps(self, settings) -> np.ndarray:
        """The maps the decisions used, as float32 (for the report's gallery)."""
        return self.arrays(settings.evidence)[1].astype(np.float32)

    def arrays(self, evidence: str = "slice") -> tuple[np.ndarray | None, np.ndarray | None]:
        """The (scores, maps) of one evidence, ``slice`` (raw) or ``volume``."""
        return (self.scores, self.maps) if evidence == "slice" else (self.volume_scores, self.volume_maps)

    def has(self, evidence: str) -> bool:
        """Whether any crop has this evidence (a short scan has no volume evidence)."""
        scores = self.arrays(evidence)[0]
        return scores is not None and bool(np.isfinite(scores).any())

    def boxes(self, threshold: float, map_threshold: float | None = None, min_region_area: int = 4,
              evidence: str = "slice", box_score: str = "crop", join: int = 0) -> pd.DataFrame:
        """A box per region of every crop scoring above ``threshold``, in slice pixels.

        A box carries its crop's score (``box_score="crop"``): the number compared with the
        threshold, as anomaly maps are blurred and lower. A probability map's own value ranks
        its regions (``"peak"``): two regions of one crop are not equally likely cracks.
        A crop without the evidence (NaN) is never flagged.
        """
        scores, maps = self.arrays(evidence)
        rows = []
        for s, index in enumerate(self.slice_indices):
            for r, name in enumerate(self.roi_names):
                crop_score = float(scores[s, r])
                if not np.isfinite(crop_score):
                    continue
                x0, y0 = crop_origin(self.roi_boxes[r], context=0)  # maps cover the ROI alone
                for reg in regions_from_map(np.asarray(maps[s, r], np.float32), crop_score, threshold,
                                            map_threshold, min_region_area, join):
                    reg = reg.shifted(x0, y0)
                    rows.append({"slice_index": int(index), "roi": str(name), "x1": float(reg.x1),
                                 "y1": float(reg.y1), "x2": float(reg.x2), "y2": float(reg.y2),
                                 "score": float(reg.peak) if box_score == "peak" else crop_score,
                                 "crop_score": crop_score})
        return pd.DataFrame(rows, columns=BOX_COLUMNS)

    def crop_scores(self, model: str, evidence: str = "slice") -> pd.DataFrame:
        """Every crop's score on one evidence (NaN where the crop has none)."""
        scores = self.arrays(evidence)[0]
        s, r = scores.shape
        return pd.DataFrame({"model": model, "scan_id": self.scan_id,
                             "slice_index": np.repeat(self.slice_indices.astype(int), r),
                             "roi": np.tile(self.roi_names.astype(str), s),
                             "score": scores.reshape(-1).astype(float)}, columns=CROP_SCORE_COLUMNS)


@dataclass
class BoxTable:
    """One scan's scored boxes: every box at or above the model's score floor, in slice pixels."""

    COLUMNS = ["scan_id", "slice_index", "roi", "x1", "y1", "x2", "y2", "confidence", "class_id", "model_id"]
    SUFFIX = ".csv"

    table: pd.DataFrame

    def save(self, path: str | Path) -> None:
        write_table(path, self.table[self.COLUMNS])

    @classmethod
    def read(cls, path: str | Path, evidence: str | None = None) -> "BoxTable":
        """Read and check a predictions table.

        Raises:
            EvidenceError: a column missing.
        """
        table = read_table(path)
        missing = [c for c in cls.COLUMNS if c not in table.columns]
        if missing:
            raise EvidenceError(f"{path}: not a predictions table (missing {', '.join(missing)})")
        return cls(table)

    def judged(self, settings) -> bool:
        return True

    def judged_slices(self, settings, observed) -> list[int]:
        return list(observed)

    def flagged(self, settings) -> pd.DataFrame:
        return self.boxes(settings.threshold, settings.nms_iou)

    def ranked(self, settings) -> pd.DataFrame:
        """Every box above the score floor after NMS (for box AP)."""
        return self.boxes(-np.inf, settings.nms_iou)

    def crop_table(self, model: str, settings, crop_meta: dict) -> pd.DataFrame:
        return self.crop_scores(model, crop_meta["scan_id"], crop_meta["slice_indices"], crop_meta["roi_names"])

    def boxes(self, threshold: float, nms_iou: float = 0.5) -> pd.DataFrame:
        """Boxes above ``threshold`` (strict, as the original) after class-agnostic NMS per slice and ROI."""
        predictions = self.table
        above = predictions[predictions["confidence"] > threshold]
        kept = []
        for _, group in above.groupby(["slice_index", "roi"], sort=True):
            keep = nms(group[["x1", "y1", "x2", "y2"]].to_numpy(), group["confidence"].to_numpy(), nms_iou)
            kept.append(group.iloc[np.sort(keep)])
        out = pd.concat(kept) if kept else above.iloc[:0]
        out = out.rename(columns={"confidence": "score"})
        out["crop_score"] = out.groupby(["slice_index", "roi"])["score"].transform("max")
        return out[BOX_COLUMNS].reset_index(drop=True)

    def crop_scores(self, model: str, scan_id: str, slice_indices, roi_names) -> pd.DataFrame:
        """Every crop's top box confidence; 0 for a crop without a box above the score floor."""
        predictions = self.table
        grid = pd.MultiIndex.from_product([[int(i) for i in slice_indices], [str(n) for n in roi_names]],
                                          names=["slice_index", "roi"])
        best = (predictions.groupby(["slice_index", "roi"])["confidence"].max() if len(predictions)
                else pd.Series(dtype=float))
        score = best.reindex(grid, fill_value=0.0).astype(float)
        out = score.rename("score").reset_index()
        out.insert(0, "scan_id", scan_id)
        out.insert(0, "model", model)
        return out[CROP_SCORE_COLUMNS]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best first."""
    import torch
    from torchvision.ops import nms as tv_nms

    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    as_tensor = lambda a: torch.tensor(np.asarray(a, np.float32))  # noqa: E731 - copies read-only pandas views
    return tv_nms(as_tensor(boxes), as_tensor(scores), iou).numpy()


KINDS = {"maps": ScoreMaps, "boxes": BoxTable}


def kind(evidence: str):
    """The evidence class of a kind (``maps`` or ``boxes``)."""
    return KINDS[evidence]


__all__ = ["BOX_COLUMNS", "BoxTable", "CROP_SCORE_COLUMNS", "EvidenceError", "KINDS", "ScoreMaps", "kind", "nms"]
