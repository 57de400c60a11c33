"""What the Snakefile needs from the config: checks before any job, inputs, sample sheets.

Kept here rather than in ``common.smk`` so the logic is tested like the rest of
the package and the rule files stay wiring.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .config import ConfigError, raise_if, range_problems, roi_problems, rois_from_config, validate_schema
from .discovery import DiscoverySettings, Scan, check_unique_ids, discover, first_scan, folders_fingerprint
from .imaging import image_shape
from .names import TOOL, model_of_tool, output_folder


@dataclass(frozen=True)
class Source:
    """A folder of scans and what they are for."""

    role: str
    key: str  # the config key that names it, for messages
    path: str
    generated: bool  # produced by the demo rule, so absent before the run


def index_range(config: dict) -> tuple[int, int] | None:
    rng = config.get("filter_index_range")
    return None if rng is None else (int(rng["min"]), int(rng["max"]))


def inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies under it."""
    p, f = os.path.abspath(path), os.path.abspath(folder)
    return p == f or p.startswith(f + os.sep)


def sources(config: dict) -> list[Source]:
    """The scan folders of a run: ``input_dir`` plus the training folders that are set."""
    demo = config.get("demo", {})
    demo_dir = demo.get("out_dir") if demo.get("enabled") else None
    entries = [("inspect", "input_dir", config["input_dir"])]
    training = config.get("training", {})
    entries += [
        ("train_normal", "training.normal_dir", training.get("normal_dir")),
        ("train_defect", "training.annotated_dir", training.get("annotated_dir")),
    ]
    return [
        Source(role, key, path, bool(demo_dir) and inside(path, demo_dir))
        for role, key, path in entries
        if path
    ]


def discover_sources(source_list: list[dict], discovery: dict, filter_index_range: dict | None,
                     skipped: list[dict] | None = None) -> list[Scan]:
    """``discover_all`` from the discovery job's params (sources as ``vars(Source)``)."""
    roots = {s["role"]: s["path"] for s in source_list}
    config = {
        "input_dir": roots["inspect"],
        "training": {"normal_dir": roots.get("train_normal"), "annotated_dir": roots.get("train_defect")},
        "discovery": discovery,
        "filter_index_range": filter_index_range,
    }
    return discover_all(config, skipped=skipped)


def discover_all(config: dict, read_sizes: bool = True, skipped: list[dict] | None = None) -> list[Scan]:
    """Every scan of every source, in a fixed order; ids are unique across sources."""
    settings = DiscoverySettings.from_config(config["discovery"])
    scans = []
    for src in sources(config):
        scans += discover(src.path, src.role, settings, index_range(config), read_sizes=read_sizes, skipped=skipped)
    check_unique_ids(scans)
    return scans


def check_config(config: dict, inputs: bool = True) -> dict:
    """Validate a config before any job runs: schema, ranges, ROIs and input folders.

    Folders that the demo generates are not looked at (they appear during the run);
    their ROI check uses ``demo.image_size``. Each input folder is read only up to
    its first scan (is there one, and its image size for the ROI check).

    Args:
        config: the config as loaded.
        inputs: look at the input folders and test-write the output folder. False in a
            cluster job's parse, which must not touch the input tree beyond its own scan.

    Returns:
        The config with defaults filled in.

    Raises:
        ConfigError: one message listing every problem, each naming its key.
    """
    validate_schema(config)
    problems = range_problems(config)
    try:
        settings = DiscoverySettings.from_config(config["discovery"])
        settings.compiled_regex()
    except (ValueError, re.error) as exc:
        problems.append(f"discovery.slice_regex: {exc}")
        raise_if(problems)
    rois = rois_from_config(config)
    image_shapes: list[tuple[str, tuple[int, int]]] = []
    demo = config["demo"]
    if demo.get("enabled"):
        image_shapes.append(("demo.image_size", (demo["image_size"], demo["image_size"])))
    if not problems and inputs:
        for src in sources(config):
            if src.generated:
                continue
            if not Path(src.path).is_dir():
                problems.append(f"{src.key}: folder {src.path!r} not found")
                continue
            found = first_scan(src.path, settings, index_range(config))
            if found is None:
                rng = index_range(config)
                problems.append(
                    f"{src.key}: no slice found under {src.path!r} "
                    f"(files matching {settings.file_glob!r} containing {settings.name_contains!r}"
                    + (f", in a folder containing {settings.axis_folder!r}" if settings.axis_folder else "")
                    + (f", slice index in {rng[0]}..{rng[1]} (filter_index_range)" if rng else "")
                    + "; see the discovery section of config/README.md)"
                )
                continue
            first = found.slices[0]
            try:
                image_shapes.append((src.key, image_shape(first.path, first.page if first.page >= 0 else None)))
            except Exception as exc:  # noqa: BLE001 - reported as a config problem
                problems.append(f"{src.key}: cannot read {first.path!r} ({exc})")
    problems += model_problems(config)
    problems += rfdetr_problems(config)
    problems += truth_problems(config)
    problems += metadata_problems(config)
    problems += output_problems(config) if inputs else []
    roi_msgs = roi_problems(rois, None)
    for key, shape in image_shapes:
        roi_msgs += [f"{m} (image size from {key})" for m in roi_problems(rois, shape) if "outside" in m]
    problems += list(dict.fromkeys(roi_msgs))
    raise_if(problems)
    return config


def resolved_patchcore_model(config: dict) -> str:
    """``patchcore.model`` with ``auto`` resolved: train when normal scans are given,
    otherwise use the model in ``output_dir_model_patchcore`` (the original tool's way)."""
    choice = config["patchcore"]["model"]
    if choice != "auto":
        return choice
    if config.get("training", {}).get("normal_dir"):
        return "train"
    folder = Path(config["output_dir_model_patchcore"])
    return "original" if (folder / "patchcore_params.pkl").is_file() else str(folder)


def patchcore_model_folder(config: dict) -> str | None:
    """The folder a ready PatchCore model is read from, or None when the pipeline trains one."""
    choice = resolved_patchcore_model(config)
    if choice == "train":
        return None
    if choice == "original":
        return config["output_dir_model_patchcore"]
    return choice


def patchcore_model_files(config: dict) -> list[str]:
    """The files of a ready model folder (inputs of the scoring jobs), [] when training."""
    folder = patchcore_model_folder(config)
    if folder is None or not Path(folder).is_dir():
        return []
    return [str(p) for p in sorted(Path(folder).iterdir()) if p.is_file()]


# Keys that shape a trained model, and keys that only say how to run one. Threads
# and the model choice stay out of both: changing them must not rerun a job.
_TRAIN_KEYS = ("backbone", "layers", "weights_path", "download_weights", "feature_dim", "input_size",
               "coreset_fraction", "projection_dim", "count_include_pad", "batch_size", "seed", "device", "volume",
               "false_alarm_rate")
_SCORE_KEYS = ("weights_path", "download_weights", "batch_size", "device")


def patchcore_params(config: dict, stage: str) -> dict:
    """The ``patchcore`` settings a training (``train``) or scoring (``score``) job depends on."""
    keys = _TRAIN_KEYS if stage == "train" else _SCORE_KEYS
    return {k: config["patchcore"][k] for k in keys if k in config["patchcore"]}


def model_problems(config: dict) -> list[str]:
    """Model folders named in the config must hold a model before any job runs."""
    problems = []
    choice = resolved_patchcore_model(config)
    if choice == "train":
        if not config.get("training", {}).get("normal_dir"):
            problems.append("patchcore.model: 'train' needs training.normal_dir (scans of normal cells)")
        return problems
    key = "output_dir_model_patchcore" if choice == "original" else "patchcore.model"
    folder = Path(patchcore_model_folder(config))
    if choice == "original" or (folder / "patchcore_params.pkl").is_file() and not (folder / "model.json").is_file():
        wanted = ["nnscorer_search_index.faiss", "patchcore_params.pkl"]
    else:
        wanted = ["model.json", "memory_bank.npy"]
    missing = [name for name in wanted if not (folder / name).is_file()]
    if missing:
        problems.append(f"{key}: {folder} lacks {', '.join(missing)} (a PatchCore model folder)")
    return problems


def resolved_rfdetr_model(config: dict) -> str:
    """``rfdetr.model`` with ``auto`` resolved: train when annotated scans and their
    annotations are given, otherwise the original tool's checkpoint."""
    choice = config["rfdetr"]["model"]
    if choice != "auto":
        return choice
    training = config.get("training", {})
    if training.get("annotated_dir") and training.get("annotations_dir"):
        return "train"
    return "original"


def rfdetr_checkpoint(config: dict) -> str | None:
    """The checkpoint predictions use, or None when the pipeline trains one (or RF-DETR is off)."""
    choice = resolved_rfdetr_model(config)
    if choice in ("train", "none"):
        return None
    if choice == "original":
        return str(Path(config["output_dir_model_rf_detr"]) / config["rf_detr_checkpoint"])
    return choice


def rfdetr_checkpoint_files(checkpoint: str) -> list[str]:
    """The checkpoint and, when present, the metadata written beside it (job inputs)."""
    path = Path(checkpoint)
    meta = path.with_name("model.json")
    return [str(path)] + ([str(meta)] if meta.is_file() else [])


def annotation_inputs(folder: str) -> list[str]:
    """The JSON files of a user's annotations folder, so a changed file reruns the dataset."""
    root = Path(folder)
    return sorted(str(p) for p in root.rglob("*.json")) if root.is_dir() else []


def evaluation_truth(config: dict) -> str | None:
    """The ground truth the report scores the models against (``evaluation.truth``), None for none.

    ``auto`` is the generator's truth tables when the inspected scans are the demo's,
    otherwise none: a user's annotations are named explicitly.
    """
    spec = config["evaluation"]["truth"]
    if spec in (None, "", "none"):
        return None
    if spec == "auto":
        inspect = [s for s in sources(config) if s.role == "inspect"]
        return f"{config['demo']['out_dir']}/truth" if inspect and inspect[0].generated else None
    return spec


def truth_generated(config: dict) -> bool:
    """Whether the truth is written by the demo rule (and so appears during the run)."""
    truth = evaluation_truth(config)
    demo = config["demo"]
    return bool(truth and demo.get("enabled") and inside(truth, demo["out_dir"]))


def truth_inputs(config: dict) -> list[str]:
    """The user's truth files (job inputs, so an edited annotation reruns the evaluation)."""
    truth = evaluation_truth(config)
    if truth is None or truth_generated(config):
        return []
    path = Path(truth)
    if path.is_file():
        return [str(path)]
    if (path / "slices.csv").is_file():
        return [str(path / f"{name}.csv") for name in ("slices", "boxes", "cracks")]
    return annotation_inputs(truth)


def truth_problems(config: dict) -> list[str]:
    truth = evaluation_truth(config)
    if truth is None or truth_generated(config):
        return []
    path = Path(truth)
    if not path.exists():
        return [f"evaluation.truth: {truth!r} not found (a truth folder, a VIA/COCO JSON file or folder, "
                "'auto' or 'none')"]
    if path.is_dir() and not truth_inputs(config):
        return [f"evaluation.truth: {truth!r} holds neither slices.csv nor any .json annotation file"]
    return []


def model_metadata(config: dict, model: str) -> str | None:
    """The metadata file of a ready (not trained here) model, when it has one; None otherwise."""
    if model == "patchcore":
        folder = patchcore_model_folder(config)
        meta = Path(folder) / "model.json" if folder else None
    else:
        checkpoint = rfdetr_checkpoint(config)
        meta = Path(checkpoint).with_name("model.json") if checkpoint else None
    return str(meta) if meta is not None and meta.is_file() else None


def rfdetr_enabled(config: dict) -> bool:
    return resolved_rfdetr_model(config) != "none"


_RF_TRAIN_KEYS = ("size", "pretrain_weights", "trust_checkpoint", "resolution", "epochs", "batch_size", "lr",
                  "lr_encoder", "layer_decay", "num_queries", "group_detr", "multi_scale", "use_ema", "early_stopping",
                  "num_workers", "seed", "device")
_RF_PREDICT_KEYS = ("score_floor", "predict_batch_size", "trust_checkpoint", "device")


def rfdetr_params(config: dict, stage: str) -> dict:
    """The ``rfdetr`` settings a job of ``stage`` (dataset, train, predict) depends on."""
    rf = config["rfdetr"]
    if stage == "dataset":
        return dict(rf["dataset"])
    keys = _RF_TRAIN_KEYS if stage == "train" else _RF_PREDICT_KEYS
    return {k: rf[k] for k in keys}


def rfdetr_problems(config: dict) -> list[str]:
    """RF-DETR's model choice must be runnable before any job starts."""
    choice = resolved_rfdetr_model(config)
    training = config.get("training", {})
    if choice == "none":
        return []
    if choice == "train":
        missing = [k for k in ("annotated_dir", "annotations_dir", "normal_dir") if not training.get(k)]
        problems = [f"rfdetr.model: 'train' needs training.{k}" for k in missing]
        folder = training.get("annotations_dir")
        demo = config.get("demo", {})
        generated = demo.get("enabled") and folder and inside(folder, demo["out_dir"])
        if folder and not generated and not Path(folder).is_dir():
            problems.append(f"training.annotations_dir: folder {folder!r} not found")
        return problems
    path = Path(rfdetr_checkpoint(config))
    if path.is_file():
        return []
    key = "output_dir_model_rf_detr/rf_detr_checkpoint" if choice == "original" else "rfdetr.model"
    hint = (" (set training.annotated_dir and training.annotations_dir to train one, or rfdetr.model: none)"
            if choice == "original" else "")
    return [f"{key}: RF-DETR checkpoint {path} not found{hint}"]


def output_problems(config: dict) -> list[str]:
    """``output_inference_dir`` must be writable: found now, not after an hour of scoring."""
    import tempfile

    target = Path(config["output_inference_dir"]).absolute()
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return [f"output_inference_dir: {existing} is a file, not a folder"]
    try:
        # A real write, not os.access: root passes access checks on read-only mounts.
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        return [f"output_inference_dir: cannot write in {existing} ({exc.strerror or exc})"]
    return []


def metadata_problems(config: dict) -> list[str]:
    """A ready model's metadata against the config: what differs, before any job runs.

    A frozen model is used as it was trained; a config that says otherwise (another
    backbone, input size, crop geometry) would mislead whoever reads the config, or
    fail at the first scoring job, so the difference is stated now.
    """
    import json

    problems = []
    rois = config.get("roi_config") or []
    context = config.get("crop_context", 0)
    crop = ([rois[0]["y_max"] - rois[0]["y_min"] + 2 * context, rois[0]["x_max"] - rois[0]["x_min"] + 2 * context]
            if rois else None)

    def read(path: Path) -> dict:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: unreadable model metadata ({exc})")
            return {}

    folder = patchcore_model_folder(config) if resolved_patchcore_model(config) != "original" else None
    if folder and (Path(folder) / "model.json").is_file():
        meta = read(Path(folder) / "model.json")
        pc = config["patchcore"]
        wanted = {"patchcore.backbone": (meta.get("backbone"), pc.get("backbone")),
                  "patchcore.layers": (meta.get("layers"), list(pc.get("layers") or [])),
                  "patchcore.input_size": (meta.get("input_size"), pc.get("input_size")),
                  "crop_context": (meta.get("context"), context),
                  "roi_config (crop size HxW with context)": (meta.get("crop_size"), crop)}
        volume = meta.get("volume") or {}
        for key, want in (pc.get("volume") or {}).items():
            wanted[f"patchcore.volume.{key}"] = (volume.get(key), want)
        for key, (have, want) in wanted.items():
            if have is not None and want is not None and list(np.atleast_1d(have)) != list(np.atleast_1d(want)):
                problems.append(f"{key}: the PatchCore model in {folder} was made with {have!r}, the config says "
                                f"{want!r} (match the config to the model, or train a new one)")
        evidence = config["decisions"]["patchcore_evidence"]
        if config["patchcore_threshold"] == "auto" and not (meta.get("auto_threshold") or {}).get(evidence):
            problems.append(f"patchcore_threshold: auto, but the PatchCore model in {folder} set no automatic "
                            f"{evidence} threshold (trained on one cell, or before anodect set them): give a number")
    if config["patchcore_threshold"] == "auto" and resolved_patchcore_model(config) == "original":
        problems.append("patchcore_threshold: auto needs a PatchCore model trained by anodect; the original tool's "
                        "model sets none: give a number (the original used 90 with its own scale)")
    checkpoint = rfdetr_checkpoint(config) if rfdetr_enabled(config) else None
    meta_path = Path(checkpoint).with_name("model.json") if checkpoint else None
    if meta_path is not None and meta_path.is_file():
        meta = read(meta_path)
        rf = config["rfdetr"]
        wanted = {"rfdetr.size": (meta.get("size"), rf.get("size")),
                  "rfdetr.resolution": ((meta.get("settings") or {}).get("resolution"), rf.get("resolution")),
                  "crop_context": (meta.get("context"), context)}
        for key, (have, want) in wanted.items():
            if have is not None and want is not None and have != want:
                problems.append(f"{key}: the RF-DETR checkpoint {checkpoint} was trained with {have!r}, the config "
                                f"says {want!r} (match the config to the model, or train a new one)")
    return problems


def gpu_resources(config: dict, model: str) -> dict:
    """``gpu=1`` for a model's training and scoring jobs when its ``device`` asks for CUDA.

    ``auto`` asks for none: on a cluster, a job that should get a GPU says so.
    """
    device = str(config["patchcore" if model == "patchcore" else "rfdetr"].get("device", "auto"))
    return {"gpu": 1} if device.startswith("cuda") else {}


def models(config: dict) -> list[str]:
    """The models of a run, in report order."""
    return ["patchcore"] + (["rfdetr"] if rfdetr_enabled(config) else [])


def decision_params(config: dict, model: str) -> dict:
    """What one model's decision jobs depend on: its own threshold and the tracking rules.

    The other model's threshold is left out, so changing it never reruns these jobs.
    """
    d = config["decisions"]
    params = {k: d[k] for k in ("min_consecutive_slices", "max_gap", "link_margin")}
    if model == "patchcore":
        params.update(threshold=config["patchcore_threshold"], map_threshold=d["patchcore_map_threshold"],
                      min_region_area=d["min_region_area"], evidence=d["patchcore_evidence"])
    else:
        params.update(threshold=config["rf_detr_threshold"], nms_iou=d["nms_iou"])
    return params


def listing_fingerprint(config: dict) -> str:
    """What the discovery job's rerun hangs on: the folders of the user's (non-generated) sources.

    A param of the discovery job, evaluated by the main process only: adding, removing
    or renaming scans or slice files, or exporting a scan again, reruns discovery (and,
    through each scan's ``fingerprint``, the crops of the changed scans alone), while an
    unchanged input leaves the run untouched. See ``discovery.folders_fingerprint``
    for what it reads.
    """
    settings = DiscoverySettings.from_config(config["discovery"])
    digest = hashlib.sha1()
    for src in sources(config):
        if src.generated or not Path(src.path).is_dir():
            digest.update(f"{src.role}:generated\n".encode())
            continue
        folders = folders_fingerprint(src.path, settings, index_range(config))
        digest.update(f"{src.role}\t{folders}\n".encode("utf-8"))
    return digest.hexdigest()


@functools.lru_cache(maxsize=8)
def _read_sheet(path: str, mtime: float) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", keep_default_na=False, dtype={"axis": str})


def read_sheet(path: str | Path) -> pd.DataFrame:
    """Read a sample sheet (or slice list) once per version of the file."""
    path = str(path)
    return _read_sheet(path, os.path.getmtime(path))


@functools.lru_cache(maxsize=4)
def _slices_by_scan(path: str, mtime: float) -> dict[str, pd.DataFrame]:
    table = _read_sheet(path, mtime)
    return {scan_id: group for scan_id, group in table.groupby("scan_id", sort=False)}


def scan_ids(sheet: pd.DataFrame, role: str | None = None) -> list[str]:
    """Scan ids of the sample sheet, of one role or all, in sheet order."""
    rows = sheet if role is None else sheet[sheet["role"] == role]
    return list(rows["scan_id"])


def scan_record(sheet: pd.DataFrame, scan_id: str) -> dict:
    """One scan's row of the sample sheet."""
    rows = sheet[sheet["scan_id"] == scan_id]
    if rows.empty:
        raise KeyError(f"scan {scan_id!r} is not in the sample sheet")
    return rows.iloc[0].to_dict()


@functools.lru_cache(maxsize=4)
def _records(path: str, mtime: float) -> dict[str, dict]:
    return {r["scan_id"]: r for r in _read_sheet(path, mtime).to_dict("records")}


def sheet_record(path: str | Path, scan_id: str) -> dict:
    """``scan_record`` from the sample sheet file, indexed once per version of the file.

    Planning thousands of scans asks for a record per job; a scan of the table each
    time made that quadratic.
    """
    path = str(path)
    records = _records(path, os.path.getmtime(path))
    if scan_id not in records:
        raise KeyError(f"scan {scan_id!r} is not in the sample sheet {path}")
    return dict(records[scan_id])


def scan_records(sheet: pd.DataFrame, role: str) -> list[dict]:
    """Ids and original names of one role's scans, for a model's metadata."""
    rows = sheet.loc[sheet["role"] == role, ["scan_id", "battery_id", "battery_path", "axis", "height", "width"]]
    return rows.to_dict("records")


def scan_slices(slices_tsv: str | Path, scan_id: str) -> pd.DataFrame:
    """The slice rows of one scan; the table is grouped once, not once per job."""
    path = str(slices_tsv)
    groups = _slices_by_scan(path, os.path.getmtime(path))
    if scan_id not in groups:
        raise KeyError(f"scan {scan_id!r} is not in {path}")
    return groups[scan_id]


__all__ = [
    "ConfigError",
    "Source",
    "TOOL",
    "annotation_inputs",
    "check_config",
    "decision_params",
    "discover_all",
    "discover_sources",
    "index_range",
    "inside",
    "listing_fingerprint",
    "model_of_tool",
    "models",
    "output_folder",
    "patchcore_model_files",
    "patchcore_model_folder",
    "patchcore_params",
    "read_sheet",
    "resolved_rfdetr_model",
    "rfdetr_checkpoint",
    "rfdetr_checkpoint_files",
    "rfdetr_enabled",
    "rfdetr_params",
    "rfdetr_problems",
    "scan_ids",
    "scan_record",
    "scan_records",
    "scan_slices",
    "sources",
]
