"""The crack segmenter: its inputs in slice numbers, its split by cell, its automatic threshold,
its files reloaded exactly and refused when altered, and annotated real cracks in its training."""

import json
import pickle

import numpy as np
import pytest

from anodect.segmenter.inputs import InputSettings, distant, median, neighbours, residuals, scan_inputs
from anodect.segmenter.model import Segmenter, SegmenterSettings, TrainingCell, split_cells
from anodect.synthesis import CrackRanges

from conftest import REPO

CONTEXT = 16
# ROIs of 120x96 px on the real winding, with their context clear of the mandrel and of the can's
# bright wall (x, y of the ROI's corner): four for training, the last two held out.
WINDOWS = [(110, 320), (500, 320), (320, 125), (320, 500), (180, 200), (430, 430)]
ROI_W, ROI_H = 120, 96


@pytest.fixture(scope="module")
def real_cells():
    """Six 'cells': ROI windows of the real CT volume, 8-bit, 20 slices (061-080) each."""
    from anodect.demo.realct import load_volume

    vol = load_volume(REPO / "data" / "battery_xct" / "cell_vol")
    lo, hi = np.percentile(vol, [0.5, 99.5])
    v8 = np.clip((vol - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
    indices = np.arange(61, 61 + len(vol))
    crops = [v8[:, y - CONTEXT:y + ROI_H + CONTEXT, x - CONTEXT:x + ROI_W + CONTEXT][:, None] for x, y in WINDOWS]
    return [TrainingCell.of(f"cell{k}", c, indices, InputSettings()) for k, c in enumerate(crops)]


@pytest.fixture(scope="module")
def trained(real_cells):
    """A small segmenter trained briefly on four cells, two held out (its mechanics, not its accuracy:
    that is benchmarks/segmenter.py's)."""
    easy = CrackRanges(depth=(30.0, 45.0), width=(2.0, 3.5), length=(15.0, 30.0), slices=(3, 8))
    settings = SegmenterSettings(channels=(12, 24, 48), steps=200, batch_size=8, patch=48, lr=0.01,
                                 false_alarm_rate=0.05, seed=0, cracks=easy)
    records = [{"scan_id": c.scan_id} for c in real_cells]
    return Segmenter(settings).fit(real_cells[:4], real_cells[4:], CONTEXT, records)


def test_neighbours_and_distant_slices_are_counted_in_slice_numbers():
    indices = np.array([200, 201, 203, 204, 205, 212, 214])  # 202 missing: a gap
    assert neighbours(indices, 1) == (0, 1)  # 201: 200 before, 202 absent -> itself
    assert neighbours(indices, 2) == (2, 3)  # 203: 202 absent -> itself, 204 after
    assert distant(indices, 0, InputSettings((4, 10))).tolist() == [3, 4]  # 204, 205 (212 is 12 away)
    res, missing = residuals(np.zeros((3, 4, 4)), np.array([1, 2, 3]), InputSettings((4, 10)))
    assert missing == 3 and not res.any()  # a short scan: no residual, and it is counted
    inputs, facts = scan_inputs(np.zeros((3, 2, 8, 8), np.uint8), np.array([1, 2, 3]), InputSettings())
    assert inputs.shape == (3, 2, 4, 8, 8) and facts["no_distant_slices"] == 3


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_the_median_of_the_distant_slices_equals_numpys_for_any_count(dtype):
    """The sorting network must give np.median's value exactly (a model trained with one scores
    alike with the other), for every count of distant slices a scan's ends and gaps leave."""
    rng = np.random.default_rng(0)
    for n in range(1, 24):
        values = rng.normal(120, 40, (n, 19, 23)).clip(0, 255).astype(dtype)
        values[:, :4] = values[0, :4]  # ties
        assert np.array_equal(median(values), np.median(values.astype(np.float32), axis=0)), n
    with pytest.raises(ValueError):
        median(np.zeros((0, 4, 4)))


def test_the_matched_residual_takes_out_a_slice_to_slice_gain_and_keeps_a_crack(real_cells):
    """Distant slices brighter and offset (as where the coating ends): the plain median leaves the
    layers' pattern in the residual, the locally matched one does not; a crack stays in both."""
    from anodect.segmenter.inputs import reference
    from anodect.synthesis import Crack, layer_normal, render

    image = real_cells[0].crops[10, 0].astype(np.float32)
    far = np.stack([image * 1.25 - 20 + np.random.default_rng(k).normal(0, 2, image.shape) for k in range(6)])
    x, y = 60.0, 50.0
    cracked, footprint = render(image[None], Crack(x, y, layer_normal(image, x, y), 20.0, 2.5, 20.0, 0))
    inside = footprint[0] & ((image - cracked[0]) >= 10)
    assert inside.sum() >= 10
    plain = cracked[0] - reference(cracked[0], far, InputSettings(match=0))
    matched = cracked[0] - reference(cracked[0], far, InputSettings(match=4))
    assert np.median(np.abs(plain[~footprint[0]])) > 6  # the gain's pattern: about the crack's own depth
    left = np.median(np.abs(matched[~footprint[0]]))
    assert left < 3 and np.median(matched[inside]) < -6 - left  # the crack stands out of what is left


def test_cells_split_by_cell_for_the_threshold():
    train, held = split_cells([f"c{k}" for k in range(8)], 0.25)
    assert len(held) == 2 and not set(train) & set(held) and len(train) == 6
    assert split_cells(["a"], 0.25) == (["a"], [])
    assert split_cells(["a", "b"], 0.25)[1] == ["b"] or len(split_cells(["a", "b"], 0.25)[1]) == 1


def test_the_automatic_threshold_flags_at_most_the_stated_share_of_held_out_crops(trained, real_cells):
    auto = trained.metadata["auto_threshold"]
    scores = np.concatenate([trained.score(c.crops, c.indices, CONTEXT)[0].ravel() for c in real_cells[4:]])
    assert auto["n_crops"] == len(scores) == 2 * 20 and auto["n_cells"] == 2
    assert (scores > auto["slice"]).mean() <= auto["false_alarm_rate"]
    assert auto["slice"] >= auto["floor"] and auto["slice"] == max(auto["at_rate"], auto["floor"])


def test_a_frozen_segmenter_reloads_and_scores_identically_and_refuses_altered_files(trained, real_cells, tmp_path):
    folder = tmp_path / "model"
    trained.save(folder)
    meta = json.loads((folder / "model.json").read_text())
    assert meta["format"] == "anodect-segmenter/2" and meta["model_id"].startswith("segmenter-")
    assert meta["settings"]["channels"] == [12, 24, 48] and len(meta["training_scans"]) == 4
    again = Segmenter.load(folder)
    cell = real_cells[4]
    a, b = trained.score(cell.crops, cell.indices, CONTEXT), again.score(cell.crops, cell.indices, CONTEXT)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    # Altered weights: the sha256 in model.json no longer matches.
    data = bytearray((folder / "weights.pt").read_bytes())
    data[-10] ^= 0xFF
    (folder / "weights.pt").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        Segmenter.load(folder)
    # A pickle that would run code is refused by the restricted loader, even with a matching hash.
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "weights.pt").write_bytes(pickle.dumps(Exploit()))
    (evil / "model.json").write_text(json.dumps({**meta, "weights_sha256": None}))
    with pytest.raises(ValueError, match="not the segmenter's weights"):
        Segmenter.load(evil)
    assert not (tmp_path / "pwned").exists()


class Exploit:
    def __reduce__(self):
        import os

        return os.system, (f"touch {__import__('tempfile').gettempdir()}/pwned",)


def test_annotated_real_cracks_reach_its_training_set(tiny_training, tmp_path):
    from anodect.segmenter.model import PatchSampler
    from anodect.segmenter.stage import annotated_cracks, train

    settings = SegmenterSettings(channels=(4, 8, 16), steps=3, batch_size=4, patch=32, annotated_fraction=1.0)
    annotated = list(zip(tiny_training["records"]["train_defect"], tiny_training["crops"]["train_defect"]))
    cracks, report = annotated_cracks(annotated, tiny_training["annotations"], settings)
    assert report["scans"] == 3 and report["matched"] == len(cracks) > 0
    for crack in cracks:
        cs = tiny_training["sets"][crack.cell.scan_id]
        assert crack.mask.shape == cs.crops.shape[-2:] and crack.mask.any()
        assert 0 <= crack.position < cs.n_slices and 0 <= crack.roi < len(cs.roi_names)
    # With annotated_fraction 1 every patch is cut around a drawn crack, its polygon the label.
    sampler = PatchSampler([cracks[0].cell], settings, np.random.default_rng(0), cracks)
    labels = [sampler.one()[1] for _ in range(20)]
    assert sampler.annotated_patches == 20 and all(label.any() for label in labels)
    model = train(crop_paths=tiny_training["crops"]["train_normal"], scans=tiny_training["records"]["train_normal"],
                  settings=settings, out_dir=tmp_path / "model", threads=1, annotated=annotated,
                  annotations_dir=str(tiny_training["annotations"]))
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["annotated"]["cracks"] == len(cracks) and meta["annotated"]["patches"] == 3 * 4
    assert model.metadata["annotated"]["matched"] == len(cracks)


def test_the_same_seed_trains_the_same_model(real_cells):
    def train_once():
        settings = SegmenterSettings(channels=(4, 8, 16), steps=10, batch_size=4, patch=32, seed=3)
        model = Segmenter(settings).fit(real_cells[:2], [], CONTEXT, [])
        return model.score(real_cells[5].crops, real_cells[5].indices, CONTEXT)[1]

    np.testing.assert_array_equal(train_once(), train_once())


def test_the_segmenter_finds_a_crack_through_4_slices_in_a_real_scan_and_flags_nothing_in_a_normal_one():
    """The frozen segmenter of ``tests/segmenter_fixture.py`` (the pipeline's defaults, trained on windows
    of the real volume in one half of the winding) on a window of the other half: a medium crack
    rendered across the layers through slices 068-071 is one crack of the pipeline's decisions (slice
    rule: 4 slices), where it was drawn; the same window without it is OK."""
    from anodect.synthesis import render

    import segmenter_fixture as fx

    model = Segmenter.load(fx.FIXTURE)  # weights through torch.load(weights_only=True), sha256-checked
    stale = {k: v for k, v in fx.default_settings().as_dict().items()
             if k not in ("device", "score_batch_size", "precision") and model.settings.as_dict()[k] != v}
    assert not stale, f"tests/data/segmenter_real predates these defaults {sorted(stale)}: run tests/segmenter_fixture.py"
    (crops,), indices = fx.real_crops([fx.TEST_ANGLE])
    stack = crops[:, 0].astype(np.float32)
    drawn, footprint = render(stack, fx.crack(stack, fx.CONTEXT + 60.0, fx.CONTEXT + 48.0, 7))
    assert footprint[7:11].any(axis=(1, 2)).all() and not footprint[:7].any() and not footprint[11:].any()
    cracked = crops.copy()
    cracked[:, 0] = np.clip(np.rint(drawn), 0, 255).astype(np.uint8)
    ys, xs = np.nonzero(footprint.any(axis=0))
    truth = (xs.min() - fx.CONTEXT, ys.min() - fx.CONTEXT, xs.max() + 1 - fx.CONTEXT, ys.max() + 1 - fx.CONTEXT)

    _, normal = fx.decided(model, crops, indices)
    # Single crops above the threshold are the held-out false-alarm rate at work; no crack may follow.
    assert normal.verdict == "OK" and normal.cracks.empty, normal.cracks
    flagged, found = fx.decided(model, cracked, indices)
    assert found.verdict == "NG" and len(found.cracks) == 1, found.cracks
    c = found.cracks.iloc[0]
    assert c.first_slice <= 68 and c.last_slice >= 71
    on = flagged[flagged.slice_index.between(68, 71)]
    assert set(on.slice_index) == {68, 69, 70, 71}
    assert (on.x1 < truth[2]).all() and (on.x2 > truth[0]).all() and (on.y1 < truth[3]).all() and (on.y2 > truth[1]).all()
