import numpy as np
import pandas as pd
import pytest

from anodect.config import Roi
from anodect.crops import CropSet, NoUsableSlices, extract_crops

from conftest import write_slice

ROIS = [Roi("left", 2, 3, 6, 5), Roi("right", 10, 3, 14, 5)]
WINDOW = {"mode": "auto", "low_percentile": 0, "high_percentile": 100}


def _slices(tmp_path, images):
    rows = []
    for i, image in images.items():
        path = tmp_path / f"s_{i:04d}.tif"
        if isinstance(image, bytes):
            path.write_bytes(image)
        else:
            write_slice(path, image)
        rows.append({"slice_index": i, "path": str(path), "page": -1})
    return pd.DataFrame(rows)


def _coded(value_offset=0):
    # Each pixel encodes its own position, so a crop proves where it was cut.
    yy, xx = np.mgrid[0:8, 0:16]
    return (yy * 16 + xx + value_offset).astype(np.uint8)


def test_crops_come_from_the_roi_pixels(tmp_path):
    crop_set, qc = extract_crops("s1", _slices(tmp_path, {7: _coded(), 5: _coded(100)}), ROIS, WINDOW)
    assert crop_set.crops.shape == (2, 2, 2, 4) and crop_set.crops.dtype == np.uint8
    assert list(crop_set.slice_indices) == [5, 7]  # sorted by slice index
    assert np.array_equal(crop_set.crops[1, 0], _coded()[3:5, 2:6])
    assert np.array_equal(crop_set.crops[1, 1], _coded()[3:5, 10:14])
    assert np.array_equal(crop_set.crops[0, 0], _coded(100)[3:5, 2:6])
    assert list(qc["status"]) == ["ok", "ok"]
    assert list(crop_set.roi_names) == ["left", "right"]


def test_16bit_scan_is_windowed_once_for_all_slices(tmp_path):
    a = np.full((8, 16), 1000, np.uint16)
    b = np.full((8, 16), 3000, np.uint16)
    a[0, 0], b[0, 0] = 1001, 2999  # one pixel off: a constant slice is no CT and is skipped
    crop_set, _ = extract_crops("s1", _slices(tmp_path, {1: a, 2: b}), ROIS, WINDOW)
    assert crop_set.window == (1000.0, 3000.0)
    assert crop_set.crops[0].max() == 0 and crop_set.crops[1].min() == 255


def test_bad_and_wrong_sized_slices_are_skipped_and_recorded(tmp_path):
    slices = _slices(tmp_path, {1: _coded(), 2: np.zeros((9, 16), np.uint8), 3: b"", 4: _coded(1)})
    crop_set, qc = extract_crops("s1", slices, ROIS, WINDOW)
    assert list(crop_set.slice_indices) == [1, 4]
    reasons = dict(zip(qc["slice_index"], qc["reason"]))
    assert "differs from the scan's 16x8" in reasons[2]
    assert "empty file" in reasons[3] and "s_0003.tif" in reasons[3]
    assert list(qc["status"]) == ["ok", "skipped", "skipped", "ok"]


def test_expected_shape_from_the_sample_sheet_wins(tmp_path):
    slices = _slices(tmp_path, {1: _coded(), 2: np.arange(9 * 16, dtype=np.uint8).reshape(9, 16)})
    crop_set, _ = extract_crops("s1", slices, ROIS, WINDOW, expected_shape=(9, 16))
    assert list(crop_set.slice_indices) == [2]


def test_a_scan_with_nothing_usable_raises_with_the_reasons(tmp_path):
    with pytest.raises(NoUsableSlices, match="s1: no usable slice.*empty file"):
        extract_crops("s1", _slices(tmp_path, {1: b""}), ROIS, WINDOW)


def test_save_load_round_trip_without_pickle(tmp_path):
    crop_set, _ = extract_crops("s1", _slices(tmp_path, {1: _coded()}), ROIS, WINDOW)
    crop_set.save(tmp_path / "c.npz")
    loaded = CropSet.load(tmp_path / "c.npz")
    assert loaded.scan_id == "s1" and loaded.window == crop_set.window
    assert np.array_equal(loaded.crops, crop_set.crops)
    assert np.array_equal(loaded.roi_boxes, [[2, 3, 6, 5], [10, 3, 14, 5]])
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


def test_context_surrounds_the_roi_and_mirrors_outside_the_image(tmp_path):
    rois = [Roi("edge", 0, 3, 4, 5), Roi("mid", 6, 3, 10, 5)]
    crop_set, _ = extract_crops("s1", _slices(tmp_path, {1: _coded()}), rois, WINDOW, context=2)
    assert crop_set.crops.shape == (1, 2, 6, 8)
    assert np.array_equal(crop_set.crops[0, 1], _coded()[1:7, 4:12])
    assert np.array_equal(crop_set.inner()[0, 1], _coded()[3:5, 6:10])
    # Left of x=0 the slice is mirrored: columns -2, -1 repeat columns 1, 0.
    assert np.array_equal(crop_set.crops[0, 0][:, :2], _coded()[1:7, [1, 0]])
    assert np.array_equal(crop_set.inner()[0, 0], _coded()[3:5, 0:4])


def test_crop_and_slice_pixels_are_related_in_one_place(tmp_path):
    """Each pixel of the coded slice holds its own position, so every mapping is checked against the
    slice itself: origin (with the set's context, less, or none), the ROI inside its crop, trimming."""
    image = _coded()
    crop_set, _ = extract_crops("s1", _slices(tmp_path, {1: image}), [Roi("mid", 6, 3, 10, 5)], WINDOW, context=2)
    crop = crop_set.crops[0, 0]
    for context in (2, 1, 0):
        ox, oy = crop_set.origin(0, context)
        trimmed = crop_set.with_context(context)[0, 0]
        assert trimmed[0, 0] == image[oy, ox] and trimmed[-1, -1] == image[oy + trimmed.shape[0] - 1,
                                                                          ox + trimmed.shape[1] - 1]
    x1, y1, x2, y2 = crop_set.roi_in_crop(0)
    assert np.array_equal(crop[y1:y2, x1:x2], image[3:5, 6:10]) and np.array_equal(crop_set.inner()[0, 0],
                                                                                  crop[y1:y2, x1:x2])
    assert Roi("mid", 6, 3, 10, 5).crop_shape(2) == crop.shape
    with pytest.raises(ValueError, match="crops have 2 px of context, 3 are needed"):
        crop_set.with_context(3)


def test_crop_metadata_reads_without_the_pixels(tmp_path):
    crop_set, _ = extract_crops("s1", _slices(tmp_path, {7: _coded(), 5: _coded(100)}), ROIS, WINDOW, context=2)
    crop_set.save(tmp_path / "c.npz")
    meta = CropSet.read_meta(tmp_path / "c.npz")
    assert meta["slice_indices"] == [5, 7] and meta["context"] == 2
    assert meta["window"] == crop_set.window and meta["roi_names"] == list(crop_set.roi_names)
