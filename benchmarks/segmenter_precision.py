"""Does the segmenter judge alike in bfloat16 and float32? Saved segmenters scored both ways.

``segmenter.precision: bfloat16`` runs the network's convolutions in bfloat16 (8 bits of
mantissa), several times faster on CPUs with native bfloat16 (AMX, AVX512-BF16). Speed is only
worth having if the verdicts stay: for each saved model (the ``--save`` folders of
``benchmarks/segmenter.py``, named ``<set>-s<seed>-...``) this scores its held-out normal cells
(the automatic threshold, recomputed at each precision as training computes it) and its test
cells at both precisions and reports the largest change of a probability, the threshold, crop
and slice AUROC, cracked and normal cells NG, crack recall and box AP50 at the pipeline's
decision settings, and the model's own crops/s. No training.

Usage:
    .venv/bin/python benchmarks/segmenter_precision.py MODEL_DIR [MODEL_DIR ...] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_ct import dataset, load_crops  # noqa: E402
from segmenter import judge, score_cells  # noqa: E402

from anodect.config import load_config  # noqa: E402
from anodect.decisions import settings_from_params  # noqa: E402
from anodect.devices import set_threads  # noqa: E402
from anodect.registry import get  # noqa: E402
from anodect.segmenter.model import Segmenter, TrainingCell  # noqa: E402

PRECISIONS = ("float32", "bfloat16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--level", default="medium", help="the real sets' crack level")
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "real_ct"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads)
    config = load_config(ROOT / "config" / "config.yaml")
    context = config["crop_context"]
    decision = settings_from_params({**get("segmenter").decision_params(config), "threshold": 0.5})
    rows, load = [], [os.getloadavg()[0]]
    for folder in args.models:
        kind, seed = re.match(r"(real|demo)-s(\d+)", Path(folder).name).groups()
        level = args.level if kind == "real" else "synthetic"
        data, rois = dataset(kind, level, int(seed), Path(args.out), config)
        test = load_crops(data, rois, config, "test")
        normal = load_crops(data, rois, config, "train_normal")
        maps = {}
        for precision in PRECISIONS:
            model = Segmenter.load(folder, settings={"precision": precision})
            held_ids = [s["scan_id"] for s in model.metadata["heldout_scans"]]
            heldout = [TrainingCell.of(sid, normal[sid].crops, normal[sid].slice_indices, model.settings.inputs)
                       for sid in held_ids]
            model.metadata["auto_threshold"] = model.heldout_threshold(heldout, context)
            scored = score_cells(model, test, context)
            maps[precision] = np.concatenate([m.ravel() for _, m, _ in scored.values()])
            r = judge(model, test, data / "truth", decision.tracking, context, decision.map_threshold,
                      decision.region_join, scored)
            load.append(os.getloadavg()[0])
            rows.append({"model": Path(folder).name, "set": "demo" if kind == "demo" else f"real {level}",
                         "precision": precision, "threshold": round(r["threshold"], 4),
                         "crop AUROC": round(r["crop_auroc"], 4), "slice AUROC": round(r["slice_auroc"], 4),
                         "cracked NG": f"{r['cracked_ng']}/{r['n_cracked']}",
                         "normal NG": f"{r['normal_ng']}/{r['n_normal']}",
                         "crack recall": round(r["crack_recall"], 2), "box AP50": round(r["box_ap50"], 3),
                         "max |dp|": round(float(np.abs(maps[precision] - maps["float32"]).max()), 4),
                         "model crops/s": round(r["model_crops_per_s"], 1)})
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    print(f"\n{args.threads} threads; machine load (1-min) median {np.median(load):.2f}, range "
          f"{min(load):.2f}-{max(load):.2f}\n")
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
