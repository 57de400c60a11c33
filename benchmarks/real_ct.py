"""PatchCore on real CT and on the synthetic demo, side by side: the benchmark that picks defaults.

Real backgrounds: thin cracks injected into the 20 real slices of
``data/battery_xct/cell_vol`` (``anodect.demo.realct``: 8 normal training cells, 12
test cells of which 6 cracked, test ROIs sharing no source pixel with training
ROIs), at each difficulty level and for several seeds (each seed draws other
views of the volume and other cracks). Synthetic: the demo of ``config/config.yaml``.

For every candidate setting (features, coreset, volume evidence) and every set,
PatchCore is trained on the normal cells (``PatchCore.fit_scans``: the bank, then
the automatic thresholds from held-out cells) and scores the test scans
(``score_volume``); both kinds of evidence are then judged:

- crop-level AUROC (one crop = one slice x one ROI; positive when a true crack box
  lies in it) and slice-level AUROC (best crop of the slice);
- at the automatic threshold, through the pipeline's own decisions
  (``evidence.ScoreMaps.flagged`` + ``decisions.decide``: regions, tracking, 4 slices):
  cracked cells NG, normal cells NG, and crack recall (3-D matching as in the report).

Usage:
    python benchmarks/real_ct.py                     # every candidate, every set (about 30 min on 2 cores)
    python benchmarks/real_ct.py --candidates default --levels medium --seeds 7
Results: a table on stdout and ``<out>/real_ct.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from anodect.config import Roi, load_config, rois_from_config  # noqa: E402
from anodect.crops import extract_crops  # noqa: E402
from anodect.decisions import DecisionSettings, decide  # noqa: E402
from anodect.evidence import ScoreMaps  # noqa: E402
from anodect.devices import set_threads  # noqa: E402
from anodect.metrics import crack_metrics  # noqa: E402
from anodect.demo.generator import DemoSettings  # noqa: E402
from anodect.demo.generator import generate as generate_demo  # noqa: E402
from anodect.patchcore.model import PatchCore, PatchCoreSettings  # noqa: E402
from anodect.demo.realct import RealCTSettings  # noqa: E402
from anodect.demo.realct import generate as generate_real  # noqa: E402
from anodect.tracking import TrackingSettings  # noqa: E402

# What each candidate changes from the pipeline's defaults (config/config.yaml).
CANDIDATES = {
    "default": {},
    "median, shifted (before #30)": {"volume": {"reference": "median", "edges": "shifted"}},
    "kernel 1/sqrt(n) (before kernel_width)": {"volume": {"kernel_width": 1.0}},
    "no slab": {"volume": {"slab": 1}},
    "slab 5": {"volume": {"slab": 5}},
    "window 1": {"volume": {"window": 1}},
    "window 5": {"volume": {"window": 5}},
    "exact coreset (before #27)": {"coreset_block_picks": 0},
    "approximate search": {"search": {"index": "approximate"}},
    "coreset 1%": {"coreset_fraction": 0.01},
    "pad not counted": {"count_include_pad": False},
    "coreset 1%, pad not counted": {"coreset_fraction": 0.01, "count_include_pad": False},
    "blocks.2+blocks.4": {"layers": ["blocks.2", "blocks.4"]},
    "input x2": {"input_scale": 2.0},
}


def make_settings(config: dict, change: dict, crop_hw: tuple[int, int]) -> PatchCoreSettings:
    pc = {**config["patchcore"], "volume": {**config["patchcore"]["volume"], **change.get("volume", {})}}
    pc.update({k: v for k, v in change.items() if k not in ("volume", "input_scale")})
    if "input_scale" in change:
        pc["input_size"] = [int(round(s * change["input_scale"])) for s in crop_hw]
    return PatchCoreSettings.from_config(pc)


def dataset(kind: str, level: str, seed: int, out: Path, config: dict) -> tuple[Path, list[Roi]]:
    """Generate (once) a real-background set or the synthetic demo; returns its folder and ROIs."""
    if kind == "demo":
        rois = rois_from_config(config)
        folder = out / "data" / f"demo-s{seed}"
        if not (folder / "manifest.json").is_file():
            settings = replace(DemoSettings.from_config(config), out_dir=str(folder), seed=seed)
            rng = config["filter_index_range"]
            generate_demo(folder, settings, rois, crack_range=(rng["min"], rng["max"]), workers=2)
        return folder, rois
    real = load_config(ROOT / "config" / "real_ct.yaml")
    rois = rois_from_config(real)
    folder = out / "data" / f"real-{level}-s{seed}"
    if not (folder / "manifest.json").is_file():
        settings = replace(RealCTSettings.from_config(real), out_dir=str(folder), seed=seed, difficulty=level,
                           source_dir=str(ROOT / "data" / "battery_xct" / "cell_vol"))
        generate_real(folder, settings, rois)
    return folder, rois


def load_crops(folder: Path, rois: list[Roi], config: dict, split: str) -> dict:
    """The pipeline's crops (``extract_crops``: window, context) of every scan of a split."""
    out = {}
    for battery in sorted((folder / "scans" / split).iterdir()):
        files = sorted(battery.glob("*/*.tif"))
        table = pd.DataFrame({"slice_index": [int(re.search(r"_(\d{4})\.tiff?$", f.name).group(1)) for f in files],
                              "path": [str(f) for f in files], "page": -1})
        crop_set, _ = extract_crops(battery.name, table, rois, config["window"], None, config["crop_context"])
        out[battery.name] = crop_set
    return out


def evaluate(model: PatchCore, test: dict, truth: Path, tracking: TrackingSettings) -> dict:
    boxes = pd.read_csv(truth / "boxes.csv")
    positive = set(zip(boxes.battery_id, boxes.slice_index, boxes.roi))
    cells = pd.read_csv(truth / "cells.csv").set_index("battery_id")
    true_cracks = pd.read_csv(truth / "cracks.csv")
    true_cracks = true_cracks[true_cracks.battery_id.isin(test)]
    rows, arrays = [], {}
    for name, cs in test.items():
        r = model.score_volume(cs.crops, cs.slice_indices, cs.context)
        arrays[name] = {"slice_indices": cs.slice_indices, "roi_names": cs.roi_names, "roi_boxes": cs.roi_boxes,
                        "scores": r.scores, "maps": r.maps, "volume_scores": r.volume_scores,
                        "volume_maps": r.volume_maps}
        for k, s in enumerate(cs.slice_indices):
            for j, roi in enumerate(cs.roi_names):
                rows.append((name, int(s), str(roi), float(r.scores[k, j]), float(r.volume_scores[k, j]),
                             (name, int(s), str(roi)) in positive))
    crops = pd.DataFrame(rows, columns=["battery", "slice", "roi", "slice_ev", "volume_ev", "y"])
    slices = crops.groupby(["battery", "slice"]).max(numeric_only=True)
    result = {}
    auto = model.metadata["auto_threshold"]
    for evidence in ("slice", "volume"):
        col = f"{evidence}_ev"
        # A crop or slice not judged (volume.edges: complete leaves out the scan's ends) scores below
        # every judged one: a crack there counts as missed, not as left out.
        floor = float(crops[col].min()) - 1.0 if crops[col].notna().any() else 0.0
        settings = DecisionSettings(threshold=auto[evidence], tracking=tracking, evidence=evidence)
        cracks, verdicts = [], {}
        for name, a in arrays.items():
            scan = {"scan_id": name, "battery_id": name, "axis": ""}
            d = decide("patchcore", scan, ScoreMaps.from_arrays({"scan_id": name, **a}).flagged(settings), [int(i) for i in a["slice_indices"]], {},
                       tracking)
            cracks.append(d.cracks)
            verdicts[name] = d.verdict
        predicted = pd.concat(cracks, ignore_index=True)
        truth_ng = {n: cells.loc[n, "verdict"] == "NG" for n in test}
        result[evidence] = {
            "crop_auroc": float(roc_auc_score(crops.y, crops[col].fillna(floor))),
            "slice_auroc": float(roc_auc_score(slices.y, slices[col].fillna(floor))),
            "threshold": auto[evidence],
            "cracked_ng": int(sum(verdicts[n] == "NG" for n in test if truth_ng[n])),
            "n_cracked": int(sum(truth_ng.values())),
            "normal_ng": int(sum(verdicts[n] == "NG" for n in test if not truth_ng[n])),
            "n_normal": int(sum(not v for v in truth_ng.values())),
            "crack_recall": crack_metrics(predicted, true_cracks, len(test), key="battery_id")["recall"],
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--levels", nargs="*", default=["easy", "medium", "hard"],
                        help="real-background levels (none: the demo alone)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[7, 8, 9],
                        help="real-background seeds for the medium level (easy and hard use the first)")
    parser.add_argument("--no-demo", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "real_ct"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    set_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = load_config(ROOT / "config" / "config.yaml")
    sets = [("real", lvl, s) for lvl in args.levels for s in (args.seeds if lvl == "medium" else args.seeds[:1])]
    if not args.no_demo:
        sets.append(("demo", "synthetic", config["demo"]["seed"]))
    tracking = TrackingSettings(min_consecutive_slices=config["decisions"]["min_consecutive_slices"],
                                max_gap=config["decisions"]["max_gap"], link_margin=config["decisions"]["link_margin"])
    results = []
    load = [os.getloadavg()[0]]
    t_start = time.perf_counter()
    for kind, level, seed in sets:
        folder, rois = dataset(kind, level, seed, out, config)
        train = load_crops(folder, rois, config, "train_normal")
        test = load_crops(folder, rois, config, "test")
        crop_hw = next(iter(train.values())).crops.shape[2:]
        for name in args.candidates:
            settings = make_settings(config, CANDIDATES[name], crop_hw)
            t0 = time.perf_counter()
            model = PatchCore(settings).fit_scans([(c.crops, c.slice_indices) for c in train.values()],
                                                  config["crop_context"])
            fit_s = time.perf_counter() - t0
            metrics = evaluate(model, test, folder / "truth", tracking)
            load.append(os.getloadavg()[0])
            row = {"set": kind, "level": level, "seed": seed, "candidate": name, "fit_s": round(fit_s, 1),
                   "bank": int(len(model.bank)), **{f"{ev}.{k}": v for ev, m in metrics.items() for k, v in m.items()}}
            results.append(row)
            print(json.dumps(row), flush=True)
    table = pd.DataFrame(results)
    (out / "real_ct.json").write_text(json.dumps({"results": results, "load_1min": load,
                                                  "seconds": round(time.perf_counter() - t_start)}, indent=1))
    print(f"\nmachine load (1-min average) during the run: median {np.median(load):.2f}, "
          f"range {min(load):.2f}-{max(load):.2f}; {os.cpu_count()} cores")
    print(summary(table))


def summary(table: pd.DataFrame) -> str:
    """Markdown: per candidate and set (mean over seeds), both kinds of evidence."""
    lines = []
    for evidence in ("volume", "slice"):
        lines += [f"\n{evidence} evidence:",
                  "| candidate | set | seeds | crop AUROC | slice AUROC | cracked NG | normal NG | crack recall |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for (cand, kind, level), g in table.groupby(["candidate", "set", "level"], sort=False):
            def rng(col, digits=3):
                v = g[f"{evidence}.{col}"].astype(float)
                return f"{v.mean():.{digits}f}" + (f" ({v.min():.{digits}f}-{v.max():.{digits}f})" if len(v) > 1 else "")
            ng = f"{g[f'{evidence}.cracked_ng'].sum()}/{g[f'{evidence}.n_cracked'].sum()}"
            fp = f"{g[f'{evidence}.normal_ng'].sum()}/{g[f'{evidence}.n_normal'].sum()}"
            label = "demo" if kind == "demo" else f"real {level}"
            lines.append(f"| {cand} | {label} | {len(g)} | {rng('crop_auroc')} | {rng('slice_auroc')} | {ng} | {fp} | "
                         f"{rng('crack_recall', 2)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
