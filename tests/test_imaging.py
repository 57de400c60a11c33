import numpy as np
import pytest

from anodect.imaging import SliceReadError, Window, choose_window, read_slice, to_grey

from conftest import write_slice


def test_reads_8_and_16_bit_grey_and_rgb(tmp_path):
    grey16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 15)
    rgb8 = np.stack([np.full((4, 5), 10, np.uint8), np.full((4, 5), 20, np.uint8), np.full((4, 5), 30, np.uint8)], -1)
    same8 = np.repeat(np.arange(20, dtype=np.uint8).reshape(4, 5)[..., None], 3, -1)
    assert read_slice(write_slice(tmp_path / "g16.tif", grey16)).dtype == np.uint16
    assert np.array_equal(read_slice(write_slice(tmp_path / "s8.tif", same8)), same8[..., 0])
    grey = read_slice(write_slice(tmp_path / "rgb8.tif", rgb8))
    assert grey.shape == (4, 5) and grey.dtype == np.uint8
    assert grey[0, 0] == round(0.299 * 10 + 0.587 * 20 + 0.114 * 30)


def test_8bit_passes_through_and_16bit_uses_percentiles():
    img8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    win = choose_window([img8], {"mode": "auto", "low_percentile": 1, "high_percentile": 99})
    assert np.array_equal(win.apply(img8), img8)
    img16 = np.linspace(1000, 51000, 100 * 100).reshape(100, 100).astype(np.uint16)
    win = choose_window([img16], {"mode": "auto", "low_percentile": 0, "high_percentile": 100})
    out = win.apply(img16)
    assert out.min() == 0 and out.max() == 255
    assert win.low == pytest.approx(1000, abs=1) and win.high == pytest.approx(51000, abs=1)


def test_fixed_and_none_windows():
    img = np.array([[0, 1000, 2000, 65535]], np.uint16)
    assert list(choose_window([img], {"mode": "fixed", "min": 1000, "max": 2000}).apply(img)[0]) == [0, 0, 255, 255]
    assert list(choose_window([img], {"mode": "none"}).apply(img)[0]) == [0, 4, 8, 255]


def test_constant_scan_maps_to_mid_grey():
    img = np.full((4, 4), 700, np.uint16)
    win = choose_window([img], {"mode": "percentile", "low_percentile": 1, "high_percentile": 99})
    assert set(np.unique(win.apply(img))) == {128}
    assert Window(5, 5).apply(img).dtype == np.uint8


def test_bad_files_raise_naming_the_file(tmp_path):
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(SliceReadError, match="empty.tif: empty file"):
        read_slice(empty)
    text = tmp_path / "notes.tif"
    text.write_text("not an image")
    with pytest.raises(SliceReadError, match="notes.tif: not a readable TIFF"):
        read_slice(text)
    good = write_slice(tmp_path / "good.tif", np.zeros((64, 64), np.uint16))
    cut = tmp_path / "cut.tif"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(SliceReadError, match="cut.tif"):
        read_slice(cut)


def test_unsupported_shape():
    with pytest.raises(SliceReadError, match="unsupported image shape"):
        to_grey(np.zeros((2, 3, 4, 5), np.uint8))
