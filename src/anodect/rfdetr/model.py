"""RF-DETR models: build one of rfdetr's sizes, fine-tune it with rfdetr's own ``train()``,
load checkpoints without unpickling, predict on batches of crops.

Training happens in rfdetr; this module only chooses its arguments and records what
made the model. Checkpoints are read through ``rfdetr.from_checkpoint``, whose
default is ``torch.load(weights_only=True)``: a checkpoint that needs arbitrary
unpickling is refused unless the user sets ``rfdetr.trust_checkpoint``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..devices import resolve_device, set_threads
from ..io import atomic_path, file_sha256, output_error, package_versions, write_json
from ..registry import METADATA
from .plugin import CHECKPOINT, START_WEIGHTS

log = logging.getLogger(__name__)

SIZES = {"nano": "RFDETRNano", "small": "RFDETRSmall", "medium": "RFDETRMedium",
         "base": "RFDETRBase", "large": "RFDETRLarge"}
# Below this much free space a failed checkpoint write is taken for a full disk.
_LOW_DISK = 512 * 2**20


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class TrainSettings:
    """How RF-DETR is fine-tuned (config section ``rfdetr``)."""

    size: str = "nano"
    pretrain_weights: str | None = "auto"  # "auto", "download", None (random) or a .pth path
    resolution: int = 192
    epochs: int = 8
    # A detector from random weights does not learn in a CPU's minutes (README, "RF-DETR"):
    # None trains it ``epochs`` epochs all the same; a number spends only that many.
    epochs_from_random: int | None = None
    batch_size: int = 4
    lr: float | None = None  # None: 5e-4 from random weights, rfdetr's own (1e-4) when fine-tuning
    lr_encoder: float | None = None  # None: 5e-4 from random weights, rfdetr's own (1.5e-4) when fine-tuning
    layer_decay: float | None = None  # None: 1.0 from random weights, rfdetr's 0.8 when fine-tuning
    num_queries: int | None = 30  # None: rfdetr's default for the size
    group_detr: int | None = 3  # None: rfdetr's default
    multi_scale: bool = False
    use_ema: bool = True
    early_stopping: bool = True
    patience: int = 5
    min_delta: float = 0.001
    num_workers: int = 0
    device: str = "auto"
    seed: int = 0
    trust_checkpoint: bool = False

    @classmethod
    def from_config(cls, section: dict) -> "TrainSettings":
        s = dict(section)
        stop = s.pop("early_stopping", None)
        if isinstance(stop, dict):
            s.update(early_stopping=stop.get("enabled", True), patience=stop.get("patience", cls.patience),
                     min_delta=stop.get("min_delta", cls.min_delta))
        elif stop is not None:
            s["early_stopping"] = bool(stop)
        return cls(**{k: v for k, v in s.items() if k in cls.__dataclass_fields__})


def _model_class(size: str):
    import rfdetr

    if size not in SIZES:
        raise ValueError(f"rfdetr.size {size!r}: choose one of {', '.join(SIZES)}")
    return getattr(rfdetr, SIZES[size])


@dataclass(frozen=True)
class StartWeights:
    """Where fine-tuning starts: rfdetr's COCO release, a given checkpoint, or random weights.

    Attributes:
        kind: ``coco`` (rfdetr's release for the size), ``checkpoint`` (a file the user gave)
            or ``random``.
        path: the weights file, None for random.
        sha256: the file's SHA-256, None for random.
        note: how the choice was made, for the log, ``model.json`` and the report.
    """

    kind: str
    path: str | None
    sha256: str | None
    note: str

    def describe(self) -> str:
        where = f" {Path(self.path).name} (sha256 {self.sha256[:12]})" if self.path else ""
        return f"{START_WEIGHTS[self.kind]}{where}: {self.note}"


def release_file(size: str) -> Path:
    """Where rfdetr keeps its COCO release for ``size`` (``$RF_HOME``, default ``~/.roboflow/models``)."""
    import rfdetr.config
    from rfdetr.assets.model_weights import get_model_cache_dir

    _model_class(size)  # names the sizes on a typo
    config_class = getattr(rfdetr.config, SIZES[size] + "Config")
    return Path(get_model_cache_dir()) / config_class.model_fields["pretrain_weights"].default


def resolve_start(settings: TrainSettings) -> StartWeights:
    """Decide the starting weights from ``rfdetr.pretrain_weights``.

    ``auto`` takes rfdetr's COCO release for the size from rfdetr's cache, or downloads it
    there; when neither works it falls back to random weights and says why in the log
    (the run goes on, and the report says the detector is untrained). ``download`` is the
    same without the fallback. ``None`` is random weights; a path is that checkpoint.

    Raises:
        CheckpointError: a given path that is not a file; ``download`` that fails.
    """
    choice = settings.pretrain_weights
    if choice is None:
        return StartWeights("random", None, None, "rfdetr.pretrain_weights: null")
    if choice not in ("auto", "download"):
        path = Path(choice)
        if not path.is_file():
            raise CheckpointError(f"rfdetr.pretrain_weights: {choice} not found")
        return StartWeights("checkpoint", str(path), file_sha256(path), "rfdetr.pretrain_weights")
    release = release_file(settings.size)
    if release.is_file():
        return StartWeights("coco", str(release), file_sha256(release), f"found in rfdetr's cache {release.parent}")
    from rfdetr.assets.model_weights import download_pretrain_weights

    try:
        release.parent.mkdir(parents=True, exist_ok=True)
        download_pretrain_weights(str(release))  # rfdetr's own download, MD5-checked, to a temporary name
        if not release.is_file():
            raise OSError(f"rfdetr has no release named {release.name}")
    except Exception as exc:  # requests, OS and checksum errors alike mean "not to be had"
        reason = (f"rfdetr's COCO release {release.name} is not in rfdetr's cache {release.parent} and could not "
                  f"be downloaded ({type(exc).__name__}: {str(exc)[:200]})")
        if choice == "download":
            raise CheckpointError(f"rfdetr.pretrain_weights: download: {reason}") from exc
        log.warning("RF-DETR starts from RANDOM weights: %s. Its figures will measure an untrained detector; put "
                    "%s in %s (or set $RF_HOME), or set rfdetr.pretrain_weights to a checkpoint", reason,
                    release.name, release.parent)
        return StartWeights("random", None, None, reason)
    return StartWeights("coco", str(release), file_sha256(release), f"downloaded into rfdetr's cache {release.parent}")


def build(settings: TrainSettings, device, start: StartWeights | None = None) -> object:
    """An rfdetr model of the configured size, on ``device``, with its starting weights.

    Args:
        settings: the ``rfdetr`` config section.
        device: torch device.
        start: starting weights; None resolves ``settings.pretrain_weights`` (``resolve_start``).
    """
    start = start or resolve_start(settings)
    kwargs: dict = {"num_classes": 1, "device": str(device), "pretrain_weights": start.path}
    if settings.num_queries:
        kwargs.update(num_queries=settings.num_queries, num_select=settings.num_queries)
    if settings.group_detr:
        kwargs["group_detr"] = settings.group_detr
    try:
        return _model_class(settings.size)(trust_checkpoint=settings.trust_checkpoint, **kwargs)
    except (OSError, ConnectionError) as exc:
        raise CheckpointError(
            f"rfdetr {settings.size}: could not build the model from {start.describe()} ({exc}). rfdetr builds "
            "base from random weights only after downloading DINOv2; offline, give base a checkpoint or use nano, "
            "small, medium or large") from exc


def train(dataset_dir: str | Path, settings: TrainSettings, out_dir: str | Path, threads: int,
          class_label: str) -> dict:
    """Fine-tune with rfdetr's ``train()`` and save the best checkpoint with its metadata.

    Returns:
        The metadata written to ``model.json``.
    """
    import torch

    set_threads(threads)
    torch.manual_seed(settings.seed)
    device = resolve_device(settings.device)
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    manifest = json.loads((dataset_dir / "dataset.json").read_text(encoding="utf-8"))
    start = resolve_start(settings)
    log.info("RF-DETR %s starts from %s", settings.size, start.describe())
    model = build(settings, device, start)
    epochs = settings.epochs
    if start.kind == "random" and settings.epochs_from_random is not None:
        epochs = min(settings.epochs, settings.epochs_from_random)
        log.warning("RF-DETR from random weights: %d epoch(s) instead of %d (rfdetr.epochs_from_random): enough to "
                    "produce every output, not to learn; it is reported as untrained", epochs, settings.epochs)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=".rfdetr-run.", dir=out_dir))
    t0 = time.perf_counter()
    try:
        model.train(
            dataset_dir=str(dataset_dir), output_dir=str(run_dir), epochs=epochs,
            batch_size=settings.batch_size, grad_accum_steps=1, resolution=settings.resolution,
            multi_scale=settings.multi_scale, use_ema=settings.use_ema,
            **rate_kwargs(settings, start),
            early_stopping=settings.early_stopping, early_stopping_patience=settings.patience,
            early_stopping_min_delta=settings.min_delta, num_workers=settings.num_workers, seed=settings.seed,
            device=str(device), tensorboard=False, progress_bar=None, class_names=[class_label],
            checkpoint_interval=max(epochs, 1), run_test=False,
        )
        seconds = time.perf_counter() - t0
        best = run_dir / "checkpoint_best_total.pth"
        if not best.is_file():
            raise CheckpointError(f"rfdetr training in {run_dir} wrote no checkpoint_best_total.pth")
        with atomic_path(out_dir / CHECKPOINT) as tmp:
            shutil.copyfile(best, tmp)
        history = _history(run_dir / "metrics.csv")
    except (OSError, RuntimeError) as exc:
        # A full disk surfaces from Lightning's temporary files, or from torch.save as "unexpected pos ..."
        # naming no file at all; the user must read that the model folder's disk is full.
        full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
        if full or shutil.disk_usage(out_dir).free < _LOW_DISK:
            raise output_error(out_dir, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) from exc
        raise
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    meta = {
        "model": "rfdetr",
        "size": settings.size,
        "class_label": class_label,
        "settings": asdict(settings),
        "start_weights": asdict(start),
        "epochs_run": int(epochs),
        "context": int(manifest.get("context", 0)),
        "crop_shape": manifest.get("crop_shape"),
        "dataset_id": manifest.get("dataset_id"),
        "dataset_counts": manifest.get("counts"),
        "training_scans": manifest.get("splits"),
        "device": str(device),
        "threads": int(threads),
        "train_seconds": round(seconds, 1),
        "history": history,
        "checkpoint_sha256": file_sha256(out_dir / CHECKPOINT),
        "versions": package_versions("anodect", "rfdetr", "torch", "torchvision"),
    }
    write_json(out_dir / METADATA, meta)
    log.info("RF-DETR %s trained in %.0f s; checkpoint %s", settings.size, seconds, meta["checkpoint_sha256"][:12])
    return meta


# From random weights (the measured runs in README.md); fine-tuning keeps rfdetr's own rates.
_RANDOM_START_LR = 5e-4


def rate_kwargs(settings: TrainSettings, start: StartWeights) -> dict:
    """Learning rates and their decay over the backbone's depth and the model's components.

    rfdetr's defaults (lr 1e-4, encoder 1.5e-4, decay 0.8 per ViT layer and 0.7 per
    component) protect pretrained features while fine-tuning; from random weights
    they leave the first layers learning at a few percent of a small rate, so there
    the rates are 5e-4 and the decays 1. Values set in the config always win.
    """
    random = start.kind == "random"
    out = {}
    for key, value in (("lr", settings.lr), ("lr_encoder", settings.lr_encoder)):
        if value is not None or random:
            out[key] = value if value is not None else _RANDOM_START_LR
    decay = settings.layer_decay if settings.layer_decay is not None else (1.0 if random else None)
    if decay is not None:
        out.update(lr_vit_layer_decay=decay, lr_component_decay=decay)
    return out


def _history(metrics_csv: Path) -> list[dict]:
    """Per-epoch validation figures from rfdetr's metrics.csv (mAP and recall of the EMA and plain weights)."""
    if not metrics_csv.is_file():
        return []
    import pandas as pd

    table = pd.read_csv(metrics_csv)
    keep = [c for c in table.columns if c.startswith("val/") or c in ("train/loss",)]
    rows = table.groupby("epoch")[keep].max().reset_index()
    return [{k: (None if pd.isna(v) else round(float(v), 5)) for k, v in r.items()} for r in rows.to_dict("records")]


@dataclass
class Detection:
    """Boxes of one crop, crop pixel coordinates (x1, y1, x2, y2)."""

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray


class Detector:
    """A loaded RF-DETR checkpoint that predicts on batches of grey crops.

    Args:
        checkpoint: a ``.pth`` written by rfdetr (ours, the original tool's, or a user's).
        device: torch device.
        batch_size: crops per forward pass.
        trust_checkpoint: allow full unpickling when the safe load fails (trusted files only).
    """

    def __init__(self, checkpoint: str | Path, device, batch_size: int = 16, trust_checkpoint: bool = False):
        import rfdetr

        self.path = Path(checkpoint)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: RF-DETR checkpoint not found")
        meta_path = self.path.with_name(METADATA)
        self.metadata = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        if self.metadata.get("checkpoint_sha256") and self.metadata["checkpoint_sha256"] != file_sha256(self.path):
            raise CheckpointError(f"{self.path}: differs from the checkpoint {meta_path} describes")
        try:
            self.model = rfdetr.from_checkpoint(str(self.path), device=str(device),
                                                trust_checkpoint=trust_checkpoint)
        except Exception as exc:  # rfdetr raises pickle, value and runtime errors alike
            raise CheckpointError(
                f"{self.path}: cannot load as an RF-DETR checkpoint ({type(exc).__name__}: {exc}). A file that "
                "needs full unpickling loads only with rfdetr.trust_checkpoint: true, for files you trust"
            ) from exc
        self.batch_size = max(1, int(batch_size))
        # Models trained here saw crops with their context; anything else saw bare ROIs.
        self.context = int(self.metadata.get("context", 0))
        self.model_id = self.metadata.get("checkpoint_sha256", "")[:16] or file_sha256(self.path, 16)

    def predict(self, crops: np.ndarray, floor: float) -> list[Detection]:
        """Boxes above ``floor`` for each crop of ``crops`` [N, H, W] uint8, in crop pixels."""
        import torch

        out: list[Detection] = []
        with torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                chunk = [np.repeat(c[..., None], 3, axis=2) for c in crops[start:start + self.batch_size]]
                for det in self.model.predict(chunk, threshold=floor, include_source_image=False):
                    out.append(Detection(np.asarray(det.xyxy, np.float32).reshape(-1, 4),
                                         np.asarray(det.confidence, np.float32).reshape(-1),
                                         np.asarray(det.class_id, np.int64).reshape(-1)))
        return out
