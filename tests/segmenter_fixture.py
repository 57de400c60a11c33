"""A crack segmenter trained on windows of the real CT volume, frozen for the detection test.

The detection test ("finds a crack through 4 slices in a real scan, flags nothing in a
normal one") needs a segmenter as the pipeline trains it: one small enough to train in a
test's minute found a crack in some placements and not others. This module trains one with
the pipeline's default settings (``config/config.yaml``'s ``segmenter`` section, rendered cracks
alone) on windows of ``data/battery_xct/cell_vol`` in one half of the winding, holds two
windows out for its automatic threshold, and saves it to ``tests/data/segmenter_real/``. The
test scores a window in the other half, which it never saw.

Run it again when the segmenter's network, inputs or defaults change (the test refuses a model
whose settings differ from the defaults):

    .venv/bin/python tests/segmenter_fixture.py [--threads 2]

``--check`` trains nothing: it puts the test's crack at 6 positions x 3 spans into the test window
and the two held-out ones and counts how many the frozen model's decisions find, and whether
each window without a crack is OK (so the test's one placement is not a lucky one).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "data" / "segmenter_real"
CONTEXT = 16
ROI_W, ROI_H = 120, 96
AXIS = (366.4, 378.9)  # the cell's axis in the volume (``realct.cell_axis``)
RADIUS = 175  # px from the axis to a window's centre: on the winding, clear of the mandrel and the can
TRAIN_ANGLES = (120, 160, 200, 240, 280)  # degrees, image axes (y down)
HELD_OUT_ANGLES = (65, 335)
TEST_ANGLE = 20


def window(angle: float) -> tuple[int, int]:
    """The ROI's corner (x, y) of the window centred ``RADIUS`` from the axis at ``angle``."""
    t = math.radians(angle)
    return (int(round(AXIS[0] + RADIUS * math.cos(t) - ROI_W / 2)),
            int(round(AXIS[1] + RADIUS * math.sin(t) - ROI_H / 2)))


def real_crops(angles) -> tuple[list[np.ndarray], np.ndarray]:
    """One 'cell' per angle: its window of the volume with ``CONTEXT``, 8-bit [20, 1, H, W], and the
    slice numbers (061-080)."""
    sys.path.insert(0, str(REPO / "src"))
    from anodect.demo.realct import load_volume

    vol = load_volume(REPO / "data" / "battery_xct" / "cell_vol")
    lo, hi = np.percentile(vol, [0.5, 99.5])
    v8 = np.clip((vol - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
    out = []
    for angle in angles:
        x, y = window(angle)
        out.append(v8[:, y - CONTEXT:y + ROI_H + CONTEXT, x - CONTEXT:x + ROI_W + CONTEXT][:, None].copy())
    return out, np.arange(61, 61 + len(vol))


def default_settings():
    """The pipeline's default segmenter settings (``config/config.yaml``)."""
    from anodect.config import load_config
    from anodect.segmenter.model import SegmenterSettings

    return SegmenterSettings.from_config(load_config(REPO / "config" / "config.yaml")["segmenter"])


def crack(stack: np.ndarray, x: float, y: float, first: int):
    """The test's medium crack (16 grey levels, 2 px, 22 px, 4 slices from ``first``) across the
    layers at (x, y) of a window's crops."""
    from anodect.synthesis import Crack, layer_normal

    return Crack(x, y, layer_normal(stack[first], x, y), length=22.0, width=2.0, depth=16.0, first=first,
                 drift=((0.0, 0.0), (0.4, 0.2), (0.8, 0.3), (1.0, 0.6)))


def decided(model, crops: np.ndarray, indices: np.ndarray):
    """The pipeline's decisions for one window (``config/config.yaml``'s decision settings, the
    model's automatic threshold): (flagged boxes, ScanDecision)."""
    from anodect.config import load_config
    from anodect.decisions import decide, settings_from_params
    from anodect.evidence import ScoreMaps
    from anodect.registry import get

    config = load_config(REPO / "config" / "config.yaml")
    settings = settings_from_params(get("segmenter").decision_params(config), FIXTURE / "model.json", "segmenter")
    scores, maps, _ = model.score(crops, indices, CONTEXT)
    crop_set = type("Crops", (), {"scan_id": "w", "slice_indices": indices, "roi_names": np.array(["roi"]),
                                  "roi_boxes": np.array([[0, 0, ROI_W, ROI_H]])})
    flagged = ScoreMaps.from_crops(crop_set, scores, maps, model.metadata.get("model_id", "")).flagged(settings)
    return flagged, decide("segmenter", {"scan_id": "w", "battery_id": "w", "axis": ""}, flagged,
                           [int(i) for i in indices], {}, settings.tracking)


def check() -> None:
    from anodect.segmenter.model import Segmenter
    from anodect.synthesis import render

    model = Segmenter.load(FIXTURE)
    for angle in (TEST_ANGLE, *HELD_OUT_ANGLES):
        (crops,), indices = real_crops([angle])
        stack = crops[:, 0].astype(np.float32)
        found = 0
        for x, y in ((30, 30), (60, 48), (90, 70), (40, 75), (100, 25), (70, 60)):
            for first in (2, 7, 12):
                drawn, _ = render(stack, crack(stack, CONTEXT + x, CONTEXT + y, first))
                cracked = crops.copy()
                cracked[:, 0] = np.clip(np.rint(drawn), 0, 255).astype(np.uint8)
                d = decided(model, cracked, indices)[1]
                s0 = int(indices[first])
                found += any(c.first_slice <= s0 and c.last_slice >= s0 + 3 for c in d.cracks.itertuples())
        print(f"window at {angle} degrees: without a crack {decided(model, crops, indices)[1].verdict}; "
              f"cracks found {found} of 18")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--check", action="store_true", help="count the frozen model's finds; train nothing")
    args = parser.parse_args()
    if args.check:
        sys.path.insert(0, str(REPO / "src"))
        check()
        return
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sys.path.insert(0, str(REPO / "src"))
    from anodect.devices import set_threads
    from anodect.segmenter.model import Segmenter, TrainingCell

    set_threads(args.threads)
    settings = default_settings()
    crops, indices = real_crops(TRAIN_ANGLES + HELD_OUT_ANGLES)
    cells = [TrainingCell.of(f"w{a:03d}", c, indices, settings.inputs)
             for a, c in zip(TRAIN_ANGLES + HELD_OUT_ANGLES, crops)]
    n = len(TRAIN_ANGLES)
    model = Segmenter(settings).fit(cells[:n], cells[n:], CONTEXT, [{"scan_id": c.scan_id} for c in cells])
    model.save(FIXTURE)
    print(f"saved {FIXTURE}: automatic threshold {model.metadata['auto_threshold']['slice']}")


if __name__ == "__main__":
    main()
