import numpy as np
import pytest
import tifffile

from anodect.tiffheader import NotATiff, count_pages, image_shape

from conftest import REPO


def _tifffile_shape(path, page=None):
    with tifffile.TiffFile(path) as tif:
        return tuple(int(v) for v in tif.pages[page or 0].shape[:2]), len(tif.pages)


@pytest.mark.parametrize("options", [{}, {"bigtiff": True}, {"byteorder": ">"},
                                     {"bigtiff": True, "byteorder": ">"}, {"compression": "zlib"},
                                     {"tile": (32, 32)}])
def test_sizes_and_pages_agree_with_tifffile(tmp_path, options):
    """The plain-Python header reader the pre-run checks use says what tifffile says, for classic and
    Big TIFF in both byte orders, compressed and tiled, single slices, RGB and stacks."""
    single = tmp_path / "single.tif"
    tifffile.imwrite(single, np.zeros((70, 130), np.uint16), **options)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((5, 40, 96), np.uint8), **options)
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((48, 80, 3), np.uint8), photometric="rgb", **options)
    for path in (single, stack, rgb):
        shape, pages = _tifffile_shape(path)
        assert image_shape(path) == shape and count_pages(path) == pages, (path.name, options)
    assert image_shape(stack, 4) == _tifffile_shape(stack, 4)[0]
    with pytest.raises(NotATiff, match="has no page 5"):
        image_shape(stack, 5)


def test_real_ct_slices_read_as_tifffile_reads_them():
    files = sorted((REPO / "data" / "battery_xct" / "cell_vol").glob("*.tif"))[:3]
    assert files
    for path in files:
        assert (image_shape(path), count_pages(path)) == _tifffile_shape(path)


def test_what_is_not_a_tiff_is_named(tmp_path):
    text = tmp_path / "notes.tif"
    text.write_text("not an image")
    with pytest.raises(NotATiff, match="notes.tif: not a TIFF file"):
        image_shape(text)
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, np.zeros((64, 64), np.uint16))
    cut = tmp_path / "cut.tif"
    cut.write_bytes(good.read_bytes()[:6])
    with pytest.raises(NotATiff, match="cut.tif: TIFF header cut short"):
        count_pages(cut)
