"""The HTML report: written from a comparison, self-contained, and opened in headless Chromium."""

import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from anodect.comparison import compare, read_outputs, write_comparison
from anodect.figures import write_figures
from anodect.io import read_table
from anodect.report import fmt, rule_times, write_report

from test_comparison import OUTPUTS, build_run

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_training):
    return build_run(tmp_path_factory.mktemp("report_run"), tiny_training)


def make_report(run, folder: Path, truth: str | None) -> Path:
    result = compare(run["runs"], run["records"], run["tables"], run["crops"], truth, gallery_max=3)
    files = {name: str(folder / f"{name}.{'json' if name == 'metrics_json' else 'csv'}") for name in OUTPUTS}
    write_comparison(result, files)
    folders = {name: str(folder / name) for name in ("figures", "profiles", "gallery")}
    runs = {r.name: r for r in run["runs"]}
    write_figures(report=read_outputs(files), models=["patchcore", "rfdetr"],
                  cracks=read_table(run["tables"]["cracks"]), crop_paths=run["crops"], outputs=folders,
                  evidence_paths={m: r.outputs for m, r in runs.items()}, max_profiles=60)
    sheet = pd.DataFrame([{**r, "role": "inspect", "n_slices": 8} for r in run["records"]])
    sheet.to_csv(folder / "scans.tsv", sep="\t", index=False)
    bench = folder / "benchmarks" / "decide" / "patchcore"
    bench.mkdir(parents=True)
    (bench / "s.tsv").write_text("s\th:m:s\tmax_rss\n1.5\t0:00:01\t100.0\n")
    page = folder / "comparison.html"
    write_report(out_path=page, comparison_files=files, models=["patchcore", "rfdetr"],
                 batteries=run["tables"]["batteries"], folders=folders, scans=str(folder / "scans.tsv"),
                 qc=str(folder / "no_qc.tsv"), benchmarks=[str(bench / "s.tsv")],
                 benchmark_root=str(folder / "benchmarks"), model_files={},
                 config={"patchcore_threshold": 50.0, "名前": "値"},
                 pod=pod_study(folder / "pod") if truth else None)
    return page


def pod_study(folder: Path) -> dict:
    """A POD study's outputs from simulated hit/miss outcomes: PatchCore on a curve, RF-DETR finding none."""
    import json

    import numpy as np

    from anodect.pod.analysis import analyse
    from anodect.pod.plots import plot_curves

    rng = np.random.default_rng(0)
    n = 90
    cracks = pd.DataFrame({"crack_id": [f"c{k:04d}" for k in range(n)], "copy_id": "x", "source_scan": "s",
                           "usable": True, "noise_sigma": 2.0, "depth": rng.choice([4.0, 6, 9, 13, 19, 27, 40], n),
                           "width": rng.choice([1.0, 2, 3], n), "length": rng.choice([6.0, 10, 15, 22, 32], n)})
    cracks["depth_sigma"] = cracks["depth"] / 2.0
    p = 1 / (1 + np.exp(-(-8 + 3.0 * np.log(cracks["depth"]))))
    hits = {"patchcore": pd.DataFrame({"crack_id": cracks["crack_id"], "hit": rng.random(n) < p}),
            "rfdetr": pd.DataFrame({"crack_id": cracks["crack_id"], "hit": False})}
    fc = {"ng_cells": 0, "n_cells": 6, "flagged_crops": 2, "crops": 240, "copy_false_cracks": 0, "copies": 23,
          "threshold": 3.0, "evidence": "volume"}
    _, summary = analyse(cracks, hits, {m: fc for m in hits})
    folder.mkdir()
    (folder / "pod.json").write_text(json.dumps(summary), encoding="utf-8")
    plot_curves(summary, cracks, hits, folder / "figures")
    return {"json": str(folder / "pod.json"), "figures": str(folder / "figures")}


@pytest.fixture(scope="module")
def pages(run, tmp_path_factory, tiny_training):
    truth = str(tiny_training["root"] / "truth")
    return {"truth": make_report(run, tmp_path_factory.mktemp("with_truth"), truth),
            "none": make_report(run, tmp_path_factory.mktemp("no_truth"), None)}


def test_the_page_is_self_contained_and_says_what_it_shows(pages):
    html = pages["truth"].read_text(encoding="utf-8")
    # Nothing is fetched: every image is inline, no script, no stylesheet or font link.
    assert not re.search(r'(src|href)="(?!data:)', html) and "<script" not in html and "@import" not in html
    drawn = {name: len(list((pages["truth"].parent / name).glob("*.png"))) for name in ("figures", "profiles", "gallery")}
    assert drawn["figures"] == 4 and drawn["profiles"] == 2 and drawn["gallery"] >= 1
    pod_figures = len(list((pages["truth"].parent / "pod" / "figures").glob("pod_*.png")))
    assert pod_figures == 4
    assert html.count('src="data:image/png;base64,') == sum(drawn.values()) + pod_figures
    assert "Probability of detection" in html and "On these cells PatchCore finds 90 %" in html
    assert "On these cells RF-DETR could not be given a curve" in html and "no crack found" in html
    for text in ("Metrics against the ground truth", "Verdicts per battery", "Agreement of the two models",
                 "Cohen&#39;s kappa", "Disagreements", "Slice profiles per battery", "Time per rule", "decide",
                 "No slice was skipped", "名前: 値"):
        assert text in html, text
    none = pages["none"].read_text(encoding="utf-8")
    assert "No ground truth was given" in none and "Metrics against the ground truth" not in none
    # Without truth: no ROC, PR or F1, the same profiles and gallery.
    assert none.count('src="data:image/png;base64,') == 1 + drawn["profiles"] + drawn["gallery"]


def test_rule_times_sum_jobs_per_rule(tmp_path):
    for rel, s in (("a/x.tsv", 2.0), ("a/y.tsv", 3.0), ("b.tsv", 1.0)):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"s\th:m:s\tmax_rss\n{s}\t0:00:0{int(s)}\t10\n")
    (tmp_path / "bad.tsv").write_text("")
    times = rule_times([str(p) for p in sorted(tmp_path.rglob("*.tsv"))], tmp_path)
    assert times[["rule", "jobs", "total_s", "max_s"]].values.tolist() == [["a", 2, 5.0, 3.0], ["b", 1, 1.0, 1.0]]


def test_numbers_are_printed_plainly():
    assert (fmt(None), fmt(0.5), fmt(1.0), fmt(72.6993), fmt(486.0), fmt(7), fmt(True)) == (
        "–", "0.500", "1.000", "72.70", "486.0", "7", "yes")


def browser():
    """Headless Chromium through chromedriver (Debian packages chromium, chromium-driver)."""
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("ANODECT_REQUIRE_BROWSER"):
            pytest.fail("chromium and chromedriver are required (apt-get install chromium chromium-driver)")
        pytest.skip("chromium/chromedriver not installed (CI installs them and sets ANODECT_REQUIRE_BROWSER)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.mark.parametrize("mode", ["truth", "none"])
def test_chromium_opens_the_report_and_shows_every_figure(pages, mode):
    driver = browser()
    try:
        driver.get(pages[mode].as_uri())
        assert driver.title.startswith("Anode-crack inspection")
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        assert not errors, errors
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        expected = sum(len(list((pages[mode].parent / n).glob("*.png")))
                       for n in ("figures", "profiles", "gallery", "pod/figures"))
        assert len(images) == expected
        assert all(done and w > 100 and h > 100 for done, w, h in images), images
        # Nothing but the page itself was requested.
        requested = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('data:'))")
        assert requested == []
        # The POD figures (issue #28), drawn and shown like the others.
        pod = driver.execute_script("return Array.from(document.images).filter(i => i.alt.startsWith('POD against'))"
                                    ".map(i => [i.complete, i.naturalWidth])")
        assert len(pod) == (4 if mode == "truth" else 0) and all(done and w > 300 for done, w in pod), pod
        heading = driver.execute_script("return document.querySelector('h1').innerText")
        assert "PatchCore and RF-DETR" in heading
    finally:
        driver.quit()


def test_the_report_says_how_rfdetr_was_made_and_warns_when_it_is_untrained():
    from anodect.report import made_from
    from anodect.rfdetr.plugin import UNTRAINED

    history = [{"epoch": 0.0, "val/mAP_50": 0.1, "val/ema_mAP_50": 0.2}, {"epoch": 1.0, "val/mAP_50": 0.4}]
    coco = {"size": "nano", "train_seconds": 61.2, "device": "cuda", "dataset_id": "d1", "history": history,
            "start_weights": {"kind": "coco", "path": "/c/rf-detr-nano.pth", "sha256": "ab" * 32,
                              "note": "found in rfdetr's cache /c"}}
    text, warning = made_from("rfdetr", coco)
    assert warning is None
    assert "started from rfdetr's COCO release rf-detr-nano.pth (sha256 abababababab)" in text
    assert "trained 2 epochs in 61 s on cuda" in text and "best validation mAP@50 0.400 (plain weights, epoch 2)" in text
    # A model.json written before start weights were recorded: random when pretrain_weights was null.
    text, warning = made_from("rfdetr", {"size": "nano", "settings": {"pretrain_weights": None}, "history": []})
    assert "started from random weights" in text and warning == UNTRAINED
    assert made_from("rfdetr", {})[1] is None  # a user's checkpoint: nothing known, nothing claimed
    text, _ = made_from("patchcore", {"backbone": "resnet50", "layers": ["layer2"], "weights_id": "x.pth:1",
                                      "weights_source": "the file patchcore.weights_path (x.pth)"})
    assert "weights: the file patchcore.weights_path (x.pth)" in text
