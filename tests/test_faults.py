"""Faults end to end: bad scans among good ones, a killed run resumed, and two runs compared."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, tiny_config, write_config

pytestmark = pytest.mark.slow

TABLES = ("tables/batteries.csv", "tables/cracks.csv", "tables/detections.csv", "tables/slices.csv",
          "report/metrics.csv", "report/slices.csv")


def command(workdir, *args):
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2",
            *args]


def snakemake(workdir, *args):
    proc = subprocess.run(command(workdir, *args), capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc.stdout + proc.stderr


def patchcore_only(workdir, demo_dir, **extra):
    """The tiny demo's scans, PatchCore alone, truth from the demo's tables."""
    scans = workdir / "scans"
    shutil.copytree(demo_dir / "scans" / "test", scans)
    config = tiny_config(workdir, demo_enabled=False)
    config["input_dir"] = str(scans)
    config["training"] = {"normal_dir": str(demo_dir / "scans" / "train_normal")}
    config["rfdetr"] = {"model": "none"}
    config["segmenter"] = {"model": "none"}
    config["evaluation"] = {"truth": str(demo_dir / "truth")}
    config.update(extra)
    write_config(workdir / "config" / "config.yaml", config)
    return scans


def test_bad_scans_among_good_ones_do_not_stop_the_run(tmp_path, tiny_demo):
    demo_dir, _ = tiny_demo
    scans = patchcore_only(tmp_path, demo_dir)
    t01 = next(scans.glob("[[]T01]*"))
    # A battery whose every slice is broken, and one broken slice in a good battery.
    dead = scans / "[X09] dead cell" / "[Z軸]"
    dead.mkdir(parents=True)
    for i in range(204, 212):
        (dead / f"[X09] dead cell_負極_{i:04d}.tif").write_bytes(b"" if i % 2 else b"II*\0garbage")
    broken = sorted((t01 / "[Z軸]").glob("*.tif"))[3]
    broken.write_bytes(broken.read_bytes()[:200])
    # A folder whose slices all lie outside filter_index_range.
    far = scans / "[X10] far cell" / "[Z軸]"
    shutil.copytree(t01 / "[Z軸]", far)
    for p in far.glob("*.tif"):
        p.rename(p.with_name(p.name.replace("_02", "_09")))
    output = snakemake(tmp_path)
    # The run's own output says what went wrong and where to look, not only the logs and the report.
    assert "9 slice(s) skipped" in output and broken.name in output
    assert "1 battery(ies) NO DATA (never judged, not OK): [X09] dead cell (patchcore)" in output
    assert f"report: {tmp_path / 'results' / 'report' / 'comparison.html'}" in output

    results = tmp_path / "results"
    batteries = pd.read_csv(results / "tables" / "batteries.csv")
    verdict = dict(zip(batteries["battery_id"], batteries["patchcore_verdict"]))
    assert verdict["[X09] dead cell"] == "NO DATA" and set(verdict) == {"[T01] 検査セル", "[T02] 検査セル",
                                                                         "[X09] dead cell"}
    qc = pd.read_csv(results / "qc.tsv", sep="\t")
    skipped = qc[qc["status"] == "skipped"]
    assert len(skipped) == 8 + 1 and broken.name in " ".join(skipped["reason"])
    assert skipped["reason"].str.contains("empty file").any() and skipped["reason"].str.contains("not a readable").any()
    notes = pd.read_csv(results / "discovery_notes.tsv", sep="\t")
    assert notes["note"].str.contains("none in filter_index_range 204..211").any()
    html = (results / "report" / "comparison.html").read_text(encoding="utf-8")
    assert "9 slices skipped" in html and "NO DATA" in html and "Discovery notes" in html
    metrics = json.loads((results / "report" / "metrics.json").read_text())
    pc = metrics["models"]["patchcore"]
    assert pc["counts"]["batteries_no_data"] == 1 and pc["battery"]["tp"] + pc["battery"]["fn"] + \
        pc["battery"]["tn"] + pc["battery"]["fp"] == 2  # the dead scan is not scored as OK
    assert any("[X09] dead cell" in n for n in metrics["truth"]["notes"])


def test_a_killed_run_resumes_to_the_results_of_an_uninterrupted_one(tmp_path, tiny_demo):
    demo_dir, _ = tiny_demo
    first, second = tmp_path / "a", tmp_path / "b"
    for workdir in (first, second):
        patchcore_only(workdir, demo_dir)
    snakemake(first)

    # Kill the second run (SIGKILL, the whole process group) as soon as scoring starts.
    proc = subprocess.Popen(command(second), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    logs = second / "results" / "logs" / "score_patchcore"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not (logs.is_dir() and any(logs.iterdir())):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before scoring started"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    scores = second / "results" / "patchcore" / "scores"
    assert not (second / "results" / "tables").exists()
    # Whatever a killed job left is either a whole file or a hidden temporary, never a half-written output.
    for path in scores.rglob("*.npz") if scores.is_dir() else []:
        with np.load(path, allow_pickle=False) as f:
            assert f["scores"].shape[0] == f["maps"].shape[0]

    snakemake(second, "--unlock")
    out = snakemake(second)
    assert "Nothing to be done" in snakemake(second, "-n")
    for rel in TABLES:
        a, b = (w / "results" / rel for w in (first, second))
        # Slice tables carry the slice paths, which name each run's own folder.
        same = a.read_text(encoding="utf-8").replace(str(first), str(second)) == b.read_text(encoding="utf-8")
        assert same, f"{rel} differs between the two runs\n{out[-2000:]}"
    for name in sorted(p.relative_to(first / "results/patchcore/scores")
                       for p in (first / "results" / "patchcore" / "scores").glob("*/*.npz")):
        with np.load(first / "results/patchcore/scores" / name) as a, np.load(scores / name) as b:
            assert np.array_equal(a["scores"], b["scores"]) and np.array_equal(a["maps"], b["maps"])


def test_a_second_working_directory_writing_a_running_pipelines_output_folder_is_refused(tmp_path, tiny_demo):
    """Snakemake locks a checkout, not its outputs: two checkouts on one output_inference_dir once
    replaced each other's batch folders. A live run's lock refuses the second; a killed run's is taken over."""
    from anodect.runlock import LOCK

    demo_dir, _ = tiny_demo
    shared = tmp_path / "shared-results"
    first, second = tmp_path / "a", tmp_path / "b"
    for workdir in (first, second):
        patchcore_only(workdir, demo_dir, output_inference_dir=str(shared))
    running = subprocess.Popen(["sleep", "120"])  # stands for the first checkout's live snakemake
    try:
        shared.mkdir()
        (shared / LOCK).write_text(json.dumps({"host": __import__("socket").gethostname(), "pid": running.pid,
                                               "workdir": str(first), "started": "now"}), encoding="utf-8")
        proc = subprocess.run(command(second, str(shared / "scans.tsv")), capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode != 0
        assert f"is being written by another run: process {running.pid}" in proc.stdout + proc.stderr
        assert not (shared / "scans.tsv").exists()
    finally:
        running.kill()
        running.wait()
    snakemake(second, str(shared / "scans.tsv"))  # the holder is gone: its lock is taken over
    assert (shared / "scans.tsv").exists() and not (shared / LOCK).exists()
