"""The POD study's stage of the pipeline: what its four rules call."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from ..crops import CropSet
from ..io import atomic_dir, read_table, write_json, write_table
from .design import PodSettings, build

log = logging.getLogger(__name__)


def choose_cells(scans: list[dict], crop_paths: dict[str, str], cells, truth_spec: str | None) -> tuple[list[str], str]:
    """The scans the study renders cracks into, and how they were chosen.

    ``auto``: the inspected scans the truth calls crack-free (scans whose truth file
    could not be read are left out); a list: those scan ids (or battery ids).
    """
    if cells == "auto":
        from ..metrics import load_truth

        truth = load_truth(truth_spec, scans, crop_paths)
        if truth is None:
            raise ValueError("pod.cells: auto needs a ground truth (evaluation.truth) to know which scans are "
                             "crack-free; list the scan ids of normal scans no model trained on instead")
        verdicts = truth.verdicts()
        unreadable = set(truth.unreadable)
        chosen = [s["scan_id"] for s in scans if s["scan_id"] in verdicts.index and not verdicts[s["scan_id"]]
                  and s["scan_id"] not in unreadable]
        how = f"the inspected scans the truth ({truth_spec}) calls crack-free"
    else:
        wanted = set(cells)
        chosen = [s["scan_id"] for s in scans if s["scan_id"] in wanted or s.get("battery_id") in wanted]
        missing = wanted - {s["scan_id"] for s in scans} - {s.get("battery_id") for s in scans}
        if missing:
            raise ValueError(f"pod.cells: {', '.join(sorted(missing))} are not inspected scans of this run")
        how = "the scans pod.cells lists"
    if not chosen:
        raise ValueError(f"pod: no normal scan to render cracks into ({how})")
    return chosen, how


def render(scans: list[dict], crop_paths: dict[str, str], truth_spec: str | None, section: dict, out: dict) -> None:
    """Rule pod_render: the clean scans and their cracked copies, the footprints and the crack table."""
    settings = PodSettings.from_config(section)
    chosen, how = choose_cells(scans, crop_paths, section["cells"], truth_spec)
    sources = [CropSet.load(crop_paths[s]) for s in chosen]
    with atomic_dir(out["crops"]) as crops_dir, atomic_dir(out["footprints"]) as footprint_dir:
        cracks = build(sources, settings, crops_dir, footprint_dir)
    write_table(out["cracks"], cracks)
    write_json(out["cells"], {"clean": chosen, "copies": sorted(cracks["copy_id"].unique().tolist()),
                              "chosen": how, "settings": settings.as_dict()})


def scan_ids(cells_json: str | Path) -> list[str]:
    """The scans the models score for the study: the cracked copies (the clean scans' evidence is the run's)."""
    return json.loads(Path(cells_json).read_text(encoding="utf-8"))["copies"]


def judge(model: str, params: dict, model_meta: str | None, inputs: dict, out: dict,
          run_evidence: dict[str, str], run_crops: dict[str, str]) -> None:
    """Rule pod_judge: one model's hits and false calls at its operating threshold.

    ``run_evidence``, ``run_crops``: every inspected scan's evidence and crops file (the clean scans' are read).
    """
    from ..decisions import settings_from_params
    from .judge import judge as judge_model

    settings = settings_from_params(params, model_meta or None, model)
    cells = json.loads(Path(inputs["cells"]).read_text(encoding="utf-8"))
    clean = {scan_id: (run_evidence[scan_id], run_crops[scan_id]) for scan_id in cells["clean"]}
    hits, false_calls = judge_model(model, read_table(inputs["cracks"]), clean, inputs["evidence"],
                                    inputs["crops"], inputs["footprints"], settings)
    write_table(out["hits"], hits)
    write_json(out["false_calls"], false_calls)


def analyse(models: list[str], inputs: dict, section: dict, out: dict, taught: dict | None = None) -> None:
    """Rule pod_analyse: every model's curves, a90, a90/95 and false calls; the figures."""
    from .analysis import analyse as fit_all
    from .plots import plot_curves

    cracks = read_table(inputs["cracks"])
    hits = {m: read_table(p) for m, p in zip(models, inputs["hits"])}
    false_calls = {m: json.loads(Path(p).read_text(encoding="utf-8")) for m, p in zip(models, inputs["false_calls"])}
    table, summary = fit_all(cracks, hits, false_calls, section.get("voxel_size_um"))
    summary["settings"] = {k: v for k, v in section.items()}
    renderer = section.get("renderer", "project")
    for m, result in summary["models"].items():
        # Never a model's figure on the cracks it was taught to draw without saying so.
        result["taught_this_renderer"] = bool(taught and taught.get(m) == renderer)
    write_table(out["csv"], table)
    write_json(out["json"], summary)
    with atomic_dir(out["figures"]) as folder:
        plot_curves(summary, cracks, hits, folder)


__all__ = ["analyse", "choose_cells", "judge", "render", "scan_ids"]
