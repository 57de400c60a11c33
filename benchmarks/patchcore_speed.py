"""PatchCore speed and accuracy on the demo, both sides measured in one run.

Prints crops per second for
  (a) the pipeline's scoring of whole scans, end to end (crops file in, score file out),
  (b) the model's own compute on the same crops already in memory (backbone + search),
  (c) a per-crop baseline that does what the original tool does: batch 1, a PNG
      round-trip per crop, the full memory bank (no coreset);
then a table of coreset fraction and feature dimension against slice-level AUROC
and scoring speed, and the slice-level AUROC of the default setting.

Run after `make run` (it reads results/crops and the demo's truth):
    .venv/bin/python benchmarks/patchcore_speed.py [--results results] [--threads 2]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image
from sklearn.metrics import roc_auc_score

from anodect.config import load_config
from anodect.crops import CropSet
from anodect.devices import set_threads
from anodect.patchcore import PatchCore, PatchCoreSettings
from anodect.patchcore.coreset import greedy_coreset
from anodect.patchcore.model import inner_patches
from anodect.patchcore.search import NearestNeighbourIndex
from anodect.patchcore.stage import score_scan


def load_sets(results: Path, role: str) -> list[tuple[str, CropSet]]:
    sheet = pd.read_csv(results / "scans.tsv", sep="\t")
    rows = sheet[sheet["role"] == role]
    return [(r.battery_id, CropSet.load(results / "crops" / f"{r.scan_id}.npz")) for r in rows.itertuples()]


def demo_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="results")
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--threads", type=int, default=2)
    return parser


def load_demo(args: argparse.Namespace):
    """Config, per-slice truth, normal training scans and test scans of a finished demo run."""
    set_threads(args.threads)
    results = Path(args.results)
    config = load_config(args.config)
    truth = pd.read_csv(Path(config["demo"]["out_dir"]) / "truth" / "slices.csv")
    return config, truth, load_sets(results, "train_normal"), load_sets(results, "inspect")


def slice_auroc(scores_by_scan: list[np.ndarray], test: list[tuple[str, CropSet]], truth: pd.DataFrame) -> float:
    labels, scores = [], []
    for (battery, crop_set), s in zip(test, scores_by_scan):
        cracked = truth[(truth["battery_id"] == battery)].set_index("slice_index")["n_cracks"]
        labels += [int(cracked[i] > 0) for i in crop_set.slice_indices]
        scores += list(s.reshape(crop_set.crops.shape[:2]).max(1))
    return roc_auc_score(labels, scores)


def compute_only(model: PatchCore, crops: np.ndarray, context: int) -> float:
    """(b): backbone forward plus nearest-neighbour search, nothing else; seconds."""
    import torch

    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(crops), model.settings.batch_size):
            feats = model._embed_batch(crops[start:start + model.settings.batch_size])
            rows, cols = inner_patches(model.geometry(crops.shape[1:])[1], feats.shape[1:3], crops.shape[1:], context)
            model.index.search(feats[:, rows, cols].reshape(-1, feats.shape[-1]).cpu().numpy())
    return time.perf_counter() - t0


def original_style(model: PatchCore, full_index: NearestNeighbourIndex, crops: np.ndarray, context: int) -> float:
    """(c): one crop at a time through a PNG file, searched against every training patch; seconds."""
    import torch

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        for i, crop in enumerate(crops):
            path = Path(tmp) / f"crop_{i}.png"
            cv2.imwrite(str(path), crop)
            back = np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("L"))
            feats = model._embed_batch(back[None])
            rows, cols = inner_patches(model.geometry(crops.shape[1:])[1], feats.shape[1:3], crops.shape[1:], context)
            patch = full_index.search(feats[:, rows, cols].reshape(-1, feats.shape[-1]).cpu().numpy())
            float(patch.max())
    return time.perf_counter() - t0


def main() -> None:
    parser = demo_parser(__doc__)
    parser.add_argument("--baseline-crops", type=int, default=24, help="crops timed for (c)")
    parser.add_argument("--fractions", default="0.0025,0.005,0.01,0.02,0.05,0.1")
    parser.add_argument("--ratio-only", action="store_true",
                        help="only (a) and (b) for the default model, each --repeats times")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.ratio_only:
        return pipeline_vs_compute(args)
    results = Path(args.results)
    config, truth, train, test = load_demo(args)
    context = train[0][1].context
    train_crops = np.concatenate([c.crops.reshape(-1, *c.crops.shape[2:]) for _, c in train])
    test_crops = np.concatenate([c.crops.reshape(-1, *c.crops.shape[2:]) for _, c in test])
    settings = PatchCoreSettings.from_config(config["patchcore"])
    print(f"demo: {len(train_crops)} training crops ({len(train)} normal scans), {len(test_crops)} test crops "
          f"({len(test)} scans), crop {train_crops.shape[1]}x{train_crops.shape[2]} incl. {context} px context; "
          f"{args.threads} threads")

    # One greedy run to the largest fraction: its first k picks are the k-point coreset.
    model = PatchCore(settings)
    feats = model.embed(train_crops)
    rows, cols = inner_patches(model.geometry(train_crops.shape[1:])[1], feats.shape[1:3], train_crops.shape[1:], context)
    flat = feats[:, rows, cols].reshape(-1, feats.shape[-1])
    fractions = sorted(float(f) for f in args.fractions.split(","))
    t0 = time.perf_counter()
    order = greedy_coreset(flat, max(fractions), settings.projection_dim, seed=settings.seed)
    t_coreset = time.perf_counter() - t0
    print(f"memory bank candidates: {len(flat)} patches x {flat.shape[1]} dims; greedy coreset to "
          f"{max(fractions):.2%} took {t_coreset:.1f} s ({t_coreset / len(order) * 1e3:.2f} ms per pick)")

    print("\ncoreset  dims  bank    AUROC   crops/s (scoring: backbone, search, maps)")
    table = []
    for dims in (None, flat.shape[1] // 2):
        for fraction in fractions:
            k = max(1, int(round(len(flat) * fraction)))
            bank = flat[np.sort(order[:k])]
            if dims:
                import torch
                import torch.nn.functional as F

                bank = F.adaptive_avg_pool1d(torch.from_numpy(bank)[:, None], dims)[:, 0].numpy()
            variant = PatchCore(PatchCoreSettings(**{**settings.__dict__, "feature_dim": dims}))
            variant.bank = np.ascontiguousarray(bank)
            variant.index = NearestNeighbourIndex(variant.bank)
            t = time.perf_counter()
            res = variant.score(test_crops, context)
            speed = len(test_crops) / (time.perf_counter() - t)
            per_scan = np.split(res.scores, np.cumsum([c.crops.shape[0] * c.crops.shape[1] for _, c in test])[:-1])
            auroc = slice_auroc(per_scan, test, truth)
            table.append((fraction, dims or flat.shape[1], len(bank), auroc, speed))
            print(f"{fraction:7.2%}  {dims or flat.shape[1]:4d}  {len(bank):6d}  {auroc:.4f}  {speed:7.1f}")

    # The default model, trained as the pipeline trains it.
    t0 = time.perf_counter()
    model = PatchCore(settings).fit(train_crops, context)
    t_train = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / "model")
        model = PatchCore.load(Path(tmp) / "model", batch_size=settings.batch_size)
        t0 = time.perf_counter()
        for i, (_, crop_set) in enumerate(test):
            src = results / "crops" / f"{crop_set.scan_id}.npz"
            score_scan(model, src, Path(tmp) / f"scores_{i}.npz")
        t_a = time.perf_counter() - t0
        per_scan = [np.load(Path(tmp) / f"scores_{i}.npz")["scores"].ravel() for i in range(len(test))]
    t_b = compute_only(model, test_crops, context)
    full = NearestNeighbourIndex(flat)
    sub = test_crops[: args.baseline_crops]
    t_c = original_style(model, full, sub, context)
    a, b, c = len(test_crops) / t_a, len(test_crops) / t_b, len(sub) / t_c
    print(f"\ndefault: {settings.backbone} {list(model.backbone_info.layers)}, coreset {settings.coreset_fraction:.2%} "
          f"-> bank {model.bank.shape}, trained in {t_train:.1f} s")
    print(f"(a) pipeline, whole scans, file to file : {a:8.1f} crops/s")
    print(f"(b) model compute only (backbone+search): {b:8.1f} crops/s")
    print(f"(c) original-style per crop, full bank  : {c:8.2f} crops/s  (on {len(sub)} crops, bank {len(flat)})")
    print(f"(a)/(b) = {a / b:.2f}   (a)/(c) = {a / c:.1f}")
    print(f"slice-level AUROC at the default setting: {slice_auroc(per_scan, test, truth):.4f}")


def pipeline_vs_compute(args: argparse.Namespace) -> None:
    """(a) and (b) for the default model trained as the pipeline trains it, repeated: median and range."""
    import os

    from dataclasses import replace

    from anodect.patchcore.volume import VolumeSettings, slab_crops

    results = Path(args.results)
    config, truth, train, test = load_demo(args)
    settings = PatchCoreSettings.from_config(config["patchcore"])
    context = train[0][1].context
    trained = results / "patchcore" / "model"
    if not (trained / "model.json").is_file():  # the run's own model when there is one, else the same training
        PatchCore(settings).fit_scans([(c.crops, c.slice_indices) for _, c in train], context).save(trained)
    model = PatchCore.load(trained, batch_size=settings.batch_size)
    settings = replace(settings, volume=VolumeSettings.from_config(model.metadata.get("volume")),
                       coreset_fraction=model.metadata["coreset_fraction"])
    # (b) sees the crops as the model does: slab-averaged, in memory.
    slabbed = np.concatenate([slab_crops(c.crops, c.slice_indices, settings.volume.slab).reshape(-1, *c.crops.shape[2:])
                              for _, c in test])
    n = len(slabbed)
    a_runs, b_runs, load = [], [], [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for i, (_, crop_set) in enumerate(test):
                score_scan(model, results / "crops" / f"{crop_set.scan_id}.npz", Path(tmp) / f"scores_{i}.npz")
            a_runs.append(n / (time.perf_counter() - t0))
            b_runs.append(n / compute_only(model, slabbed, context))
            load.append(os.getloadavg()[0])
    a, b = np.array(a_runs), np.array(b_runs)
    ratio = a / b
    print(f"default: {settings.backbone} {list(model.backbone_info.layers)}, coreset {settings.coreset_fraction:.2%}, "
          f"volume {settings.volume.as_dict()}; {n} test crops; {args.threads} threads; {args.repeats} runs")
    print(f"(a) pipeline, whole scans, file to file (slab, scoring, volume maps): median {np.median(a):.1f} "
          f"crops/s, range {a.min():.1f}-{a.max():.1f}")
    print(f"(b) model compute only (backbone+search)                         : median {np.median(b):.1f} "
          f"crops/s, range {b.min():.1f}-{b.max():.1f}")
    print(f"(a)/(b) per run: median {np.median(ratio):.2f}, range {ratio.min():.2f}-{ratio.max():.2f}")
    print(f"machine load (1-min average): median {np.median(load):.2f}, range {min(load):.2f}-{max(load):.2f}, "
          f"{os.cpu_count()} cores")


if __name__ == "__main__":
    main()
