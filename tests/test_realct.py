"""The real-background set (anodect.demo.realct): real slices, disjoint train/test ROIs, faithful cracks."""

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from anodect.config import Roi
from anodect.demo.realct import (DIFFICULTY, RealCell, RealCTSettings, cell_axis, crack_darkening, generate, load_volume,
                            plan_cells, render_slice)

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "data" / "battery_xct" / "cell_vol"
ROIS = [Roi("left", 98, 300, 265, 428), Roi("right", 463, 300, 630, 428)]


@pytest.fixture(scope="module")
def volume():
    return load_volume(SOURCE)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("real_ct")
    settings = RealCTSettings(source_dir=str(SOURCE), out_dir=str(out), n_train_normal=3, n_train_defect=1, n_test=4)
    return out, settings, generate(out, settings, ROIS)


def test_shipped_slices_are_the_real_volume(volume):
    assert volume.shape == (20, 728, 728)
    assert (SOURCE.parent / "LICENSE").is_file() and "MIT" in (SOURCE.parent / "LICENSE").read_text()
    assert "battery_xct_workflows" in (SOURCE.parent / "SOURCE.md").read_text()


def test_training_and_test_rois_share_no_source_pixel(volume):
    """Rendered through the real path, ramp volumes tell which source pixel each ROI pixel shows."""
    cells = plan_cells(RealCTSettings(source_dir=str(SOURCE)), volume, ROIS)
    centre = cell_axis(volume)
    h, w = volume.shape[1:]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    seen = {"train": set(), "test": set()}
    for cell in cells:
        plain = replace(cell, cracks=[], gain=1.0, reverse_z=False)
        sx = render_slice(xs[None], plain, centre, 0, with_cracks=False)
        sy = render_slice(ys[None], plain, centre, 0, with_cracks=False)
        for roi in ROIS:
            px = np.rint(sx[roi.y_min:roi.y_max, roi.x_min:roi.x_max]).astype(int)
            py = np.rint(sy[roi.y_min:roi.y_max, roi.x_min:roi.x_max]).astype(int)
            seen["test" if cell.split == "test" else "train"].update(zip(px.ravel(), py.ravel()))
    assert len(seen["train"]) > 50_000 and len(seen["test"]) > 50_000
    assert not seen["train"] & seen["test"]
    # and the test cells do show the winding from more than one view
    assert len({(c.flip, c.reverse_z) for c in cells if c.split == "test"}) >= 2


def test_crack_darkens_only_its_place_by_at_most_its_depth(small_set, volume):
    out, settings, manifest = small_set
    centre = cell_axis(volume)
    cells = [RealCell(**{**c, "cracks": []}) for c in manifest["cells"] if c["cracks"]]
    boxes = pd.read_csv(out / "truth" / "boxes.csv")
    assert len(boxes) and len(cells)
    for spec, cell in zip([c for c in manifest["cells"] if c["cracks"]], cells):
        k_first = spec["first_slice"]
        for crack in spec["cracks"]:
            depth = crack["depth"]
            for s in range(crack["first_slice"], crack["last_slice"] + 1):
                clean = render_slice(volume, cell, centre, s - k_first, with_cracks=False)
                path = out / "scans" / cell.split / cell.battery_id / "[Z軸]" / f"{cell.battery_id}_負極_{s:04d}.tif"
                written = tifffile.imread(path).astype(np.float32) / 256.0
                diff = clean - written
                box = boxes[(boxes.crack_id == crack["crack_id"]) & (boxes.slice_index == s)].iloc[0]
                grown = np.zeros(diff.shape, bool)
                grown[box.y1 - 4:box.y2 + 5, box.x1 - 4:box.x2 + 5] = True
                others = [c for c in spec["cracks"] if c is not crack]
                if not others:
                    assert np.abs(diff[~grown]).max() <= 0.5 / 256 + 1e-6  # rounding only
                assert diff[grown].max() <= depth + 0.01
                assert diff[grown].max() >= 0.25 * depth  # and it is there
                assert diff.min() >= -0.01  # only darkens


def test_darkening_stops_at_the_gap_beside_the_layer(volume):
    cells = plan_cells(RealCTSettings(source_dir=str(SOURCE), n_train_normal=0, n_train_defect=1, n_test=0),
                       volume, ROIS)
    cell = cells[0]
    centre = cell_axis(volume)
    crack = replace(cell.cracks[0], depth=200.0)  # deeper than any layer is bright
    k = crack.first_slice - cell.first_slice
    clean = render_slice(volume, replace(cell, cracks=[]), centre, k, with_cracks=False)
    (x0, y0, x1, y1), delta = crack_darkening(clean, crack, crack.first_slice)
    import cv2

    local = cv2.GaussianBlur(clean, (0, 0), 1.0)[y0:y1, x0:x1]
    gap = cv2.erode(cv2.GaussianBlur(clean, (0, 0), 1.0), np.ones((9, 9), np.uint8))[y0:y1, x0:x1]
    # Never below the dark gap nearby: nothing painted black.
    assert (local - delta >= gap - 1e-3).all()
    assert delta.max() > 5


def test_same_seed_same_bytes(small_set, tmp_path):
    out, settings, _ = small_set
    again = tmp_path / "again"
    generate(again, replace(settings, out_dir=str(again)), ROIS)
    digest = lambda root: hashlib.sha256(b"".join(  # noqa: E731
        p.relative_to(root).as_posix().encode() + p.read_bytes()
        for p in sorted(root.rglob("*")) if p.is_file() and p.name != "manifest.json")).hexdigest()
    assert digest(out) == digest(again)


def test_truth_in_the_demo_formats(small_set):
    out, _, manifest = small_set
    cells = pd.read_csv(out / "truth" / "cells.csv")
    assert (cells.groupby("split").size() == pd.Series({"test": 4, "train_defect": 1, "train_normal": 3})).all()
    assert set(cells[cells.split == "test"].verdict) == {"OK", "NG"}
    coco = json.loads((out / "truth" / "coco.json").read_text())
    assert len(coco["annotations"]) == len(pd.read_csv(out / "truth" / "boxes.csv"))
    assert list((out / "annotations" / "train_defect").rglob("*.json"))
    cracks = pd.read_csv(out / "truth" / "cracks.csv")
    lo, hi = DIFFICULTY["medium"]["slices"]
    assert cracks.n_slices.between(lo, hi).all()
    assert manifest["generator"] == "anodect.demo.realct"
    first = tifffile.imread(next((out / "scans" / "test").rglob("*.tif")))
    assert first.dtype == np.uint16 and first.shape == (728, 728)


def test_unknown_difficulty_is_refused():
    with pytest.raises(ValueError, match="difficulty"):
        RealCTSettings.from_config({"demo": {"real_ct": {"difficulty": "brutal"}}})


def test_demo_rule_generates_the_real_set_when_asked(tmp_path):
    from anodect.demo.realct import generate_configured

    demo = {"source": "real_ct", "out_dir": str(tmp_path / "d"), "n_train_normal": 1, "n_train_defect": 0,
            "n_test": 1, "test_defect_fraction": 1.0, "real_ct": {"source_dir": str(SOURCE)}}
    manifest = generate_configured(demo, ROIS, None)
    assert manifest["generator"] == "anodect.demo.realct" and manifest["counts"]["test"] == 1
    assert len(list((tmp_path / "d" / "scans" / "test").rglob("*.tif"))) == 20
