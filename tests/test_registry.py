"""A model is one folder and one registry entry: a fake model, registered here and nowhere
else, goes through decisions, tables, the original layout, the evaluation and the report."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anodect import registry
from anodect.comparison import read_outputs, run_comparison
from anodect.decisions import decide_batch, settings_from_params, summarise
from anodect.evidence import ScoreMaps
from anodect.figures import write_figures
from anodect.io import read_table
from anodect.registry import ModelChoice, ModelPlugin
from anodect.render import publish_scans
from anodect.report import write_report

HOT = (205, 206, 207, 208)  # slices of the first scan with a hot spot


class HotSpot(ModelPlugin):
    """Scores a constant map with one hot spot: all a model needs to be judged."""

    key = "hotspot"
    display = "Hot spot"
    tool = "hot_spot"
    evidence = "maps"
    colour = "#9467bd"
    threshold_key = "hotspot_threshold"
    decision_keys = {"map_threshold": "hotspot_map_threshold"}

    def choice(self, config):
        return ModelChoice("path", "nowhere")

    def card(self, meta):
        return "a constant map with one hot spot", None


@pytest.fixture()
def hotspot():
    plugin = HotSpot()
    registry.register(plugin)
    yield plugin
    registry.unregister(plugin.key)


def write_evidence(folder: Path, training: dict) -> list[dict]:
    records = training["records"]["inspect"]
    for n, rec in enumerate(records):
        cs = training["sets"][rec["scan_id"]]
        s, r, h, w = cs.inner().shape
        maps = np.full((s, r, h, w), 0.1, np.float16)
        if n == 0:
            for p, index in enumerate(cs.slice_indices):
                if index in HOT:
                    maps[p, 0, 10:13, 20:30] = 1.0
        ScoreMaps.from_crops(cs, maps.max(axis=(2, 3)), maps, "hot-spot-1").save(folder / f"{rec['scan_id']}.npz")
    return records


def test_a_registered_model_runs_through_every_stage_after_its_evidence(hotspot, tiny_training, tmp_path):
    config = {"hotspot_threshold": 0.5, "hotspot": {},
              "decisions": {"min_consecutive_slices": 4, "max_gap": 0, "link_margin": 2,
                            "hotspot_map_threshold": None}}
    assert "hotspot" in registry.keys() and hotspot.enabled(config) and registry.output_folder("hotspot") == "inference_hot_spot"
    evidence = tmp_path / "hotspot" / "scores" / "inspect-0000"
    records = write_evidence(evidence, tiny_training)
    crops_dir = Path(tiny_training["crops"]["inspect"][0]).parent
    params = hotspot.decision_params(config)
    assert params["threshold"] == 0.5 and "map_threshold" in params

    def slices_of(scan_id):
        cs = tiny_training["sets"][scan_id]
        return pd.DataFrame({"slice_index": cs.slice_indices, "path": cs.paths})

    decisions = tmp_path / "decisions" / "hotspot" / "inspect-0000"
    decide_batch("hotspot", records, evidence, crops_dir, slices_of, settings_from_params(params, None, "hotspot"),
                 "anode crack", 2, decisions)
    tables = {n: [str(decisions / r["scan_id"] / f"{n}.csv") for r in records]
              for n in ("detections", "cracks", "slices")}
    summary = {n: str(tmp_path / "tables" / f"{n}.csv") for n in ("detections", "cracks", "slices", "batteries")}
    summarise(tables, records, ["hotspot"], summary, 4)
    batteries = read_table(summary["batteries"])
    assert batteries["hotspot_verdict"].tolist() == ["NG", "OK"]
    cracks = read_table(summary["cracks"])
    assert len(cracks) == 1 and (cracks.loc[0, "first_slice"], cracks.loc[0, "last_slice"]) == (205, 208)
    x0, y0 = (int(v) for v in tiny_training["sets"][records[0]["scan_id"]].roi_boxes[0][:2])
    assert (cracks.loc[0, "x1"], cracks.loc[0, "y1"], cracks.loc[0, "x2"], cracks.loc[0, "y2"]) == (
        x0 + 20, y0 + 10, x0 + 30, y0 + 13)

    published = tmp_path / registry.output_folder("hotspot")
    publish_scans(records, [str(decisions / r["scan_id"] / "images") for r in records], tables["slices"],
                  tables["detections"], published, True)
    ng = records[0]
    assert len(list((published / "anomaly" / ng["battery_path"]).rglob("*.png"))) == len(HOT)
    assert len(list((published / "AI_RESULTS" / ng["battery_id"]).glob("*_detected.csv"))) == 1

    outputs = {n: str(tmp_path / "report" / f"{n}.{'json' if n == 'metrics_json' else 'csv'}")
               for n in ("metrics_json", "metrics_csv", "slices", "crop_scores", "disagreements", "truth_boxes",
                         "truth_cracks")}
    result = run_comparison(scans=records, settings={"hotspot": params},
                            evidence={"hotspot": sorted(str(p) for p in evidence.iterdir())},
                            crops=tiny_training["crops"]["inspect"],
                            tables={n: summary[n] for n in ("slices", "cracks", "batteries")}, threshold_meta={},
                            truth_spec=None, gallery_max=4, outputs=outputs)
    assert result.metrics["models"]["hotspot"]["counts"]["cracks"] == 1
    assert result.metrics["models"]["hotspot"]["threshold_source"] == "config"
    folders = {n: str(tmp_path / "report" / n) for n in ("figures", "profiles", "gallery")}
    write_figures(report=read_outputs(outputs), models=["hotspot"], cracks=cracks,
                  crop_paths=dict(zip([r["scan_id"] for r in records], tiny_training["crops"]["inspect"])),
                  outputs=folders, evidence_paths={"hotspot": {p.stem: str(p) for p in evidence.iterdir()}},
                  max_profiles=10)
    sheet = tmp_path / "scans.tsv"
    pd.DataFrame([{**r, "role": "inspect", "n_slices": 8} for r in records]).to_csv(sheet, sep="\t", index=False)
    page = tmp_path / "report" / "comparison.html"
    write_report(out_path=page, comparison_files=outputs, models=["hotspot"], batteries=summary["batteries"],
                 folders=folders, scans=str(sheet), qc=str(tmp_path / "no_qc.tsv"), benchmarks=[],
                 benchmark_root=str(tmp_path), model_files={}, config={"hotspot_threshold": 0.5})
    html = page.read_text(encoding="utf-8")
    assert "Anode-crack inspection: Hot spot" in html and "a constant map with one hot spot" in html
    assert "Hot spot verdict (cracks)" in html


def test_nothing_outside_a_model_folder_and_the_registry_names_a_model():
    """The stages, the planner and the report are generic: the models' names live in their plugins."""
    root = Path(registry.__file__).parent
    model_dirs = {p.key for p in registry.plugins().values()}
    offenders = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in model_dirs or rel.parts[0] == "demo" or rel.name == "registry.py":
            continue
        text = path.read_text(encoding="utf-8")
        for key in model_dirs:
            if f'"{key}"' in text or f"'{key}'" in text:
                offenders.append(f"{rel}: {key}")
    assert offenders == []


def test_a_model_saved_before_the_volume_keys_is_named_against_todays_defaults():
    """Issue #30: a model.json without `reference`/`edges` was scored with median/shifted; the
    config's new defaults differ, and the check says so by key (before: a NameError)."""
    from anodect.config import load_config
    from anodect.patchcore.plugin import PatchCorePlugin

    config = load_config(Path(__file__).resolve().parents[1] / "config" / "config.yaml")
    meta = {"volume": {"slab": 3, "window": 3, "reference_slices": 41, "min_slices": 5}}
    problems = " ".join(PatchCorePlugin().metadata_problems(config, meta, "models/patchcore"))
    assert "patchcore.volume.reference" in problems and "'median'" in problems
    assert "patchcore.volume.edges" in problems and "'shifted'" in problems
    # A model made after those keys but before kernel_width used the kernel cut to 1/sqrt(n).
    before_width = {"volume": {**meta["volume"], "reference": "trimmed-harrell-davis", "edges": "centred"}}
    problems = [p for p in PatchCorePlugin().metadata_problems(config, before_width, "m") if "patchcore.volume" in p]
    assert len(problems) == 1 and "patchcore.volume.kernel_width" in problems[0] and "1.0" in problems[0]
    same = {"volume": {**before_width["volume"], "kernel_width": 1.5}}
    assert not any("patchcore.volume" in p for p in PatchCorePlugin().metadata_problems(config, same, "m"))
