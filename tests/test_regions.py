import numpy as np

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
    assert [(r.x1, r.y1, r.x2, r.y2, r.area) for r in regions] == [(10, 10, 14, 13, 20)]
    s = regions[0].shifted(127, 448)
    assert (s.x1, s.y1, s.x2, s.y2) == (137, 458, 141, 461)
