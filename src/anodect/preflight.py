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

from .config import ConfigError, raise_if, range_problems, roi_problems, rois_from_config, schema_problems
from .discovery import DiscoverySettings, first_scan, folders_fingerprint
from .tiffheader import image_shape
from . import registry
from .planning import evaluation_truth, index_range, pod_enabled, sources, truth_generated, truth_inputs


def check_config(config: dict, inputs: bool = True, defaulted: dict[str, str] | None = None) -> dict:
    """Validate a config before any job runs: schema, ranges, ROIs, input folders, models, output.

    Every check that can run does, so one message lists every problem, each once: a check
    that cannot read a value the schema refused is skipped (the schema's line names that
    key). Folders that the demo generates are not looked at (they appear during the run);
    their ROI check uses ``demo.image_size``. Each input folder is read only up to its
    first scan (is there one, and its image size for the ROI check).

    Args:
        config: the config as loaded.
        inputs: look at the input folders and test-write the output folder. False in a
            cluster job's parse, which must not touch the input tree beyond its own scan.
        defaulted: top-level keys the user's config file(s) left out, with the file their
            value came from (``defaulted_keys``); a problem with such a key says so.

    Returns:
        The config with defaults filled in.

    Raises:
        ConfigError: one message listing every problem, each naming its key.
    """
    problems = schema_problems(config)
    strict = not problems

    def run(check, *args) -> list[str]:
        try:
            return list(check(*args))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            if strict:  # a valid config must never break a check: that is a bug, not a config problem
                raise
            return []

    range_msgs = run(range_problems, config)
    problems += range_msgs
    settings = None
    try:
        settings = DiscoverySettings.from_config(config["discovery"])
        settings.compiled_regex()
    except (ValueError, re.error) as exc:
        problems.append(f"discovery.slice_regex: {exc}")
        settings = None
    except (KeyError, TypeError, AttributeError):
        settings = None  # the schema's problems name what is wrong in discovery
    image_shapes: list[tuple[str, tuple[int, int]]] = []
    demo = config.get("demo") or {}
    if isinstance(demo, dict) and demo.get("enabled") and isinstance(demo.get("image_size"), int):
        image_shapes.append(("demo.image_size", (demo["image_size"], demo["image_size"])))
    if inputs and settings is not None:
        # A reversed range is reported above; the folders are still looked at, without it.
        reversed_range = any(m.startswith("filter_index_range") for m in range_msgs)
        found_shapes, input_msgs = [], []
        for result in run(lambda: list(_input_problems(config, settings, not reversed_range))):
            (found_shapes if isinstance(result, tuple) else input_msgs).append(result)
        image_shapes += found_shapes
        problems += input_msgs
    problems += run(model_problems, config)
    if inputs:  # the model files themselves (hashes, the original's pickle and index), main process only
        problems += run(lambda: [p for plugin in registry.plugins().values() for p in plugin.file_problems(config)])
    problems += run(truth_problems, config)
    problems += run(pod_problems, config)
    problems += run(metadata_problems, config)
    problems += run(output_problems, config) if inputs else []
    problems += run(_roi_messages, config, image_shapes)
    problems = list(dict.fromkeys(problems))
    raise_if([_say_defaulted(p, defaulted or {}) for p in problems])
    return config


def _input_problems(config: dict, settings: DiscoverySettings, use_range: bool):
    """Each input folder's problem (a message) or its first scan's image size (key, shape)."""
    rng = index_range(config) if use_range else None
    for src in sources(config):
        if src.generated:
            continue
        if not Path(src.path).is_dir():
            yield f"{src.key}: folder {src.path!r} not found"
            continue
        found = first_scan(src.path, settings, rng)
        if found is None:
            yield (f"{src.key}: no slice found under {src.path!r} "
                   f"(files matching {settings.file_glob!r} containing {settings.name_contains!r}"
                   + (f", in a folder containing {settings.axis_folder!r}" if settings.axis_folder else "")
                   + (f", slice index in {rng[0]}..{rng[1]} (filter_index_range)" if rng else "")
                   + "; see the discovery section of config/README.md)")
            continue
        first = found.slices[0]
        try:
            yield (src.key, image_shape(first.path, first.page if first.page >= 0 else None))
        except Exception as exc:  # noqa: BLE001 - reported as a config problem
            yield f"{src.key}: cannot read {first.path!r} ({exc})"


def _roi_messages(config: dict, image_shapes: list[tuple[str, tuple[int, int]]]) -> list[str]:
    """The ROIs' problems, each once: one outside several folders' images names them all."""
    rois = rois_from_config(config)
    msgs = roi_problems(rois, None)
    outside: dict[str, list[str]] = {}
    for key, shape in image_shapes:
        for m in roi_problems(rois, shape):
            if "outside" in m:
                outside.setdefault(m, []).append(key)
    return msgs + [f"{m} (image size from {', '.join(dict.fromkeys(keys))})" for m, keys in outside.items()]


def _say_defaulted(problem: str, defaulted: dict[str, str]) -> str:
    top = re.split(r"[.\[: ]", problem, maxsplit=1)[0]
    if top in defaulted:
        return f"{problem} [{top} is not in your config file: this value is {defaulted[top]}'s]"
    return problem


def defaulted_keys(default_file: str | Path, user_files: list, overrides: dict | None = None) -> dict[str, str]:
    """Top-level keys whose value comes from the workflow's default config file alone.

    With ``--configfile mine.yaml`` Snakemake still loads ``config/config.yaml`` first, so a
    key the user's file leaves out silently keeps the default file's value (the demo's
    folders, for instance); the preflight names it. Empty when no other file is given.
    """
    import yaml

    if not user_files:
        return {}
    given = set(overrides or {})
    for path in user_files:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue  # Snakemake has read it already, or said why not
        if Path(path).resolve() == Path(default_file).resolve():
            return {}
        given |= set(data) if isinstance(data, dict) else set()
    try:
        base = yaml.safe_load(Path(default_file).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return {key: str(default_file) for key in base if key not in given}


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


def pod_problems(config: dict) -> list[str]:
    """The POD study needs crack-free scans: from the truth (``pod.cells: auto``) or listed."""
    pod = config["pod"]
    if not pod_enabled(config):
        return []
    if pod["cells"] == "auto" and evaluation_truth(config) is None:
        return ["pod.cells: auto takes the inspected scans the ground truth calls crack-free, and this run has no "
                "truth (evaluation.truth): list normal scans no model trained on, or set pod.enabled: false"]
    if isinstance(pod["cells"], str) and pod["cells"] != "auto":
        return [f"pod.cells: {pod['cells']!r} is neither auto nor a list of scan ids"]
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


__all__ = ["ConfigError", "check_config", "defaulted_keys", "listing_fingerprint"]
