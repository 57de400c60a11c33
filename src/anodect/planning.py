"""What the rules ask of the config: sources, models, params, truth.

Kept here rather than in ``common.smk`` so the logic is tested like the rest of
the package and the rule files stay wiring. Each model's own questions (its choice,
files, params) are its plugin's (``anodect.registry``); the sample sheet is read by
``anodect.sheets``; the checks that read the disk before a run are in ``preflight``.
Plain Python: the planner imports it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import registry


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


def annotation_inputs(folder: str) -> list[str]:
    """The JSON files of a user's annotations folder, so a changed file reruns the dataset."""
    root = Path(folder)
    return sorted(str(p) for p in root.rglob("*.json")) if root.is_dir() else []


def annotations_generated(config: dict) -> bool:
    """Whether the training annotations are the demo's (written by the demo rule during the run)."""
    folder = config.get("training", {}).get("annotations_dir") or ""
    demo = config.get("demo", {})
    return bool(demo.get("enabled") and folder and inside(folder, demo["out_dir"]))


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




def model_settings(config: dict, model: str, rule: str) -> dict:
    """The settings of ``model``'s section that rule ``rule``'s output depends on (the schema's ``x-jobs``).

    A new key is declared once, in the schema; changing one of these keys reruns the
    job, while threads and the model choice rerun nothing.
    """
    return registry.get(model).job_settings(config, rule)


def decision_params(config: dict, model: str) -> dict:
    """What one model's decision jobs depend on: its own threshold and the tracking rules."""
    return registry.get(model).decision_params(config)


def pod_enabled(config: dict) -> bool:
    """Whether the run makes the POD study (``pod.enabled``; ``auto``: when the inspected
    scans are the demo's, whose truth names the crack-free cells)."""
    enabled = config["pod"]["enabled"]
    if enabled == "auto":
        inspect = [s for s in sources(config) if s.role == "inspect"]
        return bool(inspect and inspect[0].generated and evaluation_truth(config))
    return bool(enabled)


__all__ = ["pod_enabled", "Source", "annotation_inputs", "annotations_generated", "decision_params", "evaluation_truth", "index_range", "inside",
           "model_settings", "sources", "truth_generated", "truth_inputs"]
