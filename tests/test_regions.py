import numpy as np
import pytest

from anodect.regions import regions_from_map


def _blob(shape, cx, cy, peak, sigma=3.0):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return peak * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))


def test_every_region_above_the_map_threshold_is_kept():
    m = _blob((64, 84), 20, 30, 10) + _blob((64, 84), 60, 30, 8) + 1
    regions = regions_from_map(m, score=11, threshold=5)
    assert len(regions) == 2
    assert regions[0].peak > regions[1].peak  # strongest first
    assert regions[0].x1 <= 20 <= regions[0].x2 and regions[1].x1 <= 60 <= regions[1].x2
    assert all(r.y1 <= 30 <= r.y2 for r in regions)


def test_a_crop_at_or_below_threshold_gives_no_box():
    m = _blob((64, 84), 20, 30, 10)
    assert regions_from_map(m, score=5, threshold=5) == []


def test_a_flagged_crop_always_gets_a_box():
    # Blurring pulled the map under the threshold although the patch score is above it.
    m = _blob((64, 84), 40, 20, 4.0) + 0.5
    regions = regions_from_map(m, score=6, threshold=5)
    assert len(regions) == 1
    r = regions[0]
    assert r.x1 <= 40 <= r.x2 and r.y1 <= 20 <= r.y2 and r.peak == float(m.max().astype(np.float32))


def test_small_specks_are_ignored_and_boxes_shift_to_the_slice():
    m = np.zeros((20, 20), np.float32)
    m[2, 2] = 9  # a single pixel
    m[10:14, 10:15] = 9
    regions = regions_from_map(m, score=9, threshold=5, min_area=4)
    # Corners: pixels 10..14 across and 10..13 down, as the numpy slice m[10:14, 10:15] says.
    assert [(r.x1, r.y1, r.x2, r.y2, r.area) for r in regions] == [(10, 10, 15, 14, 20)]
    s = regions[0].shifted(127, 448)
    assert (s.x1, s.y1, s.x2, s.y2) == (137, 458, 142, 462)


def test_one_box_convention_for_both_models_the_truth_and_the_metrics():
    """The same pixels are the same box whichever side made it: a PatchCore region, an RF-DETR
    box (corners) and a true box from the generator match exactly (IoU 1, AP 1), and the
    original's CSV gets those pixels as inclusive bounds. A one-pixel mix-up costs a 3 px wide
    crack a quarter of its IoU."""
    import pandas as pd

    from anodect.metrics import coco_box_ap, iou_3d
    from anodect.demo.generator import crack_box
    from anodect.render import inclusive_pixels

    m = np.zeros((40, 40), np.float32)
    m[12:30, 20:23] = 9  # a crack 3 px wide, 18 px long: x 20..22, y 12..29
    (region,) = regions_from_map(m, score=9, threshold=5)
    patchcore = (region.x1, region.y1, region.x2, region.y2)
    rfdetr = (20.0, 12.0, 23.0, 30.0)  # what a detector trained on COCO-style boxes says
    truth = crack_box(np.array([[20.0, 12.0], [22.0, 12.0], [22.0, 29.0], [20.0, 29.0]]), 40)
    assert patchcore == rfdetr == truth
    assert iou_3d((*patchcore, 5, 8), (*truth, 5, 8)) == pytest.approx(1.0)
    images = pd.DataFrame({"scan_id": ["s"], "slice_index": [5]})
    boxes = pd.DataFrame([{"scan_id": "s", "slice_index": 5, "roi": "left", "x1": truth[0], "y1": truth[1],
                           "x2": truth[2], "y2": truth[3]}])
    for box in (patchcore, rfdetr):
        found = pd.DataFrame([{"scan_id": "s", "slice_index": 5, "x1": box[0], "y1": box[1], "x2": box[2],
                               "y2": box[3], "score": 0.9}])
        assert coco_box_ap(boxes, found, images)["ap"] == pytest.approx(1.0)
    assert inclusive_pixels(*patchcore) == (20, 12, 22, 29)
    assert inclusive_pixels(20.4, 12.0, 22.6, 29.5) == (20, 12, 22, 29)


def test_pieces_of_one_crack_join_into_one_box_only_when_asked():
    """A crack across the layers shows as one piece per bright layer: ``join`` boxes them as one."""
    m = np.zeros((40, 40), np.float32)
    m[10:13, 10:13] = 0.9  # a piece on one layer
    m[17:20, 12:15] = 0.8  # the next piece, 5 px further along the crack
    m[35:38, 35:38] = 0.7  # something else, far off
    apart = regions_from_map(m, 0.9, 0.5, 0.5, 4)
    joined = regions_from_map(m, 0.9, 0.5, 0.5, 4, join=3)
    assert len(apart) == 3 and len(joined) == 2
    crack = joined[0]
    assert (crack.x1, crack.y1, crack.x2, crack.y2, crack.area) == (10, 10, 15, 20, 18)
    assert crack.peak == np.float32(0.9)
