"""Issue #28: the probability-of-detection study."""

import math

import numpy as np
import pandas as pd
import pytest

from anodect.pod.analysis import analyse, false_call_rate, fit_curve, separation


def _hit_miss(a90, slope, sizes, seed):
    """Outcomes of a known logistic POD curve in log size with POD(a90) = 0.9."""
    rng = np.random.default_rng(seed)
    b0 = math.log(9) - slope * math.log(a90)
    p = 1 / (1 + np.exp(-(b0 + slope * np.log(sizes))))
    return (rng.random(len(sizes)) < p).astype(int)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_known_curve_is_recovered_within_its_bound(seed):
    sizes = np.resize(np.array([3.0, 4.5, 6.5, 9.5, 14.0, 20.0, 30.0]), 120)
    hits = _hit_miss(12.0, 3.0, sizes, seed)
    fit = fit_curve(sizes, hits)
    assert fit["status"] == "fit" and fit["method"] == "likelihood ratio"
    assert fit["a90"] < fit["a90_95"]
    assert fit["a90"] / 1.6 < 12.0 < fit["a90_95"]  # the true a90 lies below the upper bound, near the estimate
    # The curve's lower bound reaches 90 % at a90/95.
    lower = dict(zip(fit["curve"]["lower_pod"], fit["curve"]["lower_size"]))
    assert all(a is None or a >= b for a, b in zip(fit["curve"]["lower_size"][1:], fit["curve"]["lower_size"]))
    assert min(lower) < 0.9 < max(lower)


def test_the_bound_covers_the_truth_in_most_repeats():
    """One-sided 95 %: over 40 simulated studies the bound falls below the true a90 rarely."""
    sizes = np.resize(np.array([3.0, 4.5, 6.5, 9.5, 14.0, 20.0, 30.0]), 90)
    below = sum(fit_curve(sizes, _hit_miss(12.0, 3.0, sizes, s), band=False)["a90_95"] < 12.0 for s in range(40))
    assert below <= 6  # 2 expected; binomial(40, 0.05) exceeds 6 with probability < 0.5 %


def test_separated_data_are_reported_as_bounds_not_fits():
    sizes = np.array([2.0, 3, 4, 5, 6, 8])
    assert fit_curve(sizes, np.ones(6))["status"] == "all"
    assert "at most 2" in fit_curve(sizes, np.ones(6))["bound"]
    assert fit_curve(sizes, np.zeros(6))["status"] == "none"
    split = fit_curve(sizes, np.array([0, 0, 0, 1, 1, 1]))
    assert split["status"] == "split" and split["a90"] is None and "between" in split["bound"]
    assert separation(np.array([0, 1, 0, 1]), np.log(sizes[:4])) is None


def test_false_calls_carry_a_clopper_pearson_bound():
    zero = false_call_rate(0, 20)
    assert zero["rate"] == 0 and zero["upper95"] == pytest.approx(1 - 0.05 ** (1 / 20), rel=1e-6)
    one = false_call_rate(1, 20)
    assert one["rate"] == 0.05 and one["upper95"] > zero["upper95"]
    assert false_call_rate(0, 0)["upper95"] is None


def test_analyse_fits_every_predictor_and_depth_with_length():
    rng = np.random.default_rng(0)
    n = 120
    cracks = pd.DataFrame({"crack_id": [f"c{k:04d}" for k in range(n)], "copy_id": "x", "source_scan": "s",
                           "usable": True, "noise_sigma": 3.0,
                           "depth": rng.choice([4.0, 6, 9, 13, 19, 27, 40], n), "width": rng.choice([1.0, 2, 3], n),
                           "length": rng.choice([6.0, 10, 15, 22, 32], n)})
    cracks["depth_sigma"] = cracks["depth"] / 3.0
    p = 1 / (1 + np.exp(-(-9 + 2.5 * np.log(cracks["depth"]) + 1.0 * np.log(cracks["length"]))))
    hits = pd.DataFrame({"crack_id": cracks["crack_id"], "hit": rng.random(n) < p})
    fc = {"ng_cells": 1, "n_cells": 6, "flagged_crops": 3, "crops": 300, "copy_false_cracks": 0, "copies": 20,
          "threshold": 3.0, "evidence": "volume"}
    table, summary = analyse(cracks, {"m": hits}, {"m": fc})
    assert set(table["predictor"]) == {"depth", "depth_sigma", "width", "length"}
    depth = summary["models"]["m"]["curves"]["depth"]
    assert depth["status"] == "fit"
    # depth in sigma units is the same curve, scaled by the scan's sigma
    assert summary["models"]["m"]["curves"]["depth_sigma"]["a90"] == pytest.approx(depth["a90"] / 3.0, rel=1e-3)
    joint = summary["models"]["m"]["joint_depth_length"]
    assert joint["status"] == "fit" and joint["b_log_depth"] > 0 and joint["b_log_length"] > 0
    assert summary["models"]["m"]["false_calls"]["cell"]["events"] == 1


def test_an_a90_beyond_the_sizes_tried_claims_no_bound():
    sizes = np.resize(np.array([3.0, 4.5, 6.5, 9.5]), 80)
    fit = fit_curve(sizes, _hit_miss(60.0, 1.5, sizes, 0))
    assert fit["status"] == "fit" and fit["a90"] > 9.5
    assert fit["a90_95"] == math.inf and "beyond" in fit["method"]


def test_the_noise_estimate_sees_the_noise_not_the_layers():
    from anodect.pod.design import noise_sigma

    rng = np.random.default_rng(0)
    y = np.arange(64)[:, None]
    layers = np.where((y // 4) % 2 == 0, 180.0, 70.0) * np.ones((1, 80))  # sharp bright/dark layers
    for sigma in (1.2, 1.4, 2.0, 5.0):
        crops = np.clip(layers + rng.normal(0, sigma, (6, 2, 64, 80)), 0, 255)
        assert noise_sigma(crops) == pytest.approx(sigma, rel=0.2)
        # 8-bit crops: no steps of a quarter sigma (rounding adds 1/12 grey level squared)
        assert noise_sigma(np.rint(crops).astype(np.uint8)) == pytest.approx(np.hypot(sigma, 0.29), rel=0.1)


def test_the_design_is_balanced_seeded_and_every_crack_is_in_its_roi():
    from anodect.crops import CropSet
    from anodect.pod.design import PodSettings, blocks, plan, render_copy

    assert blocks(20, 6, 3) == [1, 10] and blocks(26, 6, 3) == [1, 10, 19] and blocks(8, 4, 3) == [1]
    rng = np.random.default_rng(1)
    y = np.arange(96)[:, None]
    image = np.where((y // 5) % 2 == 0, 200.0, 60.0) * np.ones((1, 112))
    crops = np.clip(image + rng.normal(0, 3, (20, 2, 96, 112)), 0, 255).astype(np.uint8)
    src = CropSet("n01-00000000", crops, np.arange(100, 120), np.array([""] * 20), np.array(["left", "right"]),
                  np.array([[16, 16, 96, 80], [200, 16, 280, 80]]), (0.0, 1.0), context=16)
    settings = PodSettings(cracks=12, depth=(10.0, 30.0), width=(2.0,), length=(12.0, 20.0), slices=(6,))
    copies = plan([src], settings)
    assert [len(c.cracks) for c in copies] == [4, 4, 4]  # 2 blocks x 2 ROIs per copy
    again = plan([src], settings)
    assert [c.cracks for c in copies] == [c.cracks for c in again]
    depths = [crack.depth for c in copies for _, _, crack in c.cracks]
    assert sorted(depths) == [10.0] * 6 + [30.0] * 6
    cracked, footprint, records = render_copy(copies[0], sigma=3.0)
    assert cracked.scan_id == copies[0].copy_id and (cracked.slice_indices == src.slice_indices).all()
    for rec in records:
        own = footprint[:, rec["roi_index"]] == records.index(rec) + 1
        assert own.any() and rec["footprint_px"] == own.sum()
        # only the crack's slices, only inside the ROI (the crop less its 16 px of context)
        assert set(np.flatnonzero(own.any(axis=(1, 2)))) <= set(range(rec["first_pos"], rec["last_pos"] + 1))
        assert not own[:, :16].any() and not own[:, :, :16].any() and not own[:, -16:].any()
        assert 0 < rec["depth"] <= rec["depth_nominal"] + 1 and rec["depth_sigma"] == pytest.approx(rec["depth"] / 3)
    # the clean scan is untouched and the cracked copy differs only in the footprint's surroundings
    changed = cracked.crops != src.crops
    assert changed.any() and not changed[:, :, :16].any()
    # The second generator (the demo's physics): the same capsules, another darkening, depths near nominal.
    pulled, pulled_footprint, pulled_records = render_copy(copies[0], sigma=3.0, renderer="pull")
    assert (pulled.crops != cracked.crops).any()
    for rec in pulled_records:
        assert rec["usable"] and 0.4 * rec["depth_nominal"] <= rec["depth"] <= 1.6 * rec["depth_nominal"]
    with pytest.raises(ValueError, match="pod.renderer"):
        PodSettings(renderer="paint")


def test_a_flat_response_is_no_trend_not_an_a90():
    sizes = np.resize(np.array([6.0, 10, 15, 22, 32]), 90)
    hits = (np.random.default_rng(3).random(90) < 0.6).astype(int)
    fit = fit_curve(sizes, hits)
    assert fit["status"] == "no trend" and fit["a90"] is None and "no rise" in fit["bound"]
