"""Where a saved segmenter's false cracks come from on real CT: every crack its decisions confirm in
a normal test cell of a real-background set, mapped back to the source volume
(``data/battery_xct/cell_vol``) through the cell's view (flip, rotation, shift, slice order: the
set's ``manifest.json``).

One real volume makes every cell of these sets, so a false crack found in several cells at one
source position is a structure of the scanned cell itself, not an artefact of one view. Prints
one row per false crack: cell, ROI, slices (the cell's and the source's), box, and its centre in
the source (pixels, radius and angle about the cell's axis). No training.

Usage:
    .venv/bin/python benchmarks/segmenter_false_cracks.py MODEL_DIR [MODEL_DIR ...] [--level medium]
(folders named ``real-s<seed>-...`` as ``benchmarks/segmenter.py --save`` writes them)
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_ct import dataset, load_crops  # noqa: E402

from anodect.config import load_config  # noqa: E402
from anodect.decisions import decide, settings_from_params  # noqa: E402
from anodect.demo.realct import RealCell, view_matrix  # noqa: E402
from anodect.devices import set_threads  # noqa: E402
from anodect.evidence import ScoreMaps  # noqa: E402
from anodect.registry import get  # noqa: E402
from anodect.segmenter.model import Segmenter  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--level", default="medium")
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "real_ct"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads)
    config = load_config(ROOT / "config" / "config.yaml")
    params = get("segmenter").decision_params(config)  # the pipeline's own decision settings
    rows = []
    for folder in args.models:
        seed = int(re.match(r"real-s(\d+)", Path(folder).name).group(1))
        data, rois = dataset("real", args.level, seed, Path(args.out), config)
        manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
        centre = tuple(manifest["source"]["cell_axis"])
        views = {c["battery_id"]: RealCell(**{**c, "shift": tuple(c["shift"]), "cracks": []})
                 for c in manifest["cells"]}
        verdicts = pd.read_csv(data / "truth" / "cells.csv").set_index("battery_id")["verdict"]
        model = Segmenter.load(folder)
        settings = settings_from_params({**params, "threshold": "auto"}, Path(folder) / "model.json", "segmenter")
        tracking = settings.tracking
        test = {n: cs for n, cs in load_crops(data, rois, config, "test").items() if verdicts[n] != "NG"}
        for name, cs in test.items():
            scores, maps, _ = model.score(cs.crops, cs.slice_indices, config["crop_context"])
            evidence = ScoreMaps.from_crops(cs, scores, maps, "false-cracks")
            found = decide("segmenter", {"scan_id": name, "battery_id": name, "axis": ""},
                           evidence.flagged(settings), [int(i) for i in cs.slice_indices], {}, tracking).cracks
            view = views[name]
            inverse = cv2.invertAffineTransform(view_matrix(view, centre))
            n_src = manifest["source"]["slices"]
            for c in found.itertuples():
                sx, sy = inverse[:, :2] @ np.array([(c.x1 + c.x2) / 2, (c.y1 + c.y2) / 2]) + inverse[:, 2]
                # The cell's slice k (0-based) is the source's slice n-1-k when its order is reversed.
                src = sorted((n_src - 1 - (s - view.first_slice)) if view.reverse_z else (s - view.first_slice)
                             for s in (int(c.first_slice), int(c.last_slice)))
                rows.append({"model": Path(folder).name, "cell": name.split()[0], "roi": c.roi,
                             "slices": f"{int(c.first_slice)}-{int(c.last_slice)}",
                             "source slices": f"{src[0] + view.first_slice}-{src[1] + view.first_slice}",
                             "box": f"{int(c.x1)},{int(c.y1)}-{int(c.x2)},{int(c.y2)}",
                             "source x": round(float(sx)), "source y": round(float(sy)),
                             "radius": round(math.hypot(sx - centre[0], sy - centre[1])),
                             "angle": round(math.degrees(math.atan2(sy - centre[1], sx - centre[0])))})
                print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    print(pd.DataFrame(rows).to_markdown(index=False) if rows else "no false cracks in the normal test cells")


if __name__ == "__main__":
    main()
