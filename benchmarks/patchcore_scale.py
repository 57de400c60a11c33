"""PatchCore training at production size: time and peak memory against the number of training crops.

A user's normal set is about 10 cells x 300 slices x 2 ROIs = 6,000 crops (8 M patches);
the demo trains on 520. For each size and each coreset (``blocked``: the pipeline's
``patchcore.coreset_block_picks``; ``exact``: the greedy selection over every patch, as before
issue #27, run only up to ``--exact-up-to`` crops because it grows as N²), PatchCore is
trained as the pipeline trains it (``PatchCore.fit_scans``: embedding, coreset, search
index, the held-out automatic thresholds) in a fresh process, and the process's peak
memory (ru_maxrss) is read at the end.

The training sets are built from a finished run's normal training cells (its
``crops/train_normal-*``): the cells as they are, then mirrored left-right, top-bottom and
both (a mirrored cell is a plausible other cell with the same texture), then shifted by a
few pixels, cell after cell until the size is reached (the last cell cut short).

Each configuration is repeated ``--repeats`` times (median and range, with the machine's
1-minute load). Crop and slice AUROC of the blocked and the exact coreset on the demo and
the real-CT sets come from ``benchmarks/real_ct.py --candidates default
"exact coreset (before #27)"`` (README, "Performance").

Usage:
    .venv/bin/python benchmarks/patchcore_scale.py results [--sizes 520 1200 6000] [--exact-up-to 520]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

TRANSFORMS = [lambda c: c, lambda c: c[..., ::-1], lambda c: c[..., ::-1, :], lambda c: c[..., ::-1, ::-1]]


def training_set(run: Path, n_crops: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Scans (crops [S, R, H, W], slice indices) adding up to ``n_crops`` crops (module docstring)."""
    from anodect.crops import CropSet

    cells = [cs for cs in map(CropSet.load, sorted(run.glob("crops/train_normal-*/*.npz"))) if cs.n_slices]
    if not cells:
        raise SystemExit(f"{run}: no training crops (crops/train_normal-*/*.npz); give a finished run's folder")
    scans, total, k = [], 0, 0
    while total < n_crops:
        cs = cells[k % len(cells)]
        variant = k // len(cells)
        crops = TRANSFORMS[variant % len(TRANSFORMS)](cs.crops)
        if variant >= len(TRANSFORMS):
            crops = np.roll(crops, 3 * (variant // len(TRANSFORMS)), axis=-1)
        per_slice = crops.shape[1]
        take = min(crops.shape[0], -(-(n_crops - total) // per_slice))
        scans.append((np.ascontiguousarray(crops[:take]), cs.slice_indices[:take]))
        total += take * per_slice
        k += 1
    return scans


def child(args) -> None:
    """One training in this process; prints one JSON line."""
    from dataclasses import replace

    from snakemake.utils import update_config
    import yaml

    from anodect.config import validate_schema
    from anodect.devices import set_threads
    from anodect.patchcore.model import PatchCore, PatchCoreSettings

    set_threads(args.threads)
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text(encoding="utf-8"))
    if args.config:
        update_config(config, yaml.safe_load(Path(args.config).read_text(encoding="utf-8")))
    config = validate_schema(config)
    settings = PatchCoreSettings.from_config(config["patchcore"])
    if args.method == "exact":
        settings = replace(settings, coreset_block_picks=0)
    scans = training_set(Path(args.run), args.size)
    t0 = time.perf_counter()
    model = PatchCore(settings).fit_scans(scans, config["crop_context"])
    total = time.perf_counter() - t0
    meta = model.metadata
    # Search time per crop: exact and approximate on the same bank.
    from anodect.patchcore.search import NearestNeighbourIndex, SearchSettings

    sample = scans[0][0][:8].reshape(-1, *scans[0][0].shape[2:])
    search_ms = {}
    for kind in ("exact", "approximate"):
        index = NearestNeighbourIndex(model.bank, settings=SearchSettings(index=kind, nprobe=settings.search.nprobe,
                                                                          seed=settings.seed))
        result = model.score(sample, config["crop_context"], index=index)
        search_ms[f"{kind} search ms/crop"] = round(1000 * result.timings["search"] / len(sample), 1)
    print(json.dumps({
        "crops": int(sum(c.shape[0] * c.shape[1] for c, _ in scans)), "patches": meta["n_train_patches"],
        "cells": len(scans), "train_s": round(total, 1), **{f"{k}_s": v for k, v in meta["timings_s"].items()},
        "peak_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2, 2),
        "bank": meta["bank_size"], "coreset": meta["coreset"], "search": meta["search"]["backend"],
        "recall@1": meta["search"]["recall_at_1"], "volume threshold": meta["auto_threshold"]["volume"],
        **search_ms}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="RUN_DIR[:CONFIG]: a finished run (its training crops and config)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[520, 1200, 6000])
    parser.add_argument("--exact-up-to", type=int, default=520, help="largest size the exact coreset runs at")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--repeats-above", type=int, default=1200,
                        help="sizes above this run once (a 6,000-crop training takes minutes)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "patchcore_scale.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="blocked", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    run, _, cfg = args.run.partition(":")
    if args.child:
        args.run, args.config = run, cfg or None
        return child(args)
    rows = []
    for size in args.sizes:
        for method in ("blocked", "exact"):
            if method == "exact" and size > args.exact_up_to:
                continue
            for r in range(args.repeats if size <= args.repeats_above else 1):
                load = os.getloadavg()[0]
                cmd = [sys.executable, __file__, args.run, "--child", "--method", method, "--size", str(size),
                       "--threads", str(args.threads)]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode:
                    raise SystemExit(f"{method} at {size} crops failed:\n{out.stderr[-3000:]}")
                row = {"run": run, "size": size, "method": method, "repeat": r, "load": round(load, 2),
                       **json.loads(out.stdout.strip().splitlines()[-1])}
                rows.append(row)
                print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    table = pd.DataFrame(rows)

    def spread(s: pd.Series) -> str:
        return f"{s.median():.1f}" + (f" ({s.min():.1f}-{s.max():.1f})" if len(s) > 1 else "")

    summary = table.groupby(["size", "method"], sort=False).agg(
        crops=("crops", "first"), patches=("patches", "first"), runs=("repeat", "count"),
        train_s=("train_s", spread), coreset_s=("coreset_s", spread), heldout_s=("heldout_s", spread),
        peak_gb=("peak_gb", "max"), bank=("bank", "first"), search=("search", "first"),
        recall=("recall@1", "min"), exact_ms=("exact search ms/crop", "median"),
        approx_ms=("approximate search ms/crop", "median"), load=("load", lambda s: f"{s.median():.2f} ({s.min():.2f}-{s.max():.2f})"))
    print(f"\n{args.threads} threads, {os.cpu_count()} cores; seconds as median (range) over the runs\n")
    print(summary.reset_index().to_markdown(index=False))


if __name__ == "__main__":
    main()
