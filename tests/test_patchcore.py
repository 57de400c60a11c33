import json

import numpy as np
import pandas as pd
import pytest

from anodect.config import Roi
from anodect.crops import extract_crops
from anodect.discovery import DiscoverySettings, discover, slices_table
from anodect.demo.generator import generate
from anodect.patchcore.model import PatchCore, PatchCoreSettings
from anodect.patchcore.backbones import WeightsNotFound, build_backbone
from anodect.patchcore.coreset import greedy_coreset
from anodect.patchcore.stage import Scorer, score_scan

from conftest import tiny_settings

HALF_ROIS = [Roi("left", 64, 224, 148, 288), Roi("right", 366, 224, 450, 288)]
WINDOW = {"mode": "auto", "low_percentile": 0.5, "high_percentile": 99.5}


def test_coreset_picks_far_apart_points_and_respects_the_fraction():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 100, (5, 16))
    points = np.concatenate([c + rng.normal(0, 0.1, (200, 16)) for c in centres]).astype(np.float32)
    picked = greedy_coreset(points, fraction=5 / 1000, projection_dim=8, seed=1)
    assert len(picked) == 5
    assert sorted(set(picked // 200)) == [0, 1, 2, 3, 4]  # one per cluster
    assert len(greedy_coreset(points, 0.1, seed=1)) == 100
    assert len(greedy_coreset(points, 1.0)) == 1000
    np.testing.assert_array_equal(greedy_coreset(points, 0.05, seed=3), greedy_coreset(points, 0.05, seed=3))
    with pytest.raises(ValueError, match="fraction"):
        greedy_coreset(points, 0.0)


def test_coreset_keeps_rare_patterns_that_a_random_subset_loses():
    rng = np.random.default_rng(2)
    common = rng.normal(0, 1, (2900, 32))
    rare = np.concatenate([rng.normal(0, 1, 32) * 30 + rng.normal(0, 1, (10, 32)) for _ in range(10)])
    points = np.concatenate([common, rare]).astype(np.float32)
    idx = greedy_coreset(points, 0.02, projection_dim=16, seed=0)
    rand = np.random.default_rng(0).choice(len(points), len(idx), replace=False)

    def covering_radius(sel):
        d = ((points[:, None, :] - points[sel][None]) ** 2).sum(-1)
        return d.min(1).max()

    assert len({(i - 2900) // 10 for i in idx if i >= 2900}) == 10
    assert covering_radius(idx) < 0.5 * covering_radius(rand)


@pytest.fixture(scope="module")
def half_demo(tmp_path_factory):
    """A half-size demo: 512x512 slices, crops and truth, enough for PatchCore to learn."""
    out = tmp_path_factory.mktemp("half")
    settings = tiny_settings(out, image_size=512, n_train_normal=3, n_train_defect=0, n_test=2,
                             test_defect_fraction=1.0, first_slice=204, last_slice=209, crack_slices=(3, 5),
                             contrast=(0.8, 1.0), width=(4.0, 5.0), length=(40.0, 60.0), cracks_per_cell=(1, 1))
    generate(out, settings, HALF_ROIS, crack_range=(204, 209))
    crops = {}
    for split, role in (("train_normal", "train_normal"), ("test", "inspect")):
        scans = discover(out / "scans" / split, role, DiscoverySettings(), None)
        for scan in scans:
            crop_set, _ = extract_crops(scan.scan_id, slices_table([scan]), HALF_ROIS, WINDOW, context=8)
            crops[(split, scan.battery_id)] = crop_set
    return out, crops


def _flat(crop_sets):
    return np.concatenate([c.crops.reshape(-1, *c.crops.shape[2:]) for c in crop_sets])


@pytest.fixture(scope="module")
def fitted(half_demo):
    _, crops = half_demo
    train = [c for (split, _), c in crops.items() if split == "train_normal"]
    return PatchCore(PatchCoreSettings(coreset_fraction=0.05, batch_size=16)).fit(_flat(train), context=8)


def test_heldout_threshold_flags_at_most_the_rate_of_each_cells_heldout_crops(half_demo):
    """Oracle: each cell scored by brute force against the bank rows that did not come from it."""
    from anodect.patchcore.model import inner_patches
    from anodect.patchcore.search import NearestNeighbourIndex
    from anodect.patchcore.volume import VolumeSettings, slab_crops

    _, crops = half_demo
    train = [c for (split, _), c in crops.items() if split == "train_normal"]
    rate = 0.05
    settings = PatchCoreSettings(coreset_fraction=0.05, batch_size=16, false_alarm_rate=rate,
                                 volume=VolumeSettings(slab=3, window=3, min_slices=4))
    model = PatchCore(settings).fit_scans([(c.crops, c.slice_indices) for c in train], context=8)
    auto = model.metadata["auto_threshold"]
    assert auto["n_cells"] == 3 and auto["false_alarm_rate"] == rate
    # Which cell each bank row came from, found by exact match of features (not from the model's records).
    features = []
    for c in train:
        s, r, h, w = c.crops.shape
        f = model.embed(slab_crops(c.crops, c.slice_indices, 3).reshape(s * r, h, w))
        rows, cols = inner_patches(model.geometry((h, w))[1], f.shape[1:3], (h, w), 8)
        features.append(f[:, rows, cols])
    owner = np.full(len(model.bank), -1)
    for g, f in enumerate(features):
        flat = f.reshape(-1, f.shape[-1])
        lookup = {row.tobytes(): True for row in flat}
        owner[[i for i, b in enumerate(model.bank) if b.tobytes() in lookup]] = g
    assert (owner >= 0).all() and len(set(owner)) == 3
    heldout, insample = [], []
    for g, f in enumerate(features):
        d_out = ((f[..., None, :] - model.bank[owner != g]) ** 2).sum(-1).min(-1)
        d_in = ((f[..., None, :] - model.bank) ** 2).sum(-1).min(-1)
        heldout.append(d_out.reshape(len(f), -1).max(1))
        insample.append(d_in.reshape(len(f), -1).max(1))
    heldout, insample = np.concatenate(heldout), np.concatenate(insample)
    # The model's own held-out scoring (per-fold index) gives the same scores.
    model_heldout = [model.score(slab_crops(c.crops, c.slice_indices, 3).reshape(-1, *c.crops.shape[2:]), 8,
                                 index=NearestNeighbourIndex(model.bank[owner != g])).scores
                     for g, c in enumerate(train)]
    np.testing.assert_allclose(np.sort(heldout), np.sort(np.concatenate(model_heldout)), rtol=1e-4)
    assert (heldout > auto["slice"]).mean() <= rate
    assert (heldout > auto["slice"]).sum() >= 1 or rate * len(heldout) < 1  # the rate, not far below it
    # In-sample scores (every patch finds itself in the bank) are biased low: why they are not used.
    assert insample.mean() < heldout.mean()
    assert auto["volume"] is not None and auto["heldout_score_stats"]["volume"]["max"] >= auto["volume"]


def test_maps_have_the_roi_shape_and_peak_on_the_crack(half_demo, fitted):
    out, crops = half_demo
    boxes = pd.read_csv(out / "truth" / "boxes.csv")
    assert len(boxes) > 0
    hits = total = 0
    normal_scores, crack_scores = [], []
    for (split, battery), crop_set in crops.items():
        if split != "test":
            continue
        s, r, h, w = crop_set.crops.shape
        result = fitted.score(crop_set.crops.reshape(s * r, h, w), crop_set.context)
        assert result.maps.shape == (s * r, h - 16, w - 16) == (s * r, 64, 84)
        for si, index in enumerate(crop_set.slice_indices):
            for ri, roi in enumerate(crop_set.roi_names):
                k = si * r + ri
                truth = boxes[(boxes.battery_id == battery) & (boxes.slice_index == index) & (boxes.roi == roi)]
                if truth.empty:
                    normal_scores.append(result.scores[k])
                    continue
                crack_scores.append(result.scores[k])
                y, x = np.unravel_index(result.maps[k].argmax(), result.maps[k].shape)
                x0, y0 = crop_set.roi_boxes[ri][:2]
                b = truth.iloc[0]
                total += 1
                hits += b.x1 - 2 <= x + x0 <= b.x2 + 2 and b.y1 - 2 <= y + y0 <= b.y2 + 2
    assert total >= 4
    assert hits / total >= 0.75, f"map peak inside the crack box in {hits}/{total} crops"
    assert np.median(crack_scores) > np.max(normal_scores) * 0.9
    assert np.mean(crack_scores) > np.mean(normal_scores) * 1.5


def test_save_load_round_trip_gives_identical_scores(half_demo, fitted, tmp_path):
    _, crops = half_demo
    test = _flat([c for (split, _), c in crops.items() if split == "test"])
    fitted.save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    for key in ("backbone", "weights_id", "layers", "feature_dim", "input_size", "normalisation",
                "coreset_fraction", "training_scans", "timings_s", "bank_sha256", "context"):
        assert key in meta
    # Same batch size: convolutions may round differently for another batch shape.
    loaded = PatchCore.load(tmp_path / "model", batch_size=16)
    a, b = fitted.score(test, 8), loaded.score(test, 8)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.maps, b.maps)


def test_a_tampered_or_mismatched_model_is_refused(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    bank = np.load(tmp_path / "m" / "memory_bank.npy")
    np.save(tmp_path / "m" / "memory_bank.npy", bank * 1.01)
    with pytest.raises(ValueError, match="do not match the hash"):
        PatchCore.load(tmp_path / "m")
    fitted.save(tmp_path / "m2")
    with pytest.raises(ValueError, match="context"):
        PatchCore.load(tmp_path / "m2").check_compatible(tuple(fitted.metadata["crop_size"]), 0)
    with pytest.raises(ValueError, match="crops are"):
        PatchCore.load(tmp_path / "m2").check_compatible((10, 10), 8)


def test_score_file_holds_every_slice_and_roi(half_demo, fitted, tmp_path):
    _, crops = half_demo
    crop_set = next(c for (split, _), c in crops.items() if split == "test")
    crop_set.save(tmp_path / "c.npz")
    fitted.save(tmp_path / "model")
    score_scan(Scorer.anodect(PatchCore.load(tmp_path / "model")), tmp_path / "c.npz", tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz", allow_pickle=False) as data:
        assert data["scores"].shape == crop_set.crops.shape[:2]
        assert data["maps"].shape == crop_set.inner().shape and data["maps"].dtype == np.float16
        np.testing.assert_array_equal(data["slice_indices"], crop_set.slice_indices)


def test_missing_resnet_weights_are_an_error_not_random_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFound, match="resnet18-f37072fd.pth"):
        build_backbone("resnet18")
    with pytest.raises(WeightsNotFound, match="weights_path"):
        build_backbone("resnet50", weights_path=str(tmp_path / "absent.pth"))
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg16")


def test_feature_layers_can_be_chosen():
    net, info = build_backbone("efficientnet_lite0", layers=("blocks.4", "blocks.10"))
    assert info.channels == (40, 112) and info.strides == (8, 16)
    with pytest.raises(ValueError, match="blocks.3"):
        build_backbone("efficientnet_lite0", layers=("blocks.3",))
