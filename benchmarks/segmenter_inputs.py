"""How much the segmenter's residual input carries on real CT and on the demo: the residual's
robust noise (1.4826 x MAD, grey levels of the 8-bit crops) against the slices ``d`` slice
numbers away, for several ``d``, beside the crops' own spread. A residual as noisy as the crops
themselves tells a crack from nothing. No training; seconds.

Usage:
    .venv/bin/python benchmarks/segmenter_inputs.py [--seeds 7 8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_ct import dataset, load_crops  # noqa: E402

from anodect.config import load_config  # noqa: E402
from anodect.segmenter.inputs import InputSettings, residuals, scan_sigma  # noqa: E402

DISTANCES = [(1, 1), (2, 2), (2, 4), (3, 5), (4, 10)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[7, 8])
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "real_ct"))
    args = parser.parse_args()
    config = load_config(ROOT / "config" / "config.yaml")
    sets = [("real", s) for s in args.seeds] + [("demo", config["demo"]["seed"])]
    print("| set | crops' spread | " + " | ".join(f"residual {a}-{b} away" for a, b in DISTANCES) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in DISTANCES) + " |")
    for kind, seed in sets:
        folder, rois = dataset(kind, "medium" if kind == "real" else "synthetic", seed, Path(args.out), config)
        cells = load_crops(folder, rois, config, "train_normal")
        spread = np.median([1.4826 * np.median(np.abs(cs.crops - np.median(cs.crops))) for cs in cells.values()])
        noise = []
        for lo, hi in DISTANCES:
            values = []
            for cs in cells.values():
                for r in range(cs.crops.shape[1]):
                    res, _ = residuals(cs.crops[:, r], cs.slice_indices, InputSettings((lo, hi)))
                    values.append(scan_sigma(res[np.any(res != 0, axis=(1, 2))]))
            noise.append(float(np.median(values)))
        print(f"| {kind} (seed {seed}) | {spread:.1f} | " + " | ".join(f"{v:.1f}" for v in noise) + " |")


if __name__ == "__main__":
    main()
