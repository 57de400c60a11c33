"""Cracks rendered into real slices: exact footprints, nothing changed outside them."""

import numpy as np
import pytest

from anodect.synthesis import FOOTPRINT_LEVEL, Crack, CrackRanges, render, render_into_crops, sample

from conftest import REPO


@pytest.fixture(scope="module")
def real_stack():
    """Ten real CT slices (8-bit windowed) of an ROI on the winding."""
    from anodect.demo.realct import load_volume

    vol = load_volume(REPO / "data" / "battery_xct" / "cell_vol")[:10, 300:428, 98:265]
    lo, hi = np.percentile(vol, [0.5, 99.5])
    return np.clip((vol - lo) / (hi - lo) * 255, 0, 255).astype(np.float32)


def test_a_rendered_crack_changes_its_footprint_and_leaves_every_other_pixel_within_2_grey_levels(real_stack):
    crack = Crack(x=80, y=60, angle=0.3, length=24, width=2.5, depth=25, first=3,
                  drift=((0, 0), (0.4, 0.2), (0.9, 0.1), (1.2, -0.3)))
    out, mask = render(real_stack, crack)
    delta = real_stack - out
    assert mask[3:7].any(axis=(1, 2)).all() and not mask[:3].any() and not mask[7:].any()
    np.testing.assert_array_equal(out[:3], real_stack[:3])
    np.testing.assert_array_equal(out[7:], real_stack[7:])
    assert delta[mask].min() >= FOOTPRINT_LEVEL  # inside: changed by at least the footprint level
    assert np.abs(delta[~mask]).max() < 2.0  # outside: within 2 grey levels (below FOOTPRINT_LEVEL in fact)
    assert np.abs(delta[~mask]).max() < FOOTPRINT_LEVEL
    assert delta.max() <= crack.depth + 1e-4  # never more than its depth
    assert (delta >= 0).all()  # a crack only darkens
    # The footprint lies around the crack's centre line, within its length and blur.
    ys, xs = np.nonzero(mask[5])
    assert np.hypot(xs - 80.9, ys - 60.1).max() <= crack.length / 2 + crack.width + 4


def test_a_crack_where_there_is_no_bright_layer_changes_nothing():
    flat = np.full((6, 64, 64), 100.0, np.float32)
    out, mask = render(flat, Crack(32, 32, 0.0, 20, 2, 30, 1, ((0, 0),) * 4))
    assert not mask.any() and np.array_equal(out, flat)


def test_branches_and_drawn_cracks_follow_their_ranges(real_stack):
    ranges = CrackRanges(depth=(9, 25), width=(1, 3), length=(6, 30), slices=(4, 8), branch_probability=1.0)
    rng = np.random.default_rng(0)
    cracks = [sample(rng, (128, 167), 10, ranges, centre=(80, 60)) for _ in range(20)]
    for c in cracks:
        assert 9 <= c.depth <= 25 and 1 <= c.width <= 3 and 6 <= c.length <= 30 and 4 <= c.n_slices <= 8
        assert 0 <= c.first and c.last < 10 and len(c.branches) == 1
        assert len(c.segments(0)) == 2
    again = sample(np.random.default_rng(0), (128, 167), 10, ranges, centre=(80, 60))
    assert again == cracks[0]  # same seed, same crack
    rendered = render_into_crops(real_stack[:, None].astype(np.uint8), [(0, cracks[0])])
    assert rendered.crops.dtype == np.uint8 and rendered.footprint[:, 0].any()
