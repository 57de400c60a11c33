import pytest

from anodect.tracking import Detection, TrackingSettings, anomalous_slices, confirm, link

DEFAULT = TrackingSettings(min_consecutive_slices=4, max_gap=0, link_margin=2)


def det(s, x=100, y=50, w=10, h=20, roi="left", scan="s1", score=0.9):
    return Detection(scan, roi, s, x, y, x + w, y + h, score)


def cracks_of(dets, observed=range(200, 231), settings=DEFAULT):
    obs = {"s1": list(observed)}
    return confirm(link(dets, obs, settings), settings), obs


def test_a_run_of_four_is_a_crack_and_a_run_of_three_is_not():
    cracks, obs = cracks_of([det(s) for s in (205, 206, 207, 208)])
    assert [(c.first_slice, c.last_slice, len(c.slices)) for c in cracks] == [(205, 208, 4)]
    assert anomalous_slices(cracks, obs) == {"s1": {205, 206, 207, 208}}
    cracks, obs = cracks_of([det(s) for s in (205, 206, 207)])
    assert cracks == [] and anomalous_slices(cracks, obs) == {}


def test_isolated_detections_are_never_emitted_with_a_later_run():
    # The original kept pending frames and wrote stale ones out with the next run.
    dets = [det(201), det(203)] + [det(s) for s in (210, 211, 212, 213, 214)]
    cracks, obs = cracks_of(dets)
    assert len(cracks) == 1 and cracks[0].slices == [210, 211, 212, 213, 214]
    assert anomalous_slices(cracks, obs)["s1"] == {210, 211, 212, 213, 214}


def test_long_runs_stay_whole():
    cracks, _ = cracks_of([det(s) for s in range(205, 217)])
    assert len(cracks) == 1 and len(cracks[0].slices) == 12


def test_gaps_follow_max_gap():
    dets = [det(s) for s in (205, 206, 208, 209)]  # slice 207 observed, nothing found
    assert cracks_of(dets)[0] == []  # no gap allowed: two runs of 2
    cracks, obs = cracks_of(dets, settings=TrackingSettings(4, max_gap=1))
    assert [c.slices for c in cracks] == [[205, 206, 208, 209]]
    assert anomalous_slices(cracks, obs)["s1"] == {205, 206, 207, 208, 209}  # the crack runs through 207
    dets = [det(s) for s in (205, 206, 209, 210)]  # two missed slices
    assert cracks_of(dets, settings=TrackingSettings(4, max_gap=1))[0] == []


def test_a_missing_slice_is_a_gap_in_slice_numbers():
    dets = [det(s) for s in (205, 206, 208, 209)]
    observed = [s for s in range(200, 231) if s != 207]  # 207 unreadable: the crack was not seen there
    assert cracks_of(dets, observed=observed)[0] == []
    cracks, obs = cracks_of(dets, observed=observed, settings=TrackingSettings(4, max_gap=1))
    assert [c.slices for c in cracks] == [[205, 206, 208, 209]]  # 4 slices with the crack, the gap not counted
    assert 207 not in anomalous_slices(cracks, obs)["s1"]  # in no table: it was never analysed
    # Everything between 206 and 230 unreadable: the two ends are not neighbours.
    dets = [det(s) for s in (205, 206, 230, 231)]
    observed = [*range(200, 207), *range(230, 240)]
    assert cracks_of(dets, observed=observed)[0] == []
    assert cracks_of(dets, observed=observed, settings=TrackingSettings(4, max_gap=2))[0] == []
    assert len(cracks_of(dets, observed=observed, settings=TrackingSettings(4, max_gap=23))[0]) == 1


def test_gaps_are_counted_in_the_scans_own_slice_spacing():
    # Every other slice exported: 200, 202, ... are neighbours; a missing 206 is a gap of one.
    observed = list(range(200, 231, 2))
    cracks, _ = cracks_of([det(s) for s in (202, 204, 206, 208)], observed=observed)
    assert [c.slices for c in cracks] == [[202, 204, 206, 208]]
    observed.remove(206)
    assert cracks_of([det(s) for s in (202, 204, 208, 210)], observed=observed)[0] == []
    assert len(cracks_of([det(s) for s in (202, 204, 208, 210)], observed=observed,
                         settings=TrackingSettings(4, max_gap=1))[0]) == 1


def test_a_box_touching_two_tracks_joins_them():
    # Two branches of one crack (x 80 and x 120), three slices each at most, meet in slice 207.
    dets = ([det(s, x=120, w=12) for s in (204, 205, 206)] + [det(s, x=80, w=12) for s in (205, 206)]
            + [det(207, x=80, w=52)])
    cracks, obs = cracks_of(dets)
    assert [(c.slices, c.box()[0], c.box()[2]) for c in cracks] == [([204, 205, 206, 207], 80, 132)]
    assert len(cracks[0].detections) == 6
    # Linking is the same whatever order the boxes come in.
    again, _ = cracks_of(list(reversed(dets)))
    assert [(c.slices, len(c.detections)) for c in again] == [([204, 205, 206, 207], 6)]


def test_a_forking_crack_stays_one_crack():
    dets = [det(s, x=100) for s in (205, 206)] + [det(s, x=93) for s in (207, 208)] + \
        [det(s, x=108) for s in (207, 208)]
    cracks, _ = cracks_of(dets)
    assert [(c.slices, len(c.detections)) for c in cracks] == [([205, 206, 207, 208], 6)]


def test_two_cracks_in_one_roi_stay_apart():
    dets = [det(s, x=20) for s in range(205, 210)] + [det(s, x=120) for s in range(207, 212)]
    cracks, _ = cracks_of(dets)
    assert [(c.first_slice, c.box()[0]) for c in cracks] == [(205, 20), (207, 120)]
    assert len({c.crack_id for c in cracks}) == 2


def test_a_crack_whose_box_shifts_slice_by_slice_is_one_crack():
    # Each box overlaps its neighbour only; first and last do not overlap at all.
    dets = [det(205 + k, x=100 + 6 * k, y=50 + 3 * k) for k in range(6)]
    assert dets[0].x2 < dets[-1].x1
    cracks, _ = cracks_of(dets)
    assert len(cracks) == 1 and len(cracks[0].slices) == 6
    rec = cracks[0].record("B1", "[Z軸]")
    assert (rec["x1"], rec["x2"], rec["z1"], rec["z2"]) == (100, 140, 205, 210)
    assert rec["peak_score"] == pytest.approx(0.9) and rec["n_slices"] == 6


def test_rois_and_scans_are_tracked_separately():
    dets = [det(s, roi="left") for s in (205, 206)] + [det(s, roi="right") for s in (207, 208)]
    assert cracks_of(dets)[0] == []
    other = [det(s, scan="s2") for s in range(205, 209)]
    tracks = link(other + [det(205)], {"s1": list(range(200, 231)), "s2": list(range(200, 231))}, DEFAULT)
    assert [(t.scan_id, len(t.slices)) for t in tracks] == [("s1", 1), ("s2", 4)]


def test_two_boxes_in_one_slice_join_the_same_crack():
    dets = [det(s) for s in range(205, 209)] + [det(206, x=104, y=60)]
    cracks, _ = cracks_of(dets)
    assert len(cracks) == 1 and len(cracks[0].detections) == 5


def test_settings_are_checked():
    with pytest.raises(ValueError):
        TrackingSettings(min_consecutive_slices=0)
