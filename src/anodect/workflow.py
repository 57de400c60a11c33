"""What the rules ask of the config: model choices, params, file lists, sample sheets.

Kept here rather than in ``common.smk`` so the logic is tested like the rest of
the package and the rule files stay wiring. The checks that read the disk before a
run are in ``preflight``.
"""

from __future__ import annotations

import csv
import functools
import os
from dataclasses import dataclass
from pathlib import Path

from . import batches
from .config import ConfigError, load_schema
from .discovery import DiscoverySettings, Scan, check_unique_ids, discover
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


@dataclass(frozen=True)
class ModelChoice:
    """What a model's ``model:`` key resolves to.

    Attributes:
        kind: ``train`` (trained by this run), ``original`` (the original tool's files),
            ``path`` (a model the user gives) or ``none`` (RF-DETR off).
        path: the folder (PatchCore) or checkpoint (RF-DETR) read; None for train and none.
    """

    kind: str
    path: str | None


def model_choice(config: dict, model: str) -> ModelChoice:
    """``patchcore.model`` or ``rfdetr.model``, ``auto`` resolved, in one place per model.

    PatchCore ``auto``: train when normal scans are given, else the model in
    ``output_dir_model_patchcore`` (the original's files, or a folder this pipeline wrote).
    RF-DETR ``auto``: train when annotated scans and their annotations are given, else
    the original tool's checkpoint.
    """
    training = config.get("training", {})
    if model == "patchcore":
        choice = config["patchcore"]["model"]
        folder = config["output_dir_model_patchcore"]
        if choice == "auto":
            if training.get("normal_dir"):
                choice = "train"
            else:
                choice = "original" if (Path(folder) / "patchcore_params.pkl").is_file() else folder
        if choice == "train":
            return ModelChoice("train", None)
        return ModelChoice("original", folder) if choice == "original" else ModelChoice("path", choice)
    choice = config["rfdetr"]["model"]
    if choice == "auto":
        choice = "train" if training.get("annotated_dir") and training.get("annotations_dir") else "original"
    if choice in ("train", "none"):
        return ModelChoice(choice, None)
    if choice == "original":
        return ModelChoice("original", str(Path(config["output_dir_model_rf_detr"]) / config["rf_detr_checkpoint"]))
    return ModelChoice("path", choice)


def patchcore_model_folder(config: dict) -> str | None:
    """The folder a ready PatchCore model is read from, or None when the pipeline trains one."""
    return model_choice(config, "patchcore").path


def patchcore_model_files(config: dict) -> list[str]:
    """The files of a ready model folder (inputs of the scoring jobs), [] when training."""
    folder = patchcore_model_folder(config)
    if folder is None or not Path(folder).is_dir():
        return []
    return [str(p) for p in sorted(Path(folder).iterdir()) if p.is_file()]


def job_settings(config: dict, section: str, job: str) -> dict:
    """The keys of ``config[section]`` that the output of rule ``job`` depends on.

    The schema marks each model setting with the jobs it shapes (``x-jobs``), so a
    new key is declared once. The result is the job's params: changing one of
    these keys reruns the job; threads and the model choice rerun nothing.
    """
    props = _schema()["properties"][section]["properties"]
    return {k: config[section][k] for k, p in props.items() if job in p.get("x-jobs", ()) and k in config[section]}


@functools.cache
def _schema() -> dict:
    return load_schema()


def patchcore_params(config: dict, stage: str) -> dict:
    """The ``patchcore`` settings a training (``train``) or scoring (``score``) job depends on."""
    return job_settings(config, "patchcore", f"{stage}_patchcore")


def rfdetr_checkpoint(config: dict) -> str | None:
    """The checkpoint predictions use, or None when the pipeline trains one (or RF-DETR is off)."""
    return model_choice(config, "rfdetr").path


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
    return model_choice(config, "rfdetr").kind != "none"


def rfdetr_params(config: dict, stage: str) -> dict:
    """The ``rfdetr`` settings a job of ``stage`` (dataset, train, predict) depends on."""
    rf = config["rfdetr"]
    if stage == "dataset":
        return dict(rf["dataset"])
    return job_settings(config, "rfdetr", f"{stage}_rfdetr")


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


# The sample sheet's and slice list's integer columns; every other column is text
# (a battery named 001 stays "001").
_INT_COLUMNS = frozenset({"n_slices", "first_slice", "last_slice", "height", "width", "slice_index", "page"})


@functools.lru_cache(maxsize=8)
def _read_sheet(path: str, mtime: float) -> tuple[dict, ...]:
    # The csv module, not pandas: the Snakefile reads the sheet while planning, and
    # planning must need nothing beyond Snakemake's own dependencies.
    with open(path, newline="", encoding="utf-8") as fh:
        rows = csv.DictReader(fh, delimiter="\t")
        return tuple({k: int(v) if k in _INT_COLUMNS and v != "" else v for k, v in row.items()} for row in rows)


def read_sheet(path: str | Path) -> list[dict]:
    """The rows of a sample sheet (or slice list), read once per version of the file."""
    path = str(path)
    return list(_read_sheet(path, os.path.getmtime(path)))


def scan_ids(sheet: list[dict], role: str | None = None) -> list[str]:
    """Scan ids of the sample sheet, of one role or all, in sheet order."""
    return [r["scan_id"] for r in sheet if role is None or r["role"] == role]


def scan_record(sheet: list[dict], scan_id: str) -> dict:
    """One scan's row of the sample sheet."""
    for row in sheet:
        if row["scan_id"] == scan_id:
            return dict(row)
    raise KeyError(f"scan {scan_id!r} is not in the sample sheet")


_RECORD_KEYS = ("scan_id", "battery_id", "battery_path", "axis", "height", "width")


def scan_records(sheet: list[dict], role: str) -> list[dict]:
    """Ids and original names of one role's scans, for a model's metadata."""
    return [{k: r[k] for k in _RECORD_KEYS} for r in sheet if r["role"] == role]


@functools.lru_cache(maxsize=4)
def _batches(path: str, mtime: float, scans_per_job: int) -> tuple[dict[str, list[dict]], dict[str, str]]:
    groups = batches.members(list(_read_sheet(path, mtime)), scans_per_job)
    return groups, {r["scan_id"]: b for b, rows in groups.items() for r in rows}


def sheet_batches(path: str | Path, scans_per_job: int) -> dict[str, list[dict]]:
    """batch id -> its scans' sheet rows (see ``anodect.batches``), once per version of the sheet."""
    path = str(path)
    return _batches(path, os.path.getmtime(path), scans_per_job)[0]


def batch_of(path: str | Path, scans_per_job: int) -> dict[str, str]:
    """scan id -> its batch id, once per version of the sample sheet."""
    path = str(path)
    return _batches(path, os.path.getmtime(path), scans_per_job)[1]


@functools.lru_cache(maxsize=4)
def _slices_by_scan(path: str, mtime: float) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for row in _read_sheet(path, mtime):
        groups.setdefault(row["scan_id"], []).append(row)
    return groups


def scan_slices(slices_tsv: str | Path, scan_id: str):
    """The slice rows of one scan (a DataFrame); the table is grouped once, not once per job."""
    import pandas as pd  # jobs only: the crop and decision stages take a table; planning needs none

    path = str(slices_tsv)
    groups = _slices_by_scan(path, os.path.getmtime(path))
    if scan_id not in groups:
        raise KeyError(f"scan {scan_id!r} is not in {path}")
    return pd.DataFrame(groups[scan_id])


__all__ = [
    "ConfigError",
    "ModelChoice",
    "Source",
    "TOOL",
    "annotation_inputs",
    "batch_of",
    "decision_params",
    "discover_all",
    "discover_sources",
    "index_range",
    "inside",
    "model_choice",
    "model_of_tool",
    "models",
    "output_folder",
    "patchcore_model_files",
    "patchcore_model_folder",
    "patchcore_params",
    "read_sheet",
    "rfdetr_checkpoint",
    "rfdetr_checkpoint_files",
    "rfdetr_enabled",
    "rfdetr_params",
    "scan_ids",
    "scan_record",
    "scan_records",
    "scan_slices",
    "sheet_batches",
    "sources",
]
