import json

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile

from anodect.demo.generator import BLUR_RADIUS, CellRenderer, DemoSettings, generate, plan_cells
from anodect.groundtruth import read_via

from conftest import TINY_ROIS, tiny_settings


def _polygon_mask(poly: np.ndarray, shape, grow: int) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
    # +1: rasterising a sub-pixel polygon may leave out a border pixel the band touches.
    k = 2 * (grow + 1) + 1
    return cv2.dilate(mask, np.ones((k, k), np.uint8)).astype(bool)


def test_crack_pixels_differ_from_the_crack_free_cell_only_inside_the_truth(tmp_path):
    cells = plan_cells(tiny_settings(tmp_path), TINY_ROIS, (204, 211))
    cracked = [c for c in cells if c.cracks]
    assert cracked, "the tiny demo must hold cracked cells"
    checked = 0
    for cell in cracked:
        renderer = CellRenderer(cell)
        for s in range(cell.first_slice, cell.last_slice + 1):
            with_cracks = renderer.render(s, with_cracks=True)
            without = renderer.render(s, with_cracks=False)
            differs = with_cracks != without
            allowed = np.zeros(differs.shape, bool)
            for crack in cell.cracks:
                poly = crack.polygon(s)
                if poly is None:
                    continue
                region = _polygon_mask(poly, differs.shape, BLUR_RADIUS)
                # The crack is dark: inside its region the cracked slice is darker.
                assert differs[region].sum() > 0, f"{crack.crack_id} invisible in slice {s}"
                assert with_cracks[region].astype(int).sum() < without[region].astype(int).sum()
                allowed |= region
                checked += 1
            assert not (differs & ~allowed).any(), f"{cell.battery_id} slice {s}: change outside the truth"
    assert checked >= 2


def test_cracks_lie_inside_rois_and_span_the_configured_slices(tmp_path):
    settings = tiny_settings(tmp_path, n_train_defect=4, n_test=4, test_defect_fraction=1.0)
    cells = plan_cells(settings, TINY_ROIS, (204, 211))
    rois = {r.name: r for r in TINY_ROIS}
    cracks = [cr for c in cells for cr in c.cracks]
    assert len(cracks) >= 8
    for crack in cracks:
        n = crack.last_slice - crack.first_slice + 1
        assert 2 <= n <= 5
        assert 204 <= crack.first_slice and crack.last_slice <= 211
        roi = rois[crack.roi]
        for s in range(crack.first_slice, crack.last_slice + 1):
            poly = crack.polygon(s)
            assert roi.x_min <= poly[:, 0].min() and poly[:, 0].max() < roi.x_max
            assert roi.y_min <= poly[:, 1].min() and poly[:, 1].max() < roi.y_max
    assert all(not c.cracks for c in cells if c.split == "train_normal")


def test_generation_is_deterministic_for_a_seed(tmp_path):
    a = generate(tmp_path / "a", tiny_settings(tmp_path / "a", n_train_normal=1, n_test=1), TINY_ROIS, (204, 211))
    b = generate(tmp_path / "b", tiny_settings(tmp_path / "b", n_train_normal=1, n_test=1), TINY_ROIS, (204, 211),
                 workers=2)
    generate(tmp_path / "c", tiny_settings(tmp_path / "c", n_train_normal=1, n_test=1, seed=4), TINY_ROIS,
                 (204, 211))
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "scans").rglob("*.tif"))
    assert len(files) == a["n_slices"] == b["n_slices"]
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert (tmp_path / "a/truth/boxes.csv").read_text() == (tmp_path / "b/truth/boxes.csv").read_text()
    assert any((tmp_path / "a" / rel).read_bytes() != (tmp_path / "c" / rel).read_bytes() for rel in files)


def test_demo_layout_and_16bit_slices(tiny_demo):
    out, manifest = tiny_demo
    assert manifest["counts"] == {"train_normal": 2, "train_defect": 1, "test": 2}
    folders = sorted(p.name for p in (out / "scans" / "test").iterdir())
    assert folders == ["[T01] 検査セル", "[T02] 検査セル"]
    files = sorted((out / "scans" / "test" / "[T01] 検査セル" / "[Z軸]").iterdir())
    assert [f.name for f in files][:2] == ["[T01] 検査セル_負極_0203.tif", "[T01] 検査セル_負極_0204.tif"]
    assert len(files) == 10
    image = tifffile.imread(files[0])
    assert image.dtype == np.uint16 and image.shape == (256, 256)
    assert image.std() > 1000  # real structure, not a flat frame


def test_truth_files_agree_with_each_other(tiny_demo):
    out, manifest = tiny_demo
    boxes = pd.read_csv(out / "truth" / "boxes.csv")
    cracks = pd.read_csv(out / "truth" / "cracks.csv")
    slices = pd.read_csv(out / "truth" / "slices.csv")
    cells = pd.read_csv(out / "truth" / "cells.csv")
    assert len(cracks) == manifest["n_cracks"] > 0
    assert len(boxes) == cracks["n_slices"].sum()
    assert set(cells.loc[cells.verdict == "NG", "battery_id"]) == set(cracks["battery_id"])
    anomalous = slices[slices.n_cracks > 0]
    assert set(zip(anomalous.battery_id, anomalous.slice_index)) == set(zip(boxes.battery_id, boxes.slice_index))
    coco = json.loads((out / "truth" / "coco.json").read_text())
    assert [c["id"] for c in coco["categories"]] == [1]
    assert {a["category_id"] for a in coco["annotations"]} == {1}
    assert len(coco["annotations"]) == len(boxes)
    # VIA polygons, read back with the reader the pipeline uses, give the same boxes.
    via_boxes = []
    for via in sorted((out / "annotations").rglob("*.json")):
        battery = via.parent.name
        for poly in read_via(via):
            x1, y1, x2, y2 = poly.box()
            index = int(poly.file_name.rsplit("_", 1)[1].split(".")[0])
            via_boxes.append((battery, index, int(np.floor(x1)), int(np.floor(y1))))
    truth_boxes = [(r.battery_id, r.slice_index, r.x1, r.y1) for r in boxes.itertuples()]
    assert len(via_boxes) == len(truth_boxes)
    # VIA stores integer vertices, so a corner may round across a pixel border.
    for a, b in zip(sorted(via_boxes), sorted(truth_boxes)):
        assert a[:2] == b[:2] and abs(a[2] - b[2]) <= 1 and abs(a[3] - b[3]) <= 1


def test_settings_from_config_reads_ranges_as_tuples():
    settings = DemoSettings.from_config({"demo": {"seed": 9, "length": [5, 6]}})
    assert settings.seed == 9 and settings.length == (5, 6)


def test_rois_too_small_for_cracks_raise_a_clear_error(tmp_path):
    from anodect.config import Roi
    with pytest.raises(ValueError, match="could not place a crack"):
        plan_cells(tiny_settings(tmp_path), [Roi("left", 32, 112, 36, 116)], (204, 211))


def test_annotation_readers_and_stages_load_no_demo_code():
    # The demo writes truth; the stages only read annotations. A fresh interpreter imports every
    # stage module and must not have loaded anything from anodect.demo.
    import subprocess
    import sys

    stages = ["anodect.groundtruth", "anodect.annotations", "anodect.rfdetr.dataset", "anodect.rfdetr.stage",
              "anodect.patchcore.stage", "anodect.crops", "anodect.decisions", "anodect.metrics",
              "anodect.comparison", "anodect.render", "anodect.report", "anodect.planning", "anodect.sheets", "anodect.registry", "anodect.discovery"]
    code = ("import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in stages)
            + "print(sorted(m for m in sys.modules if m.startswith('anodect.demo')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
