"""The crack segmenter: training on cracks rendered into normal cells, its held-out threshold,
scoring, and its files (``weights.pt`` read with ``torch.load(weights_only=True)``, and
``model.json``: the settings, cells and threshold that made it).

Training draws each patch afresh: a training cell, an ROI, a slice and a 64x64
window; with ``positive_fraction`` a crack from ``segmenter.cracks`` is rendered
through consecutive slices around it (``anodect.synthesis``), so the slice, its
neighbours and its residual all see the crack as a real one would look; the label is
the crack's core in that slice. Binary cross-entropy (a Dice term optional). The cells
split by cell: the held-out ones are never trained on and give the threshold at
``false_alarm_rate`` of their crops.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..decisions import false_alarm_threshold
from ..io import file_sha256, package_versions, read_model_folder, write_bytes, write_json
from ..registry import METADATA
from ..synthesis import CrackRanges, render, sample
from .inputs import CHANNELS, InputSettings, channels, distant, reference, residuals, scan_inputs, scan_sigma
from .network import UNet, n_weights

log = logging.getLogger(__name__)

WEIGHTS = "weights.pt"
FORMAT = "anodect-segmenter/2"  # 2: leaky activations (a /1 model would score differently)


@dataclass(frozen=True)
class SegmenterSettings:
    """The ``segmenter`` section's training and scoring settings (defaults: the schema's)."""

    channels: tuple[int, int, int] = (24, 48, 96)
    steps: int = 1500
    batch_size: int = 16
    patch: int = 64
    lr: float = 0.005
    positive_fraction: float = 0.75
    annotated_fraction: float = 0.25
    cracks_per_patch: int = 2
    dice_weight: float = 0.0
    heldout_fraction: float = 0.25
    false_alarm_rate: float = 0.01
    min_threshold: float = 0.5
    seed: int = 0
    device: str = "auto"
    score_batch_size: int = 4
    precision: str = "float32"
    inputs: InputSettings = InputSettings()
    cracks: CrackRanges = CrackRanges()

    @classmethod
    def from_config(cls, section: dict) -> "SegmenterSettings":
        """From the config's ``segmenter`` section (or a ``model.json``'s ``settings``)."""
        kwargs = {k: v for k, v in section.items() if k in cls.__dataclass_fields__}
        if "channels" in kwargs:
            kwargs["channels"] = tuple(kwargs["channels"])
        if isinstance(kwargs.get("inputs"), dict):
            kwargs["inputs"] = InputSettings.from_config(kwargs["inputs"])
        if "distant" in section or "match" in section:
            kwargs["inputs"] = InputSettings.from_config(section)
        if isinstance(kwargs.get("cracks"), dict):
            kwargs["cracks"] = CrackRanges.from_config(kwargs["cracks"])
        return cls(**kwargs)

    def as_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


@dataclass
class TrainingCell:
    """One normal scan's crops, slice numbers and per-ROI residual noise."""

    scan_id: str
    crops: np.ndarray  # uint8 [S, R, H, W]
    indices: np.ndarray
    sigma: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, scan_id: str, crops: np.ndarray, indices: np.ndarray, settings: InputSettings) -> "TrainingCell":
        sig = []
        for r in range(crops.shape[1]):
            res, _ = residuals(crops[:, r], indices, settings)
            sig.append(scan_sigma(res[np.any(res != 0, axis=(1, 2))]))
        return cls(scan_id, crops, np.asarray(indices), sig)


@dataclass
class AnnotatedCrack:
    """A crack a user drew on a real scan: its cell, slice position, ROI and mask (crop pixels)."""

    cell: TrainingCell
    position: int
    roi: int
    mask: np.ndarray  # bool [H, W]
    source: str


def split_cells(scan_ids: list[str], fraction: float) -> tuple[list[str], list[str]]:
    """(training, held-out) scan ids: every ``1/fraction``-th cell in sorted order is held out,
    at least one when there are two or more cells, never all."""
    ids = sorted(scan_ids)
    if len(ids) < 2 or fraction <= 0:
        return ids, []
    n_held = min(len(ids) - 1, max(1, round(fraction * len(ids))))
    step = len(ids) / n_held
    held = {ids[int(k * step + step / 2)] for k in range(n_held)}
    return [i for i in ids if i not in held], [i for i in ids if i in held]


CORE = 0.3  # share of a crack's depth that makes a pixel part of its label


class PatchSampler:
    """Training patches with cracks rendered on the fly: (inputs [N, 4, P, P], labels [N, 1, P, P])."""

    MARGIN = 12  # px around a patch the renderer's blur and the capsule may reach

    def __init__(self, cells: list[TrainingCell], settings: SegmenterSettings, rng: np.random.Generator,
                 annotated: list[AnnotatedCrack] | None = None):
        self.cells, self.settings, self.rng = cells, settings, rng
        self.annotated = annotated or []
        self.cracks_rendered = 0
        self.annotated_patches = 0

    def one(self) -> tuple[np.ndarray, np.ndarray]:
        rng, st = self.rng, self.settings
        if self.annotated and rng.random() < st.annotated_fraction:
            return self.real()
        cell = self.cells[int(rng.integers(len(self.cells)))]
        s, n_rois, h, w = cell.crops.shape
        r, p = int(rng.integers(n_rois)), int(rng.integers(s))
        ph, pw = min(st.patch, h), min(st.patch, w)
        y0, x0 = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        wy0, wx0 = max(0, y0 - self.MARGIN), max(0, x0 - self.MARGIN)
        wy1, wx1 = min(h, y0 + ph + self.MARGIN), min(w, x0 + pw + self.MARGIN)
        stack = cell.crops[:, r, wy0:wy1, wx0:wx1].astype(np.float32)
        label = np.zeros((ph, pw), np.float32)
        if rng.random() < st.positive_fraction:
            for _ in range(int(rng.integers(1, st.cracks_per_patch + 1))):
                centre = (float(x0 - wx0 + rng.uniform(4, pw - 4)), float(y0 - wy0 + rng.uniform(4, ph - 4)))
                crack = sample(rng, stack.shape[1:], s, st.cracks, centre=centre, image=stack[p])
                if rng.random() < 0.85:  # mostly through this slice; else in its neighbours only (label empty)
                    first = int(np.clip(p - rng.integers(crack.n_slices), 0, s - crack.n_slices))
                    crack = type(crack)(**{**crack.as_dict(), "first": first})
                depth = crack.depth
                previous = stack[p].copy()
                stack, _ = render(stack, crack)
                # The label is each crack's core, where it took at least CORE of its depth: its blurred
                # halo (and a crack laid where no bright layer is to break) carries no signal to learn.
                label = np.maximum(label, ((previous - stack[p]) >= max(1.0, CORE * depth))[
                    y0 - wy0:y0 - wy0 + ph, x0 - wx0:x0 - wx0 + pw].astype(np.float32))
                self.cracks_rendered += 1
        return self._augment(self._patch(cell, r, p, stack, (wy0, wx0), (y0, x0, ph, pw)), label)

    def real(self) -> tuple[np.ndarray, np.ndarray]:
        """A patch around a crack a user annotated, its drawn polygon as the label."""
        rng, st = self.rng, self.settings
        crack = self.annotated[int(rng.integers(len(self.annotated)))]
        self.annotated_patches += 1
        cell, r, p = crack.cell, crack.roi, crack.position
        h, w = crack.mask.shape
        ph, pw = min(st.patch, h), min(st.patch, w)
        ys, xs = np.nonzero(crack.mask)
        cy, cx = int(rng.choice(ys)), int(rng.choice(xs))
        y0 = int(np.clip(cy - rng.integers(4, max(5, ph - 4)), 0, h - ph))
        x0 = int(np.clip(cx - rng.integers(4, max(5, pw - 4)), 0, w - pw))
        label = crack.mask[y0:y0 + ph, x0:x0 + pw].astype(np.float32)
        stack = cell.crops[:, r].astype(np.float32)
        return self._augment(self._patch(cell, r, p, stack, (0, 0), (y0, x0, ph, pw)), label)

    def _patch(self, cell: TrainingCell, r: int, p: int, stack: np.ndarray, origin, window):
        """The network's input for slice position ``p`` of ``stack`` (a window of the cell at ``origin``)."""
        (wy0, wx0), (y0, x0, ph, pw) = origin, window
        far = distant(cell.indices, p, self.settings.inputs)
        res = np.zeros_like(stack)
        if len(far) and self.rng.random() > 0.05:  # a few without a residual, as a short scan has none
            res[p] = stack[p] - reference(stack[p], stack[far], self.settings.inputs)
        return channels(stack, cell.indices, [p], res, cell.sigma[r])[0][:, y0 - wy0:y0 - wy0 + ph,
                                                                          x0 - wx0:x0 - wx0 + pw]

    def _augment(self, x: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        k = int(rng.integers(4))
        x, label = np.rot90(x, k, axes=(1, 2)), np.rot90(label, k)
        if rng.random() < 0.5:
            x, label = x[:, :, ::-1], label[:, ::-1]
        return np.ascontiguousarray(x), np.ascontiguousarray(label)[None]

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.one() for _ in range(n)]
        if len({x.shape for x, _ in pairs}) > 1:  # crops smaller than a patch: one size per batch
            pairs = [pairs[0]] * n
        return (torch.from_numpy(np.stack([x for x, _ in pairs])), torch.from_numpy(np.stack([y for _, y in pairs])))


def crack_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 0.0) -> torch.Tensor:
    """Binary cross-entropy plus ``dice_weight`` times the batch's soft Dice loss.

    A crack covers 1-3 % of a patch's pixels; the Dice term weighs them as a whole from the
    first step, and also drives the probabilities to 0 and 1, so that held-out normal crops
    reach 0.9999 and the automatic threshold with them. Cross-entropy alone keeps them
    graded (the default; ``benchmarks/segmenter.py``).
    """
    bce = F.binary_cross_entropy_with_logits(logits, target)
    if not dice_weight:
        return bce
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    return bce + dice_weight * dice


class Segmenter:
    """A trained segmenter: its network, settings and metadata."""

    def __init__(self, settings: SegmenterSettings, device: torch.device | str = "cpu", net: UNet | None = None,
                 metadata: dict | None = None):
        self.settings = settings
        self.device = torch.device(device)
        if net is None:
            torch.manual_seed(settings.seed)  # the initial weights follow the seed too
            net = UNet(CHANNELS, settings.channels)
        # Channels-last: oneDNN's preferred convolution layout on a CPU (bfloat16 scoring needs it to
        # be fast); the weights saved are the same tensors.
        self.net = net.to(self.device, memory_format=torch.channels_last)
        self.metadata = metadata or {}

    # ---- training -------------------------------------------------------------------
    def fit(self, cells: list[TrainingCell], heldout: list[TrainingCell], context: int, training_scans: list[dict],
            progress_every: int = 100, annotated: list[AnnotatedCrack] | None = None,
            annotations: dict | None = None) -> "Segmenter":
        """Train on ``cells`` with rendered cracks (and ``annotated`` real ones); set the threshold from ``heldout``."""
        st = self.settings
        if not cells:
            raise ValueError("the crack segmenter needs at least one normal training scan (training.normal_dir)")
        torch.manual_seed(st.seed)
        rng = np.random.default_rng(st.seed)
        sampler = PatchSampler(cells, st, rng, annotated)
        opt = torch.optim.AdamW(self.net.parameters(), lr=st.lr, weight_decay=1e-4)
        # One-cycle schedule; a run of a few steps (a smoke test) keeps the rate constant.
        sched = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=st.lr, total_steps=st.steps, pct_start=0.1)
                 if st.steps >= 20 else None)
        self.net.train()
        t0 = time.perf_counter()
        losses = []
        for step in range(1, st.steps + 1):
            x, y = sampler.batch(st.batch_size)
            loss = crack_loss(self.net(x.to(self.device, memory_format=torch.channels_last)), y.to(self.device),
                              st.dice_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            losses.append(loss.item())
            if step % progress_every == 0 or step == st.steps:
                elapsed = time.perf_counter() - t0
                log.info("step %d/%d: loss %.4f (mean of the last %d), %.2f s/step, %.0f s left", step, st.steps,
                         float(np.mean(losses[-progress_every:])), min(progress_every, step), elapsed / step,
                         elapsed / step * (st.steps - step))
        train_s = time.perf_counter() - t0
        self.net.eval()
        t1 = time.perf_counter()
        threshold = self.heldout_threshold(heldout, context)
        self.metadata = {
            "format": FORMAT, "settings": st.as_dict(), "context": int(context),
            "crop_size": [int(v) for v in cells[0].crops.shape[-2:]], "n_weights": n_weights(self.net),
            "training_scans": [r for r in training_scans if r["scan_id"] in {c.scan_id for c in cells}],
            "heldout_scans": [r for r in training_scans if r["scan_id"] in {c.scan_id for c in heldout}],
            "steps": st.steps, "patches": st.steps * st.batch_size, "cracks_rendered": sampler.cracks_rendered,
            "annotated": {**(annotations or {}), "cracks": len(annotated or []),
                          "patches": sampler.annotated_patches},
            "loss": {"first_100": float(np.mean(losses[:100])), "last_100": float(np.mean(losses[-100:]))},
            "auto_threshold": threshold, "device": str(self.device),
            "timings_s": {"train": round(train_s, 1), "heldout": round(time.perf_counter() - t1, 1)},
            "versions": package_versions("anodect", "torch", "numpy"),
        }
        log.info("trained in %.0f s (%d patches, %d cracks rendered); automatic threshold %s", train_s,
                 st.steps * st.batch_size, sampler.cracks_rendered, threshold.get("slice"))
        return self

    def heldout_threshold(self, heldout: list[TrainingCell], context: int) -> dict:
        """The threshold at ``false_alarm_rate`` of the held-out cells' crops, floored at ``min_threshold``."""
        st = self.settings
        out = {"method": "held-out normal cells (never trained on), every crop scored as in the pipeline",
               "false_alarm_rate": st.false_alarm_rate, "unit": "crop (one slice x one ROI)",
               "n_cells": len(heldout), "floor": st.min_threshold}
        if not heldout:
            return {**out, "slice": None, "note": "needs at least two normal training cells (one held out); "
                                                  "give segmenter_threshold a number"}
        scores = np.concatenate([self.score(c.crops, c.indices, context)[0].ravel() for c in heldout])
        at_rate = false_alarm_threshold(scores, st.false_alarm_rate)
        q = np.quantile(scores, [0.5, 0.9, 0.99, 1.0])
        return {**out, "n_crops": int(len(scores)), "at_rate": at_rate, "slice": max(at_rate, st.min_threshold),
                "heldout_score_stats": {"slice": {"p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]),
                                                  "max": float(q[3])}}}

    # ---- scoring --------------------------------------------------------------------
    @torch.inference_mode()
    def score(self, crops: np.ndarray, indices: np.ndarray, context: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
        """Crack probability maps of a scan's crops [S, R, H, W] uint8.

        Returns:
            Crop scores [S, R] (the map's maximum), maps [S, R, h, w] over the ROI, and
            facts for the log (residual noise, slices without a distant slice, seconds).
        """
        t0 = time.perf_counter()
        s, r, h, w = crops.shape
        inputs, facts = scan_inputs(crops, indices, self.settings.inputs)
        flat = inputs.reshape(s * r, CHANNELS, h, w)
        maps = np.zeros((s * r, h - 2 * context, w - 2 * context), np.float32)
        self.net.eval()
        bs = self.settings.score_batch_size
        bf16 = self.settings.precision == "bfloat16"
        for k in range(0, len(flat), bs):
            x = torch.from_numpy(flat[k:k + bs]).to(self.device, memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = self.net(x).float()
            prob = torch.sigmoid(logits[:, 0, context:h - context, context:w - context])
            maps[k:k + bs] = prob.float().cpu().numpy()
        maps = maps.reshape(s, r, *maps.shape[1:])
        scores = maps.max(axis=(2, 3)) if maps.size else np.zeros((s, r), np.float32)
        facts["seconds"] = time.perf_counter() - t0
        return scores.astype(np.float32), maps, facts

    def check_compatible(self, crop_size: tuple[int, int], context: int) -> None:
        """Crops of another context than the model's stop here (any crop size scores)."""
        if self.metadata.get("context") is not None and int(self.metadata["context"]) != int(context):
            raise ValueError(f"crops are cut with context {context}, the segmenter was trained with "
                             f"{self.metadata['context']} (crop_context): recrop or retrain")

    # ---- files ----------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """``weights.pt`` (a plain state dict) and ``model.json``, each written atomically."""
        folder = Path(folder)
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in self.net.state_dict().items()}, buf)
        data = buf.getvalue()
        write_bytes(folder / WEIGHTS, data)
        sha = hashlib.sha256(data).hexdigest()
        self.metadata.update(weights_sha256=sha, model_id=f"segmenter-{sha[:12]}")
        write_json(folder / METADATA, self.metadata)

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | str = "cpu", settings: dict | None = None) -> "Segmenter":
        """A saved segmenter; the weights through ``torch.load(weights_only=True)`` (no code runs).

        Raises:
            ValueError: a missing or altered file, naming it.
        """
        folder = Path(folder)
        meta_path, weights = folder / METADATA, folder / WEIGHTS
        meta = read_model_folder(folder, (WEIGHTS,), METADATA, FORMAT, "crack segmenter")
        if meta.get("weights_sha256") and file_sha256(weights) != meta["weights_sha256"]:
            raise ValueError(f"{weights}: sha256 differs from {meta_path} (altered or truncated)")
        # Scoring options (device, batch size) may change; what shaped the weights may not.
        scoring = {k: v for k, v in (settings or {}).items() if k in ("device", "score_batch_size", "precision")}
        saved = dict(meta["settings"])
        # A model saved before the residual's local match existed was made without it.
        saved["inputs"] = {"match": 0, **(saved.get("inputs") or {})}
        made = SegmenterSettings.from_config({**saved, **scoring})
        model = cls(made, device, metadata=meta)
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            model.net.load_state_dict(state)
        except Exception as exc:  # noqa: BLE001 - any failure is a bad file, named
            raise ValueError(f"{weights}: not the segmenter's weights ({exc})") from exc
        model.net.to(model.device).eval()
        return model


__all__ = ["AnnotatedCrack", "FORMAT", "PatchSampler", "Segmenter", "SegmenterSettings", "TrainingCell", "WEIGHTS", "split_cells"]
