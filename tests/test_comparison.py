"""The evaluation stage end to end on hand-made model outputs with known answers.

A perfect PatchCore (score and map exactly on the true cracks) and an all-NG RF-DETR
(a box over every ROI) go through the real decisions and summary, then ``compare``.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anodect.comparison import ModelRun, compare, metric_rows, read_outputs, write_comparison
from anodect.decisions import decide_scan, settings_from_params, summarise
from anodect.metrics import load_truth
from anodect.io import save_arrays, write_table

OUTPUTS = ("metrics_json", "metrics_csv", "slices", "crop_scores", "disagreements", "truth_boxes", "truth_cracks")
PARAMS = {"patchcore": {"threshold": 50.0, "min_consecutive_slices": 1, "max_gap": 0, "link_margin": 2,
                        "map_threshold": None, "min_region_area": 1},
          "rfdetr": {"threshold": 0.5, "min_consecutive_slices": 1, "max_gap": 0, "link_margin": 2, "nms_iou": 0.5}}


def build_run(tmp: Path, training: dict) -> dict:
    """Model outputs, decisions and summary tables of the tiny demo's two test scans."""
    records = training["records"]["inspect"]
    crops = dict(zip([r["scan_id"] for r in records], training["crops"]["inspect"]))
    truth = load_truth(str(training["root"] / "truth"), records, crops)
    outputs = {"patchcore": {}, "rfdetr": {}}
    tables = {"detections": [], "cracks": [], "slices": []}
    for rec in records:
        sid = rec["scan_id"]
        cs = training["sets"][sid]
        s, r, h, w = cs.inner().shape
        scores = np.ones((s, r), np.float32)
        maps = np.zeros((s, r, h, w), np.float16)
        preds = []
        for p, index in enumerate(cs.slice_indices):
            for k, (name, (x0, y0, x1, y1)) in enumerate(zip(cs.roi_names, cs.roi_boxes)):
                here = truth.boxes[(truth.boxes["scan_id"] == sid) & (truth.boxes["slice_index"] == index)
                                   & (truth.boxes["roi"] == name)]
                for b in here.itertuples():
                    scores[p, k] = 100.0
                    maps[p, k, b.y1 - y0:b.y2 - y0, b.x1 - x0:b.x2 - x0] = 100.0
                preds.append({"scan_id": sid, "slice_index": int(index), "roi": str(name), "x1": float(x0),
                              "y1": float(y0), "x2": float(x1), "y2": float(y1), "confidence": 0.9, "class_id": 0,
                              "model_id": "all-ng"})
        outputs["patchcore"][sid] = str(tmp / "scores" / f"{sid}.npz")
        save_arrays(outputs["patchcore"][sid], scan_id=sid, scores=scores, maps=maps, slice_indices=cs.slice_indices,
                    roi_names=cs.roi_names, roi_boxes=cs.roi_boxes, model_id="perfect")
        outputs["rfdetr"][sid] = str(tmp / "predictions" / f"{sid}.csv")
        write_table(outputs["rfdetr"][sid], pd.DataFrame(preds))
        slice_list = pd.DataFrame({"slice_index": cs.slice_indices, "path": cs.paths})
        for m in ("patchcore", "rfdetr"):
            out = tmp / "decisions" / m / sid
            decide_scan(m, rec, outputs[m][sid], crops[sid], slice_list, settings_from_params(PARAMS[m]), out)
            for name in tables:
                tables[name].append(str(out / f"{name}.csv"))
    summary = {name: str(tmp / "tables" / f"{name}.csv") for name in ("detections", "cracks", "slices", "batteries")}
    summarise(tables, records, ["patchcore", "rfdetr"], summary)
    runs = [ModelRun(m, outputs[m], PARAMS[m]) for m in ("patchcore", "rfdetr")]
    return {"runs": runs, "records": records, "crops": crops, "tables": summary, "truth": truth}


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_training):
    return build_run(tmp_path_factory.mktemp("comparison"), tiny_training)


def test_a_perfect_and_an_all_ng_model_get_their_known_scores(run):
    truth = run["truth"]
    n_ng = int(truth.verdicts().sum())
    assert 1 <= n_ng < len(truth.verdicts())  # both classes, or the test says nothing
    result = compare(run["runs"], run["records"], run["tables"], run["crops"],
                     str(Path(run["crops"][run["records"][0]["scan_id"]]).parents[1] / "truth"))
    pc, rf = result.metrics["models"]["patchcore"], result.metrics["models"]["rfdetr"]
    for level in ("slice", "slice_tracked"):
        assert (pc[level]["auroc"], pc[level]["ap"], pc[level]["precision"], pc[level]["recall"]) == (1, 1, 1, 1)
    assert (pc["crack"]["recall"], pc["crack"]["false_per_battery"]) == (1.0, 0.0)
    assert pc["crack"]["mean_iou"] == pytest.approx(1.0)
    assert (pc["battery"]["sensitivity"], pc["battery"]["specificity"]) == (1.0, 1.0)
    assert pc["boxes"]["ap"] == pytest.approx(1.0)
    assert pc["full_recall_threshold"] == 100.0  # every true crack has a run of 1 slice at 100

    prevalence = truth.slices["cracked"].mean()
    assert rf["slice"]["auroc"] == 0.5 and rf["slice"]["recall"] == 1.0
    assert rf["slice"]["precision"] == pytest.approx(prevalence)
    assert (rf["battery"]["sensitivity"], rf["battery"]["specificity"]) == (1.0, 0.0)
    assert rf["crack"]["recall"] == 1.0 and rf["crack"]["false_per_battery"] > 0

    (agree,) = result.metrics["agreement"]  # one pair of models
    n = len(truth.verdicts())
    assert agree["battery"] == {**agree["battery"], "both_ng": n_ng, "only_first": 0, "only_second": n - n_ng,
                                "both_ok": 0}
    assert agree["slice"]["only_second"] == int((~truth.slices["cracked"]).sum())
    # Every disagreeing slice is a slice without a crack that RF-DETR calls cracked.
    dis = result.disagreements
    assert len(dis) == agree["slice"]["only_second"] and not dis["truth"].any() and dis["rfdetr_anomaly"].all()
    assert 1 <= dis["gallery"].sum() <= len(dis)


def test_without_truth_only_the_models_are_compared(run, tmp_path):
    result = compare(run["runs"], run["records"], run["tables"], run["crops"], None)
    assert result.metrics["truth"] is None and result.truth is None
    pc = result.metrics["models"]["patchcore"]
    assert set(pc) == {"threshold", "min_consecutive_slices", "counts", "evidence", "threshold_source"}
    assert pc["counts"]["batteries_ng"] == int(run["truth"].verdicts().sum())
    assert result.metrics["agreement"][0]["battery"]["kappa"] is not None
    assert "truth" not in result.slices
    paths = {name: str(tmp_path / f"{name}.{'json' if name == 'metrics_json' else 'csv'}") for name in OUTPUTS}
    write_comparison(result, paths)
    back = read_outputs(paths)
    assert back["metrics"] == result.metrics and back["truth_boxes"].empty
    rows = metric_rows(result.metrics)
    assert set(rows["level"]) >= {"counts", "agreement_battery", "agreement_slice"}
