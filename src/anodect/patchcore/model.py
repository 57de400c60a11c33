"""PatchCore: a memory bank of normal patch features, and distances to it.

Training embeds every ROI crop of the normal scans, keeps a coreset of the patch
features and saves it as ``memory_bank.npy`` beside ``model.json`` (backbone,
weights id, layers, dimensions, input size, normalisation, coreset settings,
training scans, score statistics). Nothing in a saved model is pickled.

Scoring embeds a whole scan's crops in batches, finds each patch's nearest bank
vector and returns, per crop, the image score (the largest patch score) and an
anomaly map at the crop's own resolution (bilinear upsampling, Gaussian σ=4).
Scans are also judged against their own volume (``anodect.patchcore.volume``):
the score file keeps the raw maps and adds the volume maps beside them.

Thresholds set themselves: after building the bank, every training cell is scored
against the bank less the vectors that came from that cell (the coreset is chosen
once over all cells), and the threshold of each kind of evidence is put where at
most ``false_alarm_rate`` of those held-out crops (slice x ROI) score above it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F

from ..io import file_sha256, package_versions, read_model_folder, save_arrays, write_json
from .plugin import BANK_FILE, METADATA
from .backbones import IMAGENET_MEAN, IMAGENET_STD, Geometry, build_backbone, feature_geometry
from .coreset import coreset
from .search import NearestNeighbourIndex, SearchSettings
from .volume import VolumeSettings, false_alarm_threshold, slab_crops, volume_maps, volume_scores

log = logging.getLogger(__name__)

FORMAT = "anodect-patchcore/1"
MAP_SIGMA = 4.0


@dataclass
class PatchCoreSettings:
    """The ``patchcore`` config keys that shape a model."""

    backbone: str = "efficientnet_lite0"
    layers: tuple[str, ...] | None = None
    weights_path: str | None = None
    download_weights: bool = False
    feature_dim: int | None = None
    input_size: tuple[int, int] | None = None
    coreset_fraction: float = 0.1
    projection_dim: int = 128
    coreset_block_picks: int = 2048  # 0: the exact greedy selection at every size (models saved before #27)
    search: SearchSettings = field(default_factory=SearchSettings)
    count_include_pad: bool = True
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"
    volume: VolumeSettings = field(default_factory=VolumeSettings)
    false_alarm_rate: float = 0.01
    heldout_max_crops: int = 2000  # 0: every training crop is scored held out

    @classmethod
    def from_config(cls, section: dict) -> "PatchCoreSettings":
        kwargs = {k: section[k] for k in cls.__dataclass_fields__ if k in section}
        for key in ("input_size", "layers"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(kwargs[key])
        if "volume" in kwargs:
            kwargs["volume"] = VolumeSettings.from_config(kwargs["volume"])
        if "search" in kwargs:
            kwargs["search"] = SearchSettings.from_config(kwargs["search"])
        return cls(**kwargs)


@dataclass
class ScoreResult:
    """PatchCore's output for a set of crops."""

    scores: np.ndarray  # float32 [N]: largest patch score per crop
    maps: np.ndarray  # float32 [N, H, W]: anomaly map at crop resolution
    timings: dict = field(default_factory=dict)


@dataclass
class ScanScores:
    """PatchCore's output for one scan: raw and volume evidence, [slice, roi, ...]."""

    scores: np.ndarray  # float32 [S, R]: largest patch score
    maps: np.ndarray  # float32 [S, R, h, w]: raw anomaly maps
    volume_scores: np.ndarray  # float32 [S, R]: largest volume z-score (NaN: no volume evidence)
    volume_maps: np.ndarray  # float32 [S, R, h, w]
    timings: dict = field(default_factory=dict)


class PatchCore:
    """A PatchCore model: backbone, feature layout and memory bank.

    Args:
        settings: backbone and feature settings.
        device: torch device for the backbone and the search.
    """

    def __init__(self, settings: PatchCoreSettings, device: torch.device | str = "cpu"):
        self.settings = settings
        self.device = torch.device(device)
        self.backbone, self.backbone_info = build_backbone(
            settings.backbone, settings.weights_path, settings.download_weights, settings.layers)
        self.backbone = self.backbone.to(self.device).to(memory_format=torch.channels_last)
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        self.bank: np.ndarray | None = None
        self.index: NearestNeighbourIndex | None = None
        self.bank_groups: np.ndarray | None = None
        self._fit_features: np.ndarray | None = None
        self.metadata: dict = {}
        self._geometry: dict[tuple[int, int], tuple[list[Geometry], Geometry]] = {}

    # ---- features -------------------------------------------------------------------
    @property
    def feature_dim(self) -> int:
        return self.settings.feature_dim or sum(self.backbone_info.channels)

    def geometry(self, size: tuple[int, int]) -> tuple[list[Geometry], Geometry]:
        """Feature geometry for crops of ``size`` (H, W): every layer on the backbone's
        input, and the patch grid (the first layer's) in crop pixels."""
        key = (int(size[0]), int(size[1]))
        if key not in self._geometry:
            net_size = tuple(self.settings.input_size) if self.settings.input_size else key
            layers = feature_geometry(self.backbone, net_size)
            patch = layers[0].scaled((key[0] / net_size[0], key[1] / net_size[1]))
            self._geometry[key] = (layers, patch)
        return self._geometry[key]

    def _preprocess(self, crops: np.ndarray) -> torch.Tensor:
        # A copy: crops loaded from files are read-only, which torch does not accept.
        x = torch.from_numpy(np.array(crops, dtype=np.uint8, copy=True)).to(self.device)
        x = x.float().div_(255.0).unsqueeze(1)
        if self.settings.input_size is not None:
            x = F.interpolate(x, size=tuple(self.settings.input_size), mode="bilinear",
                              align_corners=False, antialias=True)
        x = (x.expand(-1, 3, -1, -1) - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)

    def _embed_batch(self, crops: np.ndarray) -> torch.Tensor:
        """[B, H, W] uint8 → [B, gh, gw, D] patch features on the first layer's grid."""
        feats = self.backbone(self._preprocess(crops))
        layers, _ = self.geometry(crops.shape[1:])
        grid = feats[0].shape[-2:]
        out = []
        for k, f in enumerate(feats):
            # Locally aware patches: each position sees its 3x3 neighbourhood.
            # count_include_pad: whether the zero padding at the map's edge counts in the
            # average (PatchCore's reference code: yes); config/README says which and why.
            f = F.avg_pool2d(f, 3, stride=1, padding=1, count_include_pad=self.settings.count_include_pad)
            if k:
                f = _resample(f, layers[k], layers[0], grid)
            out.append(f)
        x = torch.cat(out, 1).permute(0, 2, 3, 1)  # B, gh, gw, C
        if self.settings.feature_dim and self.settings.feature_dim < x.shape[-1]:
            b, gh, gw, c = x.shape
            x = F.adaptive_avg_pool1d(x.reshape(-1, 1, c), self.settings.feature_dim).reshape(b, gh, gw, -1)
        return x.float()

    @torch.inference_mode()
    def embed(self, crops: np.ndarray) -> np.ndarray:
        """Patch features of crops [N, H, W] uint8 → [N, gh, gw, D] float32."""
        parts = []
        for start in range(0, len(crops), self.settings.batch_size):
            parts.append(self._embed_batch(crops[start:start + self.settings.batch_size]).cpu().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, 0, 0, self.feature_dim), np.float32)

    # ---- training -------------------------------------------------------------------
    def fit(self, crops: np.ndarray, context: int = 0, training_scans: list[dict] | None = None,
            groups: np.ndarray | None = None, keep_features: bool = False) -> "PatchCore":
        """Build the memory bank from normal crops [N, H, W] uint8 with ``context`` pixels around the ROI.

        Args:
            groups: the training cell (scan) of every crop; the bank remembers where
                each vector came from, for held-out scoring (``heldout_thresholds``).
            keep_features: keep the crops' features until ``fit_scans`` has scored them held out.
        """
        t0 = time.perf_counter()
        features = self.embed(crops)
        # Kept for fit_scans' held-out scoring, which would otherwise embed every crop again.
        self._fit_features = features if keep_features else None
        n, gh, gw, d = features.shape
        _, geo = self.geometry(crops.shape[1:])
        rows, cols = inner_patches(geo, (gh, gw), crops.shape[1:], context)
        flat = features[:, rows, cols].reshape(-1, d)
        t1 = time.perf_counter()
        keep = np.sort(coreset(flat, self.settings.coreset_fraction, self.settings.projection_dim,
                               seed=self.settings.seed, device=self.device, block_picks=self.settings.coreset_block_picks))
        self.bank = np.ascontiguousarray(flat[keep])
        per_crop = flat.shape[0] // max(n, 1)
        self.bank_groups = None if groups is None else np.asarray(groups)[keep // max(per_crop, 1)]
        t2 = time.perf_counter()
        search = replace(self.settings.search, seed=self.settings.seed)
        self.index = NearestNeighbourIndex(self.bank, self.device, search)
        # Recall of the approximate search, on training patches outside the bank (seeded sample).
        others = np.setdiff1d(np.random.default_rng(self.settings.seed).choice(len(flat), min(len(flat), 4096),
                                                                               replace=False), keep)
        recall = self.index.recall_at_1(flat[others])
        t3 = time.perf_counter()
        self.metadata = {
            "format": FORMAT,
            "backbone": self.backbone_info.name,
            "weights_id": self.backbone_info.weights_id,
            "weights_source": self.backbone_info.weights_source,
            "layers": list(self.backbone_info.layers),
            "layer_channels": list(self.backbone_info.channels),
            "layer_strides": list(self.backbone_info.strides),
            "feature_dim": int(d),
            "patch_grid": [int(gh), int(gw)],
            # Receptive-field centre of patch (i, j): crop pixel (offset + step * (i, j)).
            "patch_geometry": {"offset": list(geo.offset), "step": list(geo.step)},
            "crop_size": [int(crops.shape[1]), int(crops.shape[2])],
            "context": int(context),
            "input_size": list(self.settings.input_size) if self.settings.input_size else None,
            "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "scale": "1/255"},
            "neighbourhood": 3,
            "count_include_pad": bool(self.settings.count_include_pad),
            "score": "squared L2 distance to the nearest memory-bank vector (k=1); image score = max patch score",
            "map_sigma": MAP_SIGMA,
            "coreset_fraction": self.settings.coreset_fraction,
            "projection_dim": self.settings.projection_dim,
            "coreset_block_picks": int(self.settings.coreset_block_picks),
            "coreset": _coreset_kind(len(flat), self.settings.coreset_fraction, self.settings.coreset_block_picks),
            "search": {**search.as_dict(), "backend": self.index.backend, "recall_at_1": round(recall, 4)},
            "seed": self.settings.seed,
            "n_train_crops": int(n),
            "n_train_patches": int(len(flat)),
            "bank_size": int(len(self.bank)),
            "training_scans": training_scans or [],
            "timings_s": {"embed": round(t1 - t0, 3), "coreset": round(t2 - t1, 3), "index": round(t3 - t2, 3)},
            "versions": _versions(),
        }
        return self

    def fit_scans(self, scans: list[tuple[np.ndarray, np.ndarray]], context: int = 0,
                  training_scans: list[dict] | None = None) -> "PatchCore":
        """Build the bank from whole normal scans and set the automatic thresholds.

        Args:
            scans: per training cell, its crops [S, R, H, W] uint8 and slice indices [S].
            context: pixels of context around the ROI in the crops.
            training_scans: sample-sheet records of the scans, for the metadata.
        """
        vol = self.settings.volume
        slabbed = [slab_crops(c, idx, vol.slab, vol.edges) for c, idx in scans]
        flat = np.concatenate([c.reshape(-1, *c.shape[2:]) for c in slabbed])
        groups = np.concatenate([np.full(c.shape[0] * c.shape[1], g) for g, c in enumerate(slabbed)])
        try:
            self.fit(flat, context, training_scans, groups, keep_features=True)
            t0 = time.perf_counter()
            self.metadata["volume"] = vol.as_dict()
            self.metadata["auto_threshold"] = self.heldout_thresholds(slabbed, [idx for _, idx in scans], context)
            self.metadata["timings_s"]["heldout"] = round(time.perf_counter() - t0, 3)
        finally:
            self._fit_features = None
        return self

    def heldout_thresholds(self, slabbed: list[np.ndarray], indices: list[np.ndarray], context: int) -> dict:
        """Score every training cell against the bank less its own vectors; thresholds from those scores."""
        rate = self.settings.false_alarm_rate
        out = {"method": "leave-one-cell-out: each training cell scored against the bank less its own vectors",
               "false_alarm_rate": rate, "unit": "crop (one slice x one ROI)", "n_cells": len(slabbed)}
        if len(slabbed) < 2 or self.bank_groups is None:
            return {**out, "slice": None, "volume": None,
                    "note": "needs at least two training cells; give patchcore_threshold a number"}
        raw, vol = [], []
        features = self._fit_features
        if features is not None and len(features) != sum(c.shape[0] * c.shape[1] for c in slabbed):
            features = None
        runs = heldout_runs([c.shape[0] for c in slabbed], [c.shape[1] for c in slabbed],
                            self.settings.heldout_max_crops, self.settings.volume, self.settings.seed)
        offset = 0
        for g, (crops, idx) in enumerate(zip(slabbed, indices)):
            s, r, h, w = crops.shape
            start, stop, keep = runs[g]
            cell_features = None if features is None else features[offset + start * r:offset + stop * r]
            offset += s * r
            others = self.bank_groups != g
            if not others.any() or stop <= start:
                continue
            index = self.index.without(np.flatnonzero(~others))
            part = crops[start:stop]
            result = self.score(part.reshape(-1, h, w), context, index=index, features=cell_features)
            maps = result.maps.reshape(stop - start, r, *result.maps.shape[1:])
            raw.append(result.scores.reshape(stop - start, r)[keep].ravel())
            v = volume_scores(volume_maps(maps, idx[start:stop], self.settings.volume))[keep].ravel()
            vol.append(v[np.isfinite(v)])
        n_scored = sum((stop - start) * c.shape[1] for (start, stop, _), c in zip(runs, slabbed))
        out["n_crops_scored"] = int(n_scored)
        if n_scored < sum(c.shape[0] * c.shape[1] for c in slabbed):
            out["subsample"] = (f"seeded runs of consecutive slices, or whole cells where cells are short (the set "
                                f"is above patchcore.heldout_max_crops {self.settings.heldout_max_crops}); a "
                                f"run's outer slices give context only")
        raw_all, vol_all = np.concatenate(raw), np.concatenate(vol)
        out.update({
            "n_crops": int(len(raw_all)),  # the crops whose held-out scores set the thresholds
            "slice": false_alarm_threshold(raw_all, rate),
            "volume": false_alarm_threshold(vol_all, rate) if len(vol_all) else None,
            "heldout_score_stats": {"slice": _stats(raw_all), "volume": _stats(vol_all)},
        })
        return out

    # ---- scoring --------------------------------------------------------------------
    def score_volume(self, crops: np.ndarray, slice_indices: np.ndarray, context: int = 0) -> ScanScores:
        """One scan's crops [S, R, H, W] uint8: raw and volume evidence per slice and ROI."""
        vol = VolumeSettings.from_model(self.metadata.get("volume"))
        s, r, h, w = crops.shape
        result = self.score(slab_crops(crops, slice_indices, vol.slab, vol.edges).reshape(s * r, h, w), context)
        maps = result.maps.reshape(s, r, *result.maps.shape[1:])
        t0 = time.perf_counter()
        vmaps = volume_maps(maps, slice_indices, vol)
        timings = {**result.timings, "volume": time.perf_counter() - t0}
        return ScanScores(result.scores.reshape(s, r), maps, volume_scores(vmaps), vmaps, timings)

    @torch.inference_mode()
    def score(self, crops: np.ndarray, context: int = 0, index: NearestNeighbourIndex | None = None,
              features: np.ndarray | None = None) -> ScoreResult:
        """Image scores and anomaly maps of crops [N, H, W] uint8, batch by batch.

        Only patches centred inside the ROI (the crop less ``context`` pixels per
        side) are searched and scored; maps cover the ROI, at its resolution.
        ``features``: the crops' patch features [N, gh, gw, D] when they were embedded
        already (training's held-out scoring); the crops then give only their size.
        """
        index = index or self.index
        if index is None:
            raise RuntimeError("PatchCore has no memory bank: fit() or load() first")
        n, h, w = crops.shape
        ih, iw = h - 2 * context, w - 2 * context
        scores = np.zeros(n, np.float32)
        maps = np.zeros((n, ih, iw), np.float32)
        t_embed = t_search = t_map = 0.0
        for start in range(0, n, self.settings.batch_size):
            t0 = time.perf_counter()
            if features is None:
                feats = self._embed_batch(crops[start:start + self.settings.batch_size])
            else:  # already embedded (fit_scans' held-out scoring)
                feats = torch.from_numpy(features[start:start + self.settings.batch_size])
            b, gh, gw, d = feats.shape
            _, geo = self.geometry((h, w))
            rows, cols = inner_patches(geo, (gh, gw), (h, w), context)
            inner = feats[:, rows, cols]
            t1 = time.perf_counter()
            patch = index.search(inner.reshape(-1, d).cpu().numpy()).reshape(b, *inner.shape[1:3])
            t2 = time.perf_counter()
            scores[start:start + b] = patch.reshape(b, -1).max(1)
            maps[start:start + b] = patch_scores_to_maps(patch, geo, rows, cols, (h, w), context)
            t_map += time.perf_counter() - t2
            t_embed += t1 - t0
            t_search += t2 - t1
        return ScoreResult(scores, maps, {"embed": t_embed, "search": t_search, "maps": t_map})

    # ---- persistence ----------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """Write ``memory_bank.npy`` and ``model.json`` (atomically, no pickle)."""
        folder = Path(folder)
        bank_path = folder / "memory_bank.npy"
        from ..io import atomic_path

        with atomic_path(bank_path) as tmp:
            np.save(tmp, self.bank, allow_pickle=False)
        meta = {**self.metadata, "bank_sha256": file_sha256(bank_path),
                "model_id": file_sha256(bank_path, 12)}
        self.metadata = meta
        write_json(folder / METADATA, meta)

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | str = "cpu", batch_size: int = 32,
             weights_path: str | None = None, download_weights: bool = False) -> "PatchCore":
        """Load a saved model, checking the bank against its recorded hash.

        Raises:
            ValueError: missing files, unknown format, or a bank that does not
                match its metadata.
        """
        folder = Path(folder)
        meta_path, bank_path = folder / METADATA, folder / BANK_FILE
        meta = read_model_folder(folder, (BANK_FILE,), METADATA, FORMAT, "PatchCore")
        if file_sha256(bank_path) != meta.get("bank_sha256"):
            raise ValueError(f"{bank_path}: contents do not match the hash in {meta_path.name}")
        settings = PatchCoreSettings(
            backbone=meta["backbone"], layers=tuple(meta["layers"]), weights_path=weights_path, download_weights=download_weights,
            feature_dim=meta["feature_dim"] if meta["feature_dim"] < sum(meta["layer_channels"]) else None,
            input_size=tuple(meta["input_size"]) if meta.get("input_size") else None,
            coreset_fraction=meta["coreset_fraction"], projection_dim=meta["projection_dim"],
            coreset_block_picks=int(meta.get("coreset_block_picks", 0)),
            # Models saved before issue #27 searched exactly at every bank size.
            search=SearchSettings.from_config(meta["search"]) if "search" in meta else SearchSettings(index="exact"),
            count_include_pad=bool(meta.get("count_include_pad", False)), batch_size=batch_size, seed=meta["seed"])
        model = cls(settings, device)
        if model.backbone_info.weights_id != meta["weights_id"]:
            raise ValueError(
                f"{meta_path}: model was built with backbone weights {meta['weights_id']}, "
                f"but {model.backbone_info.weights_id} are loaded here")
        model.bank = np.load(bank_path, allow_pickle=False)
        if model.bank.shape != (meta["bank_size"], meta["feature_dim"]):
            raise ValueError(f"{bank_path}: shape {model.bank.shape} does not match {meta_path.name}")
        model.index = NearestNeighbourIndex(model.bank, model.device, replace(settings.search, seed=settings.seed))
        model.metadata = meta
        return model

    def check_compatible(self, crop_size: tuple[int, int], context: int) -> None:
        """Refuse crops unlike the training crops (size, context), saying what differs."""
        trained = tuple(self.metadata.get("crop_size", ()))
        if trained and trained != tuple(crop_size):
            raise ValueError(f"crops are {crop_size[1]}x{crop_size[0]} (WxH) but the PatchCore model "
                             f"was trained on {trained[1]}x{trained[0]} crops")
        if self.metadata.get("context", 0) != context:
            raise ValueError(f"crops carry {context} px of context but the PatchCore model was "
                             f"trained with {self.metadata.get('context', 0)} px (crop_context)")


def _coreset_kind(n: int, fraction: float, block_picks: int) -> str:
    if not block_picks or n * fraction <= block_picks or fraction >= 1:
        return "exact greedy"
    return f"greedy in {math.ceil(n * fraction / block_picks)} random blocks"


def _resample(f: torch.Tensor, geo: Geometry, target: Geometry, grid) -> torch.Tensor:
    """A deeper layer's features [B, C, h, w] read at the centres of the target grid's cells.

    Bilinear between this layer's own cell centres (so a stride-16 cell is read where
    the stride-8 cell sits, not where a plain resize would put it), edge values beyond.
    """
    pos = []
    for axis, n_src in ((1, f.shape[-1]), (0, f.shape[-2])):  # grid_sample wants (x, y)
        u = (target.centres(axis, grid[axis]) - geo.offset[axis]) / geo.step[axis]
        pos.append(torch.as_tensor(2 * u / max(n_src - 1, 1) - 1, dtype=f.dtype, device=f.device))
    gy, gx = torch.meshgrid(pos[1], pos[0], indexing="ij")
    where = torch.stack([gx, gy], -1).unsqueeze(0).expand(f.shape[0], -1, -1, -1)
    return F.grid_sample(f, where, mode="bilinear", padding_mode="border", align_corners=True)


def inner_patches(geometry: Geometry, grid: tuple[int, int], size: tuple[int, int], context: int
                  ) -> tuple[slice, slice]:
    """Rows and columns of the patch grid whose receptive-field centres lie inside the ROI."""
    out = []
    for axis, (g, s) in enumerate(zip(grid, size)):
        centres = geometry.centres(axis, g)
        keep = np.flatnonzero((centres >= context - 0.5) & (centres < s - context - 0.5))
        if len(keep) == 0:
            raise ValueError(f"no patch centre inside the ROI: crop {size}, context {context}, grid {grid}")
        out.append(slice(int(keep[0]), int(keep[-1]) + 1))
    return out[0], out[1]


def _placement(n_pixels: int, centres: np.ndarray) -> np.ndarray:
    """[n_pixels, len(centres)] weights putting values at their centres, linear between, edge beyond."""
    u = np.clip((np.arange(n_pixels) - centres[0]) / max(centres[1] - centres[0], 1e-9) if len(centres) > 1
                else np.zeros(n_pixels), 0, len(centres) - 1)
    lo = np.floor(u).astype(int)
    hi = np.minimum(lo + 1, len(centres) - 1)
    m = np.zeros((n_pixels, len(centres)), np.float32)
    np.add.at(m, (np.arange(n_pixels), lo), (1 - (u - lo)).astype(np.float32))
    np.add.at(m, (np.arange(n_pixels), hi), (u - lo).astype(np.float32))
    return m


def patch_scores_to_maps(
    patch: np.ndarray, geometry: Geometry, rows: slice, cols: slice,
    size: tuple[int, int], context: int,
) -> np.ndarray:
    """Inner patch scores [B, r, c] → smoothed maps [B, h, w] over the ROI pixels.

    Each score is placed on its patch's receptive-field centre (``geometry``),
    interpolated linearly between centres and held beyond the outermost ones, over
    the whole crop; then blurred (σ=4 px) and cut to the ROI.
    """
    h, w = size
    my = _placement(h, geometry.centres(0, rows.stop)[rows])
    mx = _placement(w, geometry.centres(1, cols.stop)[cols])
    up = np.einsum("hr,brc,wc->bhw", my, patch.astype(np.float32), mx, optimize=True)
    smooth = scipy.ndimage.gaussian_filter(up, sigma=(0, MAP_SIGMA, MAP_SIGMA))
    return smooth[:, context:h - context, context:w - context].astype(np.float32)


def _stats(scores: np.ndarray) -> dict:
    q = np.quantile(scores, [0.5, 0.9, 0.99, 1.0]) if len(scores) else [0, 0, 0, 0]
    return {"mean": float(np.mean(scores)) if len(scores) else 0.0,
            "std": float(np.std(scores)) if len(scores) else 0.0,
            "p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "max": float(q[3])}


def _versions() -> dict:
    return package_versions("anodect", "torch", "torchvision", "faiss-cpu", "numpy")


__all__ = ["PatchCore", "PatchCoreSettings", "ScanScores", "ScoreResult", "inner_patches", "patch_scores_to_maps"]


def heldout_runs(n_slices: list[int], n_rois: list[int], max_crops: int, volume: VolumeSettings,
                 seed: int) -> list[tuple[int, int, slice]]:
    """Which slices of each training cell the held-out thresholds score: (start, stop, kept).

    Held-out scoring searches every training crop's patches once more, the largest
    part of training on a production-size set (issue #27: 458 of 793 s at 6,000 crops).
    Up to ``max_crops`` crops (0: no limit) every slice is scored. Above, each cell
    scores one seeded run of consecutive slices, the same share of every cell, because
    volume evidence needs a slice's neighbours: the run's outer ``slab // 2 + window // 2``
    slices on each side are scored for context only (``kept`` indexes the run's others).
    A run keeps at least ``reference_slices`` slices; where cells are that short, a seeded
    subset of the cells is scored whole instead (the others get an empty run).
    """
    total = sum(s * r for s, r in zip(n_slices, n_rois))
    if not max_crops or total <= max_crops:
        return [(0, s, slice(None)) for s in n_slices]
    margin = volume.slab // 2 + volume.window // 2
    share = max_crops / total
    rng = np.random.default_rng(seed)
    runs = []
    for s in n_slices:
        keep = min(s, max(math.ceil(s * share), volume.reference_slices))
        start = int(rng.integers(0, s - keep + 1))
        lo, hi = max(0, start - margin), min(s, start + keep + margin)
        runs.append((lo, hi, slice(start - lo, start - lo + keep)))
    # Short cells keep every slice (volume statistics need them): then a seeded subset of the cells is scored.
    kept = [len(range(lo, hi)[k]) * r for (lo, hi, k), r in zip(runs, n_rois)]
    if sum(kept) > max_crops:
        total_kept = 0
        for g in rng.permutation(len(runs)):
            if total_kept >= max_crops:
                runs[g] = (0, 0, slice(0, 0))
            total_kept += kept[g]
    return runs
