"""PatchCore as the pipeline sees it: names, model choice, checks and model card.

Plain Python at import: the planner imports it. Training and scoring are in
``stage`` (what the rule scripts call); the original tool's files and anodect's own
are two loaders of this one model (``stage.load``).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..registry import METADATA, ModelChoice, ModelPlugin
from .files import LEGACY_VOLUME

# The original tool's model files and anodect's own, named once.
PARAMS_FILE = "patchcore_params.pkl"
INDEX_FILE = "nnscorer_search_index.faiss"
BANK_FILE = "memory_bank.npy"


def is_original_model(folder: str | Path) -> bool:
    """Whether ``folder`` holds the original tool's PatchCore files."""
    folder = Path(folder)
    return (folder / PARAMS_FILE).is_file() and (folder / INDEX_FILE).is_file()


def _fmt(value) -> str:
    from ..report import fmt

    return fmt(value)


class PatchCorePlugin(ModelPlugin):
    key = "patchcore"
    display = "PatchCore"
    tool = "patchcore"
    evidence = "maps"
    colour = "#1f77b4"
    threshold_key = "patchcore_threshold"
    decision_keys = {"map_threshold": "patchcore_map_threshold", "min_region_area": "min_region_area",
                     "evidence": "patchcore_evidence"}
    train_rules = ("train_patchcore",)
    score_rule = "score_patchcore"
    packages = ("faiss-cpu",)

    def score_params(self, config: dict) -> dict:
        return {**super().score_params(config), "resize_size": config["resize_size"]}

    def score_folder(self, params: dict, crops_dir: str, scan_ids: list[str], out_dir: str, threads: int) -> None:
        from ..devices import set_threads
        from .model import PatchCoreSettings
        from .stage import load, score_batch

        set_threads(threads)
        scorer = load(params["model"], PatchCoreSettings.from_config(params["settings"]), params["resize_size"])
        score_batch(scorer, crops_dir, scan_ids, out_dir)

    def choice(self, config: dict) -> ModelChoice:
        """``patchcore.model``. ``auto``: train when normal scans are given, else the model in
        ``output_dir_model_patchcore`` (the original's files, or a folder this pipeline wrote)."""
        choice = config["patchcore"]["model"]
        folder = config["output_dir_model_patchcore"]
        if choice == "auto":
            if config.get("training", {}).get("normal_dir"):
                choice = "train"
            else:
                choice = "original" if (Path(folder) / PARAMS_FILE).is_file() else folder
        if choice == "train":
            return ModelChoice("train", None)
        return ModelChoice("original", folder) if choice == "original" else ModelChoice("path", choice)

    def metadata_path(self, config: dict) -> str | None:
        if self.choice(config).kind == "original":
            return None
        return super().metadata_path(config)

    def problems(self, config: dict) -> list[str]:
        choice = self.choice(config)
        if choice.kind == "train":
            if not config.get("training", {}).get("normal_dir"):
                return ["patchcore.model: 'train' needs training.normal_dir (scans of normal cells)"]
            return []
        key = "output_dir_model_patchcore" if choice.kind == "original" else "patchcore.model"
        folder = Path(choice.path)
        if choice.kind == "original" or (folder / PARAMS_FILE).is_file() and not (folder / METADATA).is_file():
            wanted = [INDEX_FILE, PARAMS_FILE]
        else:
            wanted = [METADATA, BANK_FILE]
        missing = [name for name in wanted if not (folder / name).is_file()]
        problems = [f"{key}: {folder} lacks {', '.join(missing)} (a PatchCore model folder)"] if missing else []
        if config["patchcore_threshold"] == "auto" and choice.kind == "original":
            problems.append("patchcore_threshold: auto needs a PatchCore model trained by anodect; the original "
                            "tool's model sets none: give a number (the original used 90 with its own scale)")
        return problems

    hashed_files = {"bank_sha256": BANK_FILE}

    def file_problems(self, config: dict) -> list[str]:
        """Besides the hashes: the original tool's params through the restricted unpickler and its
        faiss index's header, before any job."""
        from .files import UnsafeModelFile, flat_index_problem, load_params

        problems = super().file_problems(config)
        choice = self.choice(config)
        folder = Path(choice.path) if choice.path else None
        if folder is not None and is_original_model(folder):
            key = "output_dir_model_patchcore" if choice.kind == "original" else "patchcore.model"
            try:
                load_params(folder / PARAMS_FILE)
            except UnsafeModelFile as exc:
                problems.append(f"{key}: {exc}")
            index = flat_index_problem(folder / INDEX_FILE)
            if index:
                problems.append(f"{key}: {index}")
        return problems

    def metadata_problems(self, config: dict, meta: dict, where: str) -> list[str]:
        pc = config["patchcore"]
        context = config.get("crop_context", 0)
        from ..config import rois_from_config

        rois = rois_from_config(config)
        crop = list(rois[0].crop_shape(context)) if rois else None
        wanted = {"patchcore.backbone": (meta.get("backbone"), pc.get("backbone")),
                  "patchcore.layers": (meta.get("layers"), list(pc["layers"]) if pc.get("layers") else None),
                  "patchcore.input_size": (meta.get("input_size"), pc.get("input_size")),
                  "crop_context": (meta.get("context"), context),
                  "roi_config (crop size HxW with context)": (meta.get("crop_size"), crop)}
        volume = {**LEGACY_VOLUME, **meta["volume"]} if meta.get("volume") else {}
        for key, want in (pc.get("volume") or {}).items():
            wanted[f"patchcore.volume.{key}"] = (volume.get(key), want)
        problems = []
        for key, (have, want) in wanted.items():
            if have is not None and want is not None and _as_list(have) != _as_list(want):
                problems.append(f"{key}: the PatchCore model in {where} was made with {have!r}, the config says "
                                f"{want!r} (match the config to the model, or train a new one)")
        evidence = config["decisions"]["patchcore_evidence"]
        if config["patchcore_threshold"] == "auto" and not (meta.get("auto_threshold") or {}).get(evidence):
            problems.append(f"patchcore_threshold: auto, but the PatchCore model in {where} set no automatic "
                            f"{evidence} threshold (trained on one cell, or before anodect set them): give a number")
        return problems

    def model_id(self, meta: dict) -> str:
        return meta.get("model_id") or "original tool's files"

    def card(self, meta: dict) -> tuple[str, str | None]:
        """Features, their weights, bank, volume evidence, automatic threshold."""
        if not meta:
            return ("the original tool's PatchCore files (ResNet-50 ImageNet features); how they were trained is "
                    "not recorded here"), None
        vol = meta.get("volume") or {}
        auto = meta.get("auto_threshold") or {}
        source = meta.get("weights_source") or "ImageNet weights"
        parts = [f"{meta.get('backbone', '?')} {', '.join(meta.get('layers', []))} (weights: {source}, "
                 f"{str(meta.get('weights_id', '?')).split(':')[0]}), bank {meta.get('bank_size', '?')} patches "
                 f"({100 * float(meta.get('coreset_fraction', 0)):g}% coreset, "
                 f"{meta.get('coreset', 'exact greedy')}) from {len(meta.get('training_scans', []))} normal scans"]
        search = meta.get("search") or {}
        if search.get("recall_at_1") is not None and "IVF" in str(search.get("backend")):
            parts.append(f"approximate search ({search['backend']}), recall@1 {_fmt(search['recall_at_1'])} on "
                         f"training patches")
        if vol:
            vol = {**LEGACY_VOLUME, **vol}
            parts.append(f"volume evidence: slab {vol.get('slab')}, window {vol.get('window')} ({vol['edges']}), "
                         f"{vol['reference']} over {vol.get('reference_slices')} slices")
        if auto.get("slice") is not None or auto.get("volume") is not None:
            stats = auto.get("heldout_score_stats", {})
            described = [f"{ev} {_fmt(auto.get(ev))} (held-out p50 {_fmt(stats.get(ev, {}).get('p50'))}, "
                         f"p99 {_fmt(stats.get(ev, {}).get('p99'))}, max {_fmt(stats.get(ev, {}).get('max'))})"
                         for ev in ("volume", "slice") if auto.get(ev) is not None]
            parts.append(f"automatic thresholds at {100 * auto['false_alarm_rate']:g}% false alarms per crop over "
                         f"{auto.get('n_crops')} held-out crops of {auto.get('n_cells')} cells (each cell scored "
                         f"against the bank less its own patches): " + "; ".join(described))
        elif auto:
            parts.append(f"no automatic threshold: {auto.get('note', '')}")
        return ". ".join(parts), None


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def read_metadata(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


PLUGIN = PatchCorePlugin()
