"""Metrics on hand-made cases with known answers."""

import pandas as pd
import pytest

from anodect.metrics import (agreement, battery_metrics, coco_box_ap, crack_metrics, iou_3d, load_truth,
                                match_cracks, run_score, slice_metrics, threshold_for_full_recall, truth_from_tables)


def cracks(*rows):
    return pd.DataFrame(rows, columns=["scan_id", "roi", "first_slice", "last_slice", "x1", "y1", "x2", "y2"])


TRUTH = cracks(("B1", "left", 210, 215, 100, 50, 120, 60), ("B2", "right", 220, 223, 700, 40, 730, 48))
BATTERIES = pd.Series({"B1": True, "B2": True, "B3": False, "B4": False})


def test_a_perfect_model():
    labels = [0, 0, 1, 1, 0, 1]
    m = slice_metrics(labels, [0.1, 0.2, 0.9, 0.8, 0.3, 0.7], flagged=labels)
    assert (m["auroc"], m["ap"], m["precision"], m["recall"], m["f1"]) == (1.0, 1.0, 1.0, 1.0, 1.0)
    c = crack_metrics(TRUTH.copy(), TRUTH, n_batteries=4)
    assert (c["recall"], c["false_per_battery"], c["mean_iou"]) == (1.0, 0.0, 1.0)
    b = battery_metrics(BATTERIES, BATTERIES)
    assert (b["sensitivity"], b["specificity"], b["tp"], b["tn"]) == (1.0, 1.0, 2, 2)


def test_an_all_ng_model():
    labels = [0, 0, 1, 1]
    m = slice_metrics(labels, [1, 1, 1, 1], flagged=[1, 1, 1, 1])
    assert m["auroc"] == 0.5 and m["ap"] == 0.5 and m["recall"] == 1.0 and m["precision"] == 0.5
    b = battery_metrics(BATTERIES, pd.Series(True, index=BATTERIES.index))
    assert (b["sensitivity"], b["specificity"], b["fp"]) == (1.0, 0.0, 2)


def test_a_crack_found_one_slice_off_still_matches_with_lower_iou():
    shifted = cracks(("B1", "left", 211, 216, 100, 50, 120, 60))
    m = match_cracks(shifted, TRUTH)
    assert m[["predicted", "truth"]].values.tolist() == [[0, 0]]
    assert m["iou"].iloc[0] == pytest.approx(5 / 7)  # 5 shared slices of 7
    wrong_roi = cracks(("B1", "right", 210, 215, 100, 50, 120, 60))
    assert match_cracks(wrong_roi, TRUTH).empty
    c = crack_metrics(pd.concat([shifted, wrong_roi], ignore_index=True), TRUTH, n_batteries=4)
    assert (c["n_matched"], c["recall"], c["false_per_battery"]) == (1, 0.5, 0.25)


def test_iou_3d_counts_inclusive_bounds():
    assert iou_3d((0, 0, 9, 9, 1, 1), (0, 0, 9, 9, 1, 1)) == 1.0
    assert iou_3d((0, 0, 9, 9, 1, 2), (0, 0, 9, 9, 2, 3)) == pytest.approx(1 / 3)
    assert iou_3d((0, 0, 9, 9, 1, 1), (10, 0, 19, 9, 1, 1)) == 0.0


def test_threshold_for_full_recall_follows_the_run_rule():
    rows = []
    for s, v in zip(range(205, 211), [1, 5, 6, 4, 7, 1]):  # best run of 4: 5, 6, 4, 7 -> 4
        rows.append(("B1", s, "left", v))
    for s, v in zip(range(205, 211), [9, 9, 9, 1, 9, 9]):  # no run of 4 above 1 -> 1
        rows.append(("B2", s, "left", v))
    scores = pd.DataFrame(rows, columns=["scan_id", "slice_index", "roi", "score"])
    assert run_score(scores[scores["scan_id"] == "B1"], 4) == 4
    assert threshold_for_full_recall(scores, pd.Series({"B1": True, "B2": False}), 4) == 4
    assert threshold_for_full_recall(scores, pd.Series({"B1": True, "B2": True}), 4) == 1
    assert threshold_for_full_recall(scores, pd.Series({"B1": False}), 4) is None


def test_agreement_counts_and_kappa():
    a = pd.Series({"B1": True, "B2": True, "B3": False, "B4": False})
    assert agreement(a, a)["kappa"] == 1.0
    r = agreement(a, pd.Series({"B1": True, "B2": False, "B3": True, "B4": False}))
    assert (r["both_ng"], r["only_first"], r["only_second"], r["both_ok"]) == (1, 1, 1, 1)
    assert r["kappa"] == pytest.approx(0.0)


def test_coco_box_ap_on_known_boxes():
    images = pd.DataFrame({"scan_id": ["S"] * 3, "slice_index": [1, 2, 3]})
    truth = pd.DataFrame([("S", 1, "left", 10, 10, 20, 14), ("S", 2, "left", 30, 5, 40, 9)],
                         columns=["scan_id", "slice_index", "roi", "x1", "y1", "x2", "y2"])
    perfect = truth.assign(score=0.9)
    assert coco_box_ap(truth, perfect, images)["ap"] == pytest.approx(1.0)
    # One pixel short on each side (what mixing inclusive and corner boxes did): a match at IoU 0.5 only.
    short = coco_box_ap(truth, perfect.assign(x2=perfect["x2"] - 1, y2=perfect["y2"] - 1), images)
    assert short["ap50"] == pytest.approx(1.0) and short["ap"] < 1.0
    far = perfect.assign(x1=perfect["x1"] + 100, x2=perfect["x2"] + 100)
    assert coco_box_ap(truth, far, images)["ap50"] == 0.0
    # A false box on a clean slice ranked above the true ones halves the precision at the first recall step.
    noisy = pd.concat([perfect, pd.DataFrame([("S", 3, "left", 0, 0, 5, 5, 0.95)], columns=perfect.columns)])
    assert coco_box_ap(truth, noisy, images)["ap50"] < 1.0
    assert coco_box_ap(truth.iloc[:0], perfect, images)["ap"] is None


def _inspected(tiny_training):
    records = tiny_training["records"]["inspect"]
    crops = dict(zip([r["scan_id"] for r in records], tiny_training["crops"]["inspect"]))
    return records, crops


def test_truth_tables_and_via_annotations_give_the_same_truth(tiny_training):
    records, crops = _inspected(tiny_training)
    root = tiny_training["root"]
    tables = load_truth(str(root / "truth"), records, crops)
    via = load_truth(str(root / "annotations" / "test"), records, crops)
    assert tables.scan_ids() == via.scan_ids() == sorted(crops)
    cracked = lambda t: set(map(tuple, t.slices.loc[t.slices["cracked"], ["scan_id", "slice_index"]].values))  # noqa: E731
    assert cracked(tables) == cracked(via) and cracked(tables)
    assert len(tables.cracks) == len(via.cracks) >= 1
    assert tables.verdicts().equals(via.verdicts())
    # The boxes agree to the rasterisation of the polygons (a pixel).
    merged = tables.boxes.merge(via.boxes, on=["scan_id", "slice_index", "roi"], suffixes=("_t", "_v"))
    assert len(merged) == len(tables.boxes)
    for k in ("x1", "y1", "x2", "y2"):
        assert (merged[f"{k}_t"] - merged[f"{k}_v"]).abs().max() <= 1


def test_truth_tables_leave_out_unlisted_batteries(tiny_training):
    records, crops = _inspected(tiny_training)
    stranger = {**records[0], "scan_id": "zz_z-00000000", "battery_id": "[ZZ] unknown"}
    truth = truth_from_tables(tiny_training["root"] / "truth", [*records, stranger],
                              {r["scan_id"]: list(range(204, 212)) for r in records})
    assert "zz_z-00000000" not in truth.scan_ids() and "[ZZ] unknown" in truth.notes[0]
    assert load_truth(None, records, crops) is None


def test_a_cell_whose_truth_file_cannot_be_read_is_left_out_not_scored_crack_free(tiny_training, tmp_path):
    import json
    import shutil

    records, crops = _inspected(tiny_training)
    folder = tmp_path / "ann"
    shutil.copytree(tiny_training["root"] / "annotations" / "test", folder)
    whole = load_truth(str(folder), records, crops)
    cracked = sorted(s for s, ng in whole.verdicts().items() if ng)
    assert cracked and whole.unreadable == []
    battery = next(r["battery_id"] for r in records if r["scan_id"] == cracked[0])
    (next((folder / battery).glob("*.json"))).write_text(json.dumps({"a": 1}), encoding="utf-8")
    truth = load_truth(str(folder), records, crops)
    assert truth.unreadable == [cracked[0]]
    assert cracked[0] not in truth.scan_ids() and cracked[0] not in truth.verdicts().index
    assert sorted(truth.scan_ids()) == sorted(set(whole.scan_ids()) - {cracked[0]})
    assert any(n.startswith(f"truth unreadable: {cracked[0]}") for n in truth.notes)
