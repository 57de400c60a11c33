"""Decisions: per-crop evidence of each model, cracks across slices, tables and the original CSVs."""

import numpy as np
import pandas as pd
import pytest

from anodect.evidence import BoxTable, ScoreMaps
from anodect.decisions import (CRACK_COLUMNS, DETECTION_COLUMNS, SLICE_COLUMNS, DecisionSettings, battery_table,
                               decide)
from anodect.io import save_arrays
from anodect.render import ai_results
from anodect.tracking import TrackingSettings

SCAN = {"scan_id": "b1_z-00000000", "battery_id": "[B1] cell", "axis": "[Z軸]"}
SLICES = list(range(205, 215))
PATHS = {s: f"/data/[B1] cell/[Z軸]/[B1] cell_負極_{s:04d}.tif" for s in SLICES}
TRACK = TrackingSettings(min_consecutive_slices=4, max_gap=0, link_margin=2)


def boxes(rows):
    """rows: (slice, roi, x1, y1, x2, y2, score)."""
    table = pd.DataFrame(rows, columns=["slice_index", "roi", "x1", "y1", "x2", "y2", "score"])
    table["crop_score"] = table["score"]
    return table


def test_a_run_of_four_slices_is_a_crack_and_a_run_of_three_is_not():
    rows = [(s, "left", 150, 500, 170, 510, 0.9) for s in (205, 206, 207)]
    rows += [(s, "right", 750, 500, 770, 510, 0.95) for s in (209, 210, 211, 212)]
    d = decide("rfdetr", SCAN, boxes(rows), SLICES, PATHS, TRACK)
    assert list(d.detections.columns) == DETECTION_COLUMNS and list(d.cracks.columns) == CRACK_COLUMNS
    assert list(d.slices.columns) == SLICE_COLUMNS
    assert d.verdict == "NG" and len(d.cracks) == 1
    crack = d.cracks.iloc[0]
    assert (crack["roi"], crack["first_slice"], crack["last_slice"], crack["n_slices"]) == ("right", 209, 212, 4)
    assert (crack["x1"], crack["y1"], crack["x2"], crack["y2"]) == (750, 500, 770, 510)
    assert crack["peak_score"] == pytest.approx(0.95) and crack["battery_id"] == "[B1] cell"
    anomaly = d.slices.set_index("slice_index")["anomaly"]
    assert sorted(anomaly[anomaly].index) == [209, 210, 211, 212]
    flagged = d.slices.set_index("slice_index")["flagged"]
    assert sorted(flagged[flagged].index) == [205, 206, 207, 209, 210, 211, 212]
    # The short run's boxes are kept as detections, without a crack id.
    assert (d.detections.loc[d.detections["roi"] == "left", "crack_id"] == "").all()
    assert (d.detections.loc[d.detections["roi"] == "right", "crack_id"] != "").all()


def test_a_missing_slice_breaks_a_crack_unless_max_gap_allows_it_and_never_pads_one():
    rows = [(s, "left", 150, 500, 170, 510, 0.9) for s in (205, 206, 208, 209)]
    observed = [s for s in SLICES if s != 207]  # 207 unreadable: not observed, the crack not seen there
    d = decide("rfdetr", SCAN, boxes(rows), observed, PATHS, TRACK)
    assert d.verdict == "OK" and 207 not in set(d.slices["slice_index"])
    d = decide("rfdetr", SCAN, boxes(rows), observed, PATHS, TrackingSettings(4, max_gap=1, link_margin=2))
    assert len(d.cracks) == 1 and d.cracks.iloc[0]["n_slices"] == 4
    assert 207 not in set(d.slices["slice_index"])
    # Observed but without a box, 207 is a gap: max_gap 0 splits the run.
    d = decide("rfdetr", SCAN, boxes(rows), SLICES, PATHS, TRACK)
    assert d.verdict == "OK"
    d = decide("rfdetr", SCAN, boxes(rows), SLICES, PATHS, TrackingSettings(4, max_gap=1, link_margin=2))
    assert d.verdict == "NG" and set(d.slices.loc[d.slices["anomaly"], "slice_index"]) == {205, 206, 207, 208, 209}


def test_two_cracks_in_one_roi_and_a_shifting_box():
    rows = [(s, "left", 130, 460, 150, 470, 0.9) for s in range(205, 210)]
    rows += [(s, "left", 200 + 3 * (s - 205), 540, 220 + 3 * (s - 205), 550, 0.85) for s in range(205, 211)]
    d = decide("rfdetr", SCAN, boxes(rows), SLICES, PATHS, TRACK)
    assert sorted(d.cracks["n_slices"]) == [5, 6]
    moving = d.cracks[d.cracks["n_slices"] == 6].iloc[0]
    assert (moving["x1"], moving["x2"]) == (200, 235)


def test_rfdetr_threshold_is_strict_and_nms_merges_duplicates():
    preds = pd.DataFrame({
        "slice_index": [205, 205, 205, 205], "roi": ["left"] * 4,
        "x1": [10.0, 11.0, 60.0, 10.0], "y1": [10.0, 10.0, 10.0, 40.0],
        "x2": [30.0, 31.0, 80.0, 30.0], "y2": [20.0, 20.0, 20.0, 50.0],
        "confidence": [0.9, 0.85, 0.95, 0.8], "class_id": [0, 1, 0, 0]})
    preds = preds.assign(scan_id="s", model_id="m")
    kept = BoxTable(preds).flagged(DecisionSettings(threshold=0.8, nms_iou=0.5))
    # 0.8 is not above 0.8; the 0.85 box overlaps the 0.9 one (the original kept both, as two classes).
    assert sorted(kept["score"]) == pytest.approx([0.9, 0.95])
    assert np.allclose(kept["crop_score"], 0.95)


def test_patchcore_flags_by_crop_score_and_never_drops_a_flagged_crop(tmp_path):
    maps = np.zeros((2, 2, 32, 42), np.float16)
    maps[0, 0, 10:13, 5:20] = 5.0  # a clear region
    maps[1, 1] = 0.5  # flat map: no region above the map threshold
    maps[1, 1, 20, 30] = 1.0
    save_arrays(tmp_path / "s.npz", scan_id=np.array("s"), scores=np.array([[6.0, 1.0], [2.0, 4.0]], np.float32),
                maps=maps, slice_indices=np.array([205, 206]), roi_names=np.array(["left", "right"]),
                roi_boxes=np.array([[100, 400, 142, 432], [700, 400, 742, 432]]), model_id=np.array("m"))
    evidence = ScoreMaps.read(tmp_path / "s.npz", "slice")
    found = evidence.flagged(DecisionSettings(threshold=3.0))
    assert evidence.slice_indices.tolist() == [205, 206]
    assert found[["slice_index", "roi"]].values.tolist() == [[205, "left"], [206, "right"]]
    first = found.iloc[0]
    assert (first["x1"], first["y1"], first["x2"], first["y2"]) == (105, 410, 120, 413)  # corners of 10:13, 5:20
    assert first["score"] == pytest.approx(6.0)
    last = found.iloc[1]
    assert last["x1"] <= 730 <= last["x2"] and last["y1"] <= 420 <= last["y2"]


def test_ai_results_csvs_have_the_original_headers_byte_for_byte():
    rows = [(s, "right", 750.7, 500.2, 770.9, 510.0, 0.95) for s in (209, 210, 211, 212)]
    d = decide("rfdetr", SCAN, boxes(rows), SLICES, PATHS, TRACK)
    files = ai_results("[B1] cell", d.slices, d.detections)
    assert sorted(files) == ["B1 cell_detected.csv", "B1 cell_log.csv"]
    log = files["B1 cell_log.csv"].decode("utf-8")
    assert log.startswith("Name,Result,NG_countL,NG_countP,NG_countE\r\n")
    assert log.splitlines()[1] == "[B1] cell_負極_0209.png,NG,1,,"
    assert len(log.splitlines()) == 5
    det = files["B1 cell_detected.csv"].decode("utf-8")
    assert det.startswith("file_name,xmin,ymin,xmax,ymax,L,P,E\r\n")
    # Inclusive pixel bounds, as the original's PatchCore wrote them: pixels 750..770 and 500..509.
    assert det.splitlines()[1] == "[B1] cell_負極_0209.png,750,500,770,509,1,,"


def test_battery_table_gives_both_verdicts():
    cracks = pd.DataFrame({"model": ["patchcore"], "scan_id": ["b1_z-00000000"]})
    table = battery_table([SCAN, {**SCAN, "scan_id": "b2_z-00000000"}], cracks, ["patchcore", "rfdetr"])
    assert table[["patchcore_verdict", "rfdetr_verdict", "agree"]].values.tolist() == [
        ["NG", "OK", False], ["OK", "OK", True]]


def test_a_scan_without_volume_evidence_is_no_data_on_it_and_judged_on_raw_maps(tmp_path):
    """Too few slices for volume evidence (NaN volume scores): never OK, NO DATA; raw evidence still judges."""
    from anodect.crops import CropSet
    from anodect.decisions import decide_scan

    idx = np.array([205, 206, 207, 208])
    maps = np.zeros((4, 1, 32, 42), np.float16)
    maps[:, 0, 10:13, 5:20] = 5.0
    save_arrays(tmp_path / "s.npz", scan_id=np.array("s"), scores=np.full((4, 1), 6.0, np.float32), maps=maps,
                volume_scores=np.full((4, 1), np.nan, np.float32), volume_maps=np.full(maps.shape, np.nan, np.float16),
                slice_indices=idx, roi_names=np.array(["left"]), roi_boxes=np.array([[100, 400, 142, 432]]),
                model_id=np.array("m"))
    CropSet("s", np.zeros((4, 1, 32, 42), np.uint8), idx, np.array([f"/x/{i}.tif" for i in idx]),
            np.array(["left"]), np.array([[100, 400, 142, 432]]), (0.0, 1.0), 0).save(tmp_path / "c.npz")
    slices = pd.DataFrame({"slice_index": idx, "path": [f"/x/{i}.tif" for i in idx]})
    scan = {"scan_id": "s", "battery_id": "B", "axis": ""}
    verdicts = {}
    for evidence in ("volume", "slice"):
        settings = DecisionSettings(threshold=3.0 if evidence == "slice" else 2.0, tracking=TRACK, evidence=evidence)
        d = decide_scan("patchcore", scan, tmp_path / "s.npz", tmp_path / "c.npz", slices, settings,
                        tmp_path / evidence)
        verdicts[evidence] = battery_table([scan], d.cracks, ["patchcore"], d.slices).iloc[0]["patchcore_verdict"]
    assert verdicts == {"volume": "NO DATA", "slice": "NG"}


def test_a_scan_with_fewer_usable_slices_than_a_crack_needs_is_no_data(tmp_path):
    """3 usable slices with min_consecutive_slices 4: a crack can never be confirmed, so the scan
    is NO DATA (with its count of usable slices) in the battery table and the report, never OK."""
    from anodect.report import _battery_table

    short = {**SCAN, "scan_id": "short"}
    rows = [(s, "left", 700, 500, 720, 520, 0.9) for s in (205, 206, 207)]
    d_short = decide("rfdetr", short, boxes(rows), [205, 206, 207], PATHS, TRACK)
    d_full = decide("rfdetr", SCAN, boxes(rows[:1]), SLICES, PATHS, TRACK)
    slices = pd.concat([d_short.slices, d_full.slices])
    cracks = pd.concat([d_short.cracks, d_full.cracks])
    table = battery_table([short, SCAN], cracks, ["rfdetr"], slices, min_slices=4)
    assert table["rfdetr_verdict"].tolist() == ["NO DATA", "OK"]
    assert table["rfdetr_slices"].tolist() == [3, len(SLICES)]
    scores = pd.DataFrame({"scan_id": ["short", SCAN["scan_id"]], "rfdetr_score": [0.9, 0.9]})
    shown = _battery_table(table, ["rfdetr"], None, scores)
    assert "NO DATA (3 slices judged)" in shown["rows"][0]["cells"]


def test_a_slice_without_volume_evidence_is_not_counted_as_judged(tmp_path):
    """Issue #30: a slice alone between gaps gets no volume evidence (NaN); the battery table's
    count of usable slices leaves it out, and it never joins a crack."""
    from anodect.crops import CropSet
    from anodect.decisions import decide_scan

    idx = np.array([200, 202, 203, 204, 205, 206])
    maps = np.zeros((6, 1, 32, 42), np.float16)
    vmaps = maps.copy()
    vmaps[:, 0, 10:13, 5:20] = 5.0
    vscores = np.full((6, 1), 5.0, np.float32)
    vmaps[0], vscores[0] = np.nan, np.nan
    save_arrays(tmp_path / "s.npz", scan_id=np.array("s"), scores=np.ones((6, 1), np.float32), maps=maps,
                volume_scores=vscores, volume_maps=vmaps, slice_indices=idx, roi_names=np.array(["left"]),
                roi_boxes=np.array([[100, 400, 142, 432]]), model_id=np.array("m"))
    CropSet("s", np.zeros((6, 1, 32, 42), np.uint8), idx, np.array([f"/x/{i}.tif" for i in idx]),
            np.array(["left"]), np.array([[100, 400, 142, 432]]), (0.0, 1.0), 0).save(tmp_path / "c.npz")
    slices = pd.DataFrame({"slice_index": idx, "path": [f"/x/{i}.tif" for i in idx]})
    scan = {"scan_id": "s", "battery_id": "B", "axis": ""}
    settings = DecisionSettings(threshold=2.0, tracking=TRACK, evidence="volume")
    d = decide_scan("patchcore", scan, tmp_path / "s.npz", tmp_path / "c.npz", slices, settings, tmp_path / "out")
    row = battery_table([scan], d.cracks, ["patchcore"], d.slices).iloc[0]
    assert row["patchcore_slices"] == 5
    assert row["patchcore_verdict"] == "NG"
    assert d.cracks.iloc[0]["first_slice"] == 202
