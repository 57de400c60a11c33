"""How the segmenter's probability maps become boxes and verdicts: the map level that outlines a
region (``decisions.segmenter_map_threshold``) and the distance at which pieces join into one
region (``decisions.segmenter_region_join``), on real CT and on the demo.

A crack across the electrode layers darkens the slice where it breaks a layer, so the map shows
one piece per layer; the truth's box is the whole crack. This judges saved segmenters (the
``--save`` folders of ``benchmarks/segmenter.py``, named ``<set>-s<seed>-...``) on their test
cells once scored, for every level and join: box AP at IoU 0.5 (pycocotools, as the report),
box AP at IoU 0.25, cracked and normal cells NG at the automatic threshold, crack recall. No
training.

Usage:
    .venv/bin/python benchmarks/segmenter_boxes.py MODEL_DIR [MODEL_DIR ...] [--levels 0.5 0.2] [--joins 0 3 6 9]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_ct import dataset, load_crops  # noqa: E402
from segmenter import judge, score_cells  # noqa: E402

from anodect.config import load_config  # noqa: E402
from anodect.devices import set_threads  # noqa: E402
from anodect.decisions import settings_from_params  # noqa: E402
from anodect.registry import get  # noqa: E402
from anodect.segmenter.model import Segmenter  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--level", default="medium", help="the real sets' crack level")
    parser.add_argument("--levels", nargs="+", type=float, default=[0.5, 0.2])
    parser.add_argument("--joins", nargs="+", type=int, default=[0, 3, 6, 9])
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "real_ct"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads)
    config = load_config(ROOT / "config" / "config.yaml")
    d = config["decisions"]
    tracking = settings_from_params({**get("segmenter").decision_params(config), "threshold": 0.5}).tracking
    rows = []
    for folder in args.models:
        kind, seed = re.match(r"(real|demo)-s(\d+)", Path(folder).name).groups()
        level = args.level if kind == "real" else "synthetic"
        data, rois = dataset(kind, level, int(seed), Path(args.out), config)
        model = Segmenter.load(folder)
        test = load_crops(data, rois, config, "test")
        scored = score_cells(model, test, config["crop_context"])
        for map_level in args.levels:
            for join in args.joins:
                r = judge(model, test, data / "truth", tracking, config["crop_context"], map_level, join, scored)
                rows.append({"model": Path(folder).name, "set": "demo" if kind == "demo" else f"real {level}",
                             "map level": map_level, "join": join, "box AP50": round(r["box_ap50"], 3),
                             "box AP25": round(r["box_ap25"], 3),
                             "cracked NG": f"{r['cracked_ng']}/{r['n_cracked']}",
                             "normal NG": f"{r['normal_ng']}/{r['n_normal']}",
                             "crack recall": round(r["crack_recall"], 2)})
                print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    table = pd.DataFrame(rows)
    mark = (table["map level"] == d["segmenter_map_threshold"]) & (table["join"] == d["segmenter_region_join"])
    table.insert(0, "default", mark.map({True: "*", False: ""}))
    print(table.to_markdown(index=False))


if __name__ == "__main__":
    main()
