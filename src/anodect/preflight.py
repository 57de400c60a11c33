"""Checks before anything runs, in the main Snakemake process only: the config
against its schema and ranges, the input folders (up to their first scan), the
models named, the output folder, and what the discovery job's rerun hangs on.

These read the disk; a cluster job's parse skips them (``workflow.is_main_process``),
so it never walks the input tree. What the rules ask of the config (params, file
lists) is in ``planning``; each model's own checks are its plugin's (``registry``).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from .config import ConfigError, raise_if, range_problems, roi_problems, rois_from_config, validate_schema
from .discovery import DiscoverySettings, first_scan, folders_fingerprint
from .tiffheader import image_shape
from . import registry
from .planning import evaluation_truth, index_range, sources, truth_generated, truth_inputs


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
    problems += truth_problems(config)
    problems += metadata_problems(config)
    problems += output_problems(config) if inputs else []
    roi_msgs = roi_problems(rois, None)
    for key, shape in image_shapes:
        roi_msgs += [f"{m} (image size from {key})" for m in roi_problems(rois, shape) if "outside" in m]
    problems += list(dict.fromkeys(roi_msgs))
    raise_if(problems)
    return config


def model_problems(config: dict) -> list[str]:
    """Every model's choice must be runnable before any job starts (each plugin's checks)."""
    return [p for plugin in registry.plugins().values() for p in plugin.problems(config)]


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
    problems = []
    for plugin in registry.plugins().values():
        if not plugin.enabled(config) or plugin.trains(config):
            continue
        path = plugin.metadata_path(config)
        if path is None:
            continue
        try:
            meta = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: unreadable model metadata ({exc})")
            continue
        problems += plugin.metadata_problems(config, meta, str(Path(plugin.choice(config).path)))
    return problems


NOT_LOOKED_AT = "not looked at"


def listing_fingerprint(config: dict, look: bool = True) -> str:
    """What the discovery job's rerun hangs on: the folders of the user's (non-generated) sources.

    A param of the discovery job: adding, removing or renaming scans or slice files, or
    exporting a scan again, reruns discovery (and, through each scan's ``fingerprint``,
    the crops of the changed scans alone), while an unchanged input leaves the run
    untouched. See ``discovery.folders_fingerprint`` for what it reads.

    Args:
        config: the checked config.
        look: False in a cluster job's parse, which puts the discovery job in its DAG
            too (for its conda env) but must not walk the input tree.
    """
    if not look:
        return NOT_LOOKED_AT
    settings = DiscoverySettings.from_config(config["discovery"])
    digest = hashlib.sha1()
    for src in sources(config):
        if src.generated or not Path(src.path).is_dir():
            digest.update(f"{src.role}:generated\n".encode())
            continue
        folders = folders_fingerprint(src.path, settings, index_range(config))
        digest.update(f"{src.role}\t{folders}\n".encode("utf-8"))
    return digest.hexdigest()


__all__ = ["ConfigError", "check_config", "listing_fingerprint"]
