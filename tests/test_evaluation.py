"""Metrics on hand-made cases with known answers."""

import pandas as pd
import pytest

from anodect.evaluation import (agreement, battery_metrics, crack_metrics, iou_3d, match_cracks, run_score,
                                slice_metrics, threshold_for_full_recall, truth_from_demo)


def cracks(*rows):
    return pd.DataFrame(rows, columns=["battery_id", "roi", "first_slice", "last_slice", "x1", "y1", "x2", "y2"])


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
    scores = pd.DataFrame(rows, columns=["battery_id", "slice_index", "roi", "score"])
    assert run_score(scores[scores["battery_id"] == "B1"], 4) == 4
    assert threshold_for_full_recall(scores, pd.Series({"B1": True, "B2": False}), 4) == 4
    assert threshold_for_full_recall(scores, pd.Series({"B1": True, "B2": True}), 4) == 1
    assert threshold_for_full_recall(scores, pd.Series({"B1": False}), 4) is None


def test_agreement_counts_and_kappa():
    a = pd.Series({"B1": True, "B2": True, "B3": False, "B4": False})
    assert agreement(a, a)["kappa"] == 1.0
    r = agreement(a, pd.Series({"B1": True, "B2": False, "B3": True, "B4": False}))
    assert (r["both_ng"], r["only_first"], r["only_second"], r["both_ok"]) == (1, 1, 1, 1)
    assert r["kappa"] == pytest.approx(0.0)


def test_demo_truth_tables_read(tiny_demo):
    root, _ = tiny_demo
    truth = truth_from_demo(root / "truth", ["[T01] 検査セル", "[T02] 検査セル"])
    assert set(truth.slices["battery_id"]) == {"[T01] 検査セル", "[T02] 検査セル"}
    ng = truth.batteries()
    assert ng.sum() == len(set(truth.cracks["battery_id"])) >= 1
    assert set(truth.slices.loc[truth.slices["cracked"], "battery_id"]) == set(truth.cracks["battery_id"])
