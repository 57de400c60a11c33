"""The crack segmenter on real CT and on the demo: the benchmark behind its defaults, and what it
finds that it was never taught to draw.

Sets (``benchmarks/real_ct.py`` makes them): real backgrounds (``data/battery_xct``) with cracks
of the project's real-CT renderer at the easy, medium and hard levels, for each data seed (each
seed draws other views of the volume, so other training and test cells); and the synthetic demo.
For every candidate setting and training seed the segmenter is trained on the set's normal
training cells exactly as the pipeline's ``train_segmenter`` job does (``stage``'s split by cell,
held-out threshold), timed, and judged on the test cells:

- crop-level AUROC (one crop = one slice x one ROI; positive when a true crack box lies in it)
  and slice-level AUROC (best crop of the slice);
- at the automatic threshold, through the pipeline's own decisions (``ScoreMaps.flagged`` +
  ``decisions.decide``: regions, tracking, 4 slices): cracked cells NG, normal cells NG, crack
  recall (3-D matching as in the report), and box AP at IoU 0.5 (pycocotools, as in the report).

Generalisation, reported apart: the real sets' normal test cells (never trained on) with cracks
the segmenter was not trained to draw, crop AUROC of the cracked crops against the same crops
without cracks:

- ``demo renderer``: the demo generator's crack model (its geometry ranges, and its physics: the
  anode pulled towards the void by ``contrast``, before the scanner's blur) drawn into the real slices;
- ``beyond training ranges``: the project's renderer with longer (40-70 px), fainter (3-8 grey
  levels) and branching cracks than ``segmenter.cracks`` holds.

Usage:
    python benchmarks/segmenter.py                               # defaults: 2 data seeds x 2 training seeds
    python benchmarks/segmenter.py --candidates default narrow --seeds 7 --train-seeds 0
Results: a table on stdout and ``<out>/segmenter<tag>.json``; ``--summary FILE...`` prints the table
of several runs' files together (median and range over all their rows).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_ct import dataset, load_crops  # noqa: E402

from anodect.config import load_config  # noqa: E402
from anodect.decisions import DecisionSettings, decide  # noqa: E402
from anodect.devices import set_threads  # noqa: E402
from anodect.evidence import ScoreMaps  # noqa: E402
from anodect.metrics import coco_box_ap, crack_metrics  # noqa: E402
from anodect.segmenter.model import Segmenter, SegmenterSettings, TrainingCell, split_cells  # noqa: E402
from anodect.synthesis import PSF_SIGMA, CrackRanges, capsule_band, render, sample  # noqa: E402
from anodect.tracking import TrackingSettings  # noqa: E402

# What each candidate changes from the pipeline's defaults (config/config.yaml).
CANDIDATES = {
    "default": {},
    "narrow (16-32-64)": {"channels": [16, 32, 64]},
    "residual 2-4 slices away": {"distant": [2, 4]},
    "1000 steps": {"steps": 1000},
    "matched residual (9 px)": {"match": 4},
    "cross-entropy alone (no Dice)": {"dice_weight": 0.0},
    "matched residual, cross-entropy alone": {"match": 4, "dice_weight": 0.0},
}
BEYOND = CrackRanges(depth=(3.0, 8.0), width=(1.0, 2.0), length=(40.0, 70.0), slices=(4, 8), branch_probability=1.0)
DEMO_RANGES = {"contrast": (0.3, 0.9), "width": (1.2, 3.0), "length": (12.0, 36.0), "slices": (4, 8)}
VISIBLE = 4.0  # grey levels: a crop holds a (generalisation) crack where >= 3 px lost at least this much


def train(cells: dict, settings: SegmenterSettings, context: int) -> tuple[Segmenter, float]:
    """As the train_segmenter job: cells split by cell, the held-out ones set the threshold."""
    training = {sid: TrainingCell.of(sid, c.crops, c.slice_indices, settings.inputs) for sid, c in cells.items()}
    train_ids, held_ids = split_cells(list(training), settings.heldout_fraction)
    t0 = time.perf_counter()
    model = Segmenter(settings).fit([training[i] for i in train_ids], [training[i] for i in held_ids], context,
                                    [{"scan_id": i} for i in training])
    return model, time.perf_counter() - t0


def score_cells(model: Segmenter, test: dict, context: int) -> dict:
    """Each test cell's (crop scores, maps, facts), scored once."""
    return {name: model.score(cs.crops, cs.slice_indices, context) for name, cs in test.items()}


def judge(model: Segmenter, test: dict, truth: Path, tracking: TrackingSettings, context: int,
          map_threshold: float = 0.5, join: int = 3, scored: dict | None = None) -> dict:
    """Crop and slice AUROC, verdicts at the automatic threshold, crack recall, box AP (regions
    outlined at ``map_threshold`` with pieces ``join`` apart joined, as the pipeline's
    ``decisions.segmenter_map_threshold`` and ``segmenter_region_join``)."""
    boxes = pd.read_csv(truth / "boxes.csv")
    positive = set(zip(boxes.battery_id, boxes.slice_index, boxes.roi))
    cells = pd.read_csv(truth / "cells.csv").set_index("battery_id")
    true_cracks = pd.read_csv(truth / "cracks.csv")
    true_cracks = true_cracks[true_cracks.battery_id.isin(test)]
    threshold = model.metadata["auto_threshold"]["slice"]
    settings = DecisionSettings(threshold=threshold, tracking=tracking, map_threshold=map_threshold, box_score="peak",
                                region_join=join)
    rows, cracks, verdicts, drawn, images = [], [], {}, [], []
    n_crops, seconds = 0, 0.0
    scored = scored or score_cells(model, test, context)
    for name, cs in test.items():
        scores, maps, facts = scored[name]
        n_crops, seconds = n_crops + scores.size, seconds + facts["seconds"]
        evidence = ScoreMaps.from_crops(cs, scores, maps, "benchmark")
        for k, s in enumerate(cs.slice_indices):
            images.append({"scan_id": name, "slice_index": int(s)})
            for j, roi in enumerate(cs.roi_names):
                rows.append((name, int(s), str(roi), float(scores[k, j]), (name, int(s), str(roi)) in positive))
        d = decide("segmenter", {"scan_id": name, "battery_id": name, "axis": ""}, evidence.flagged(settings),
                   [int(i) for i in cs.slice_indices], {}, tracking)
        cracks.append(d.cracks)
        verdicts[name] = d.verdict
        ranked = evidence.ranked(settings)
        ranked.insert(0, "scan_id", name)
        drawn.append(ranked)
    crops = pd.DataFrame(rows, columns=["battery", "slice", "roi", "score", "y"])
    slices = crops.groupby(["battery", "slice"]).max(numeric_only=True)
    truth_ng = {n: cells.loc[n, "verdict"] == "NG" for n in test}
    truth_boxes = boxes[boxes.battery_id.isin(test)].rename(columns={"battery_id": "scan_id"})
    ap = coco_box_ap(truth_boxes[["scan_id", "slice_index", "roi", "x1", "y1", "x2", "y2"]],
                     pd.concat(drawn, ignore_index=True), pd.DataFrame(images))
    return {
        "crop_auroc": float(roc_auc_score(crops.y, crops.score)),
        "slice_auroc": float(roc_auc_score(slices.y, slices.score)),
        "threshold": threshold,
        "cracked_ng": int(sum(verdicts[n] == "NG" for n in test if truth_ng[n])),
        "n_cracked": int(sum(truth_ng.values())),
        "normal_ng": int(sum(verdicts[n] == "NG" for n in test if not truth_ng[n])),
        "n_normal": int(sum(not v for v in truth_ng.values())),
        "crack_recall": crack_metrics(pd.concat(cracks, ignore_index=True), true_cracks, len(test),
                                      key="battery_id")["recall"],
        "box_ap50": ap["ap50"],
        "box_ap25": ap["ap25"],
        "model_crops_per_s": n_crops / max(seconds, 1e-9),
    }


def demo_style(stack: np.ndarray, rng: np.random.Generator, context: int) -> tuple[np.ndarray, np.ndarray]:
    """The demo generator's crack drawn into real slices: its geometry ranges, and its physics (the
    anode pulled towards the void by ``contrast`` inside the capsule, then the scanner's blur)."""
    n_slices, h, w = stack.shape
    n = int(rng.integers(DEMO_RANGES["slices"][0], min(DEMO_RANGES["slices"][1], n_slices) + 1))
    first = int(rng.integers(0, n_slices - n + 1))
    x, y = rng.uniform(context + 8, w - context - 8), rng.uniform(context + 8, h - context - 8)
    angle, length = rng.uniform(0, math.pi), rng.uniform(*DEMO_RANGES["length"])
    width, contrast = rng.uniform(*DEMO_RANGES["width"]), rng.uniform(*DEMO_RANGES["contrast"])
    out = stack.astype(np.float32).copy()
    drift = np.cumsum(np.r_[[[0.0, 0.0]], rng.normal(0, 0.5, (n - 1, 2))], axis=0)
    for k in range(n):
        s = first + k
        taper = 0.55 + 0.45 * math.sin(math.pi * (k + 0.5) / n)
        band, (x0, y0, x1, y1), _ = capsule_band(x + drift[k, 0], y + drift[k, 1], angle, length * taper, width,
                                                 (h, w))
        full = np.zeros((h, w), np.float32)
        full[y0:y1, x0:x1] = band
        void = cv2.erode(cv2.GaussianBlur(out[s], (0, 0), 1.0), np.ones((9, 9), np.uint8))
        out[s] -= cv2.GaussianBlur(contrast * full, (0, 0), PSF_SIGMA) * np.maximum(out[s] - void, 0)
    return out, stack.astype(np.float32) - out


def generalisation(model: Segmenter, normal: dict, context: int, seed: int, repeats: int = 3) -> dict:
    """Crop AUROC on cracks of other renderers and ranges, in the normal test cells' crops."""
    out = {}
    for family in ("demo renderer", "beyond training ranges"):
        rng = np.random.default_rng([seed, len(family)])
        ys, ss = [], []
        for cs in normal.values():
            clean, _, _ = model.score(cs.crops, cs.slice_indices, context)
            ys += [False] * clean.size
            ss += clean.ravel().tolist()
            for _ in range(repeats):
                for r in range(cs.crops.shape[1]):
                    stack = cs.crops[:, r].astype(np.float32)
                    if family == "demo renderer":
                        cracked, delta = demo_style(stack, rng, context)
                    else:
                        h, w = stack.shape[1:]
                        crack = sample(rng, (h, w), len(stack), BEYOND,
                                       centre=(rng.uniform(context + 8, w - context - 8),
                                               rng.uniform(context + 8, h - context - 8)))
                        cracked, _ = render(stack, crack)
                        delta = stack - cracked
                    crops = cs.crops.copy()
                    crops[:, r] = np.clip(np.rint(cracked), 0, 255).astype(np.uint8)
                    scores, _, _ = model.score(crops[:, [r]], cs.slice_indices, context)
                    visible = (delta[:, context:-context, context:-context] >= VISIBLE).sum(axis=(1, 2)) >= 3
                    ys += [True] * int(visible.sum())
                    ss += scores[visible, 0].tolist()
        out[family] = {"crop_auroc": float(roc_auc_score(ys, ss)), "n_cracked_crops": int(sum(ys))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", nargs="+", default=["default"], choices=list(CANDIDATES))
    parser.add_argument("--levels", nargs="*", default=["medium", "hard", "easy"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[7, 8], help="real-background data seeds")
    parser.add_argument("--train-seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--no-demo", action="store_true")
    parser.add_argument("--no-real", action="store_true", help="the demo alone")
    parser.add_argument("--demo-train-seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "real_ct"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tag", default="", help="results go to <out>/segmenter<tag>.json (runs side by side)")
    parser.add_argument("--model", help="judge this saved segmenter (model.json, weights.pt) instead of training "
                        "one: its data seed must be the one it was trained on")
    parser.add_argument("--summary", nargs="+", help="only print the table of these result files together")
    parser.add_argument("--label", help="with --summary: one name for every row's candidate (runs of one setting "
                        "made under different names, e.g. before and after it became the default)")
    parser.add_argument("--save", help="save each trained model under <save>/<set>-s<seed>-<candidate>-t<train seed>")
    args = parser.parse_args()
    if args.summary:
        rows = [r for f in args.summary for r in json.loads(Path(f).read_text())["results"]]
        if args.label:
            rows = [{**r, "candidate": args.label} for r in rows]
        print(summary(pd.DataFrame(rows)))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    set_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = load_config(ROOT / "config" / "config.yaml")
    context = config["crop_context"]
    tracking = TrackingSettings(min_consecutive_slices=config["decisions"]["min_consecutive_slices"],
                                max_gap=config["decisions"]["max_gap"], link_margin=config["decisions"]["link_margin"])
    results, load = [], [os.getloadavg()[0]]
    t_start = time.perf_counter()
    plans = [] if args.no_real else [("real", seed, args.train_seeds) for seed in args.seeds]
    if not args.no_demo:
        plans.append(("demo", config["demo"]["seed"], args.demo_train_seeds))
    for kind, seed, train_seeds in plans:
        levels = args.levels if kind == "real" else ["synthetic"]
        folders = {lvl: dataset(kind, lvl, seed, out, config)[0] for lvl in levels}
        # The training cells depend on the seed alone (the level draws only the test cracks).
        first = folders[levels[0]]
        rois = dataset(kind, levels[0], seed, out, config)[1]
        train_cells = load_crops(first, rois, config, "train_normal")
        for name in args.candidates:
            for tseed in train_seeds:
                section = {**config["segmenter"], **CANDIDATES[name], "seed": tseed}
                if args.model:
                    model = Segmenter.load(args.model)
                    fit_s = model.metadata["timings_s"]["train"]
                    tseed = model.settings.seed
                else:
                    model, fit_s = train(train_cells, SegmenterSettings.from_config(section), context)
                    if args.save:
                        slug = "".join(ch if ch.isalnum() else "-" for ch in name).strip("-")
                        model.save(Path(args.save) / f"{kind}-s{seed}-{slug}-t{tseed}")
                load.append(os.getloadavg()[0])
                for level, folder in folders.items():
                    test = load_crops(folder, rois, config, "test")
                    row = {"set": kind, "level": level, "seed": seed, "candidate": name, "train_seed": tseed,
                           "fit_s": round(fit_s, 1), **judge(model, test, folder / "truth", tracking, context,
                                     config["decisions"]["segmenter_map_threshold"],
                                     config["decisions"]["segmenter_region_join"])}
                    if kind == "real" and level == levels[0]:
                        cells = pd.read_csv(folder / "truth" / "cells.csv").set_index("battery_id")
                        normal = {n: c for n, c in test.items() if cells.loc[n, "verdict"] != "NG"}
                        for family, m in generalisation(model, normal, context, seed).items():
                            row[f"{family}.crop_auroc"] = m["crop_auroc"]
                            row[f"{family}.n"] = m["n_cracked_crops"]
                    results.append(row)
                    print(json.dumps(row), flush=True)
                load.append(os.getloadavg()[0])
    table = pd.DataFrame(results)
    (out / f"segmenter{args.tag}.json").write_text(json.dumps({"results": results, "load_1min": load,
                                                    "seconds": round(time.perf_counter() - t_start)}, indent=1))
    print(f"\nmachine load (1-min average) during the run: median {np.median(load):.2f}, "
          f"range {min(load):.2f}-{max(load):.2f}; {os.cpu_count()} cores")
    print(summary(table))


def summary(table: pd.DataFrame) -> str:
    """Markdown: per candidate and set, median and range over data and training seeds."""
    def rng(v, digits=3):
        v = v.dropna().astype(float)
        if not len(v):
            return "–"
        return f"{v.median():.{digits}f}" + (f" ({v.min():.{digits}f}-{v.max():.{digits}f})" if len(v) > 1 else "")

    lines = ["| candidate | set | runs | crop AUROC | slice AUROC | cracked NG | normal NG | crack recall | box AP50 "
             "| training s |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (cand, kind, level), g in table.groupby(["candidate", "set", "level"], sort=False):
        label = "demo" if kind == "demo" else f"real {level}"
        lines.append(f"| {cand} | {label} | {len(g)} | {rng(g.crop_auroc)} | {rng(g.slice_auroc)} | "
                     f"{g.cracked_ng.sum()}/{g.n_cracked.sum()} | {g.normal_ng.sum()}/{g.n_normal.sum()} | "
                     f"{rng(g.crack_recall, 2)} | {rng(g.box_ap50)} | {rng(g.fit_s, 0)} |")
    gen = [c for c in table.columns if c.endswith(".crop_auroc")]
    if gen:
        lines += ["", "| candidate | cracks not trained on (normal real test cells) | runs | crop AUROC |",
                  "| --- | --- | --- | --- |"]
        for cand, g in table.groupby("candidate", sort=False):
            for c in gen:
                lines.append(f"| {cand} | {c.removesuffix('.crop_auroc')} | {g[c].notna().sum()} | {rng(g[c])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
