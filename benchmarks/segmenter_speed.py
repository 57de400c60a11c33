"""The crack segmenter's scoring speed, every side measured in one run, each repeated.

Crops per second, median and range over ``--repeats`` runs, with the machine's load, on the
real-CT benchmark's 12 test scans (20 slices x 2 ROIs of 167x128 px, 199x160 with context):

  (a) the pipeline's own job, end to end: ``segmenter.stage.score_scan`` per scan (crops file
      in, inputs built, network, score file written), as ``score_segmenter`` runs it;
  (m) the residual's reference alone: the median of each crop's distant slices by
      ``np.median`` and by the sorting network (``segmenter.inputs.median``), ms per crop;
  (b) the model's own compute on the same crops in memory (``Segmenter.score``: inputs and
      network);

for each scoring variant: the previous default (float32, 16 crops per forward pass, the
distant slices' median by ``np.median``), float32 and bfloat16 (``segmenter.precision``) at
several ``segmenter.score_batch_size`` with the sorting-network median, and the narrower
16-32-64 network. Speed does not depend on what the weights learned, so the networks are
seeded and untrained: no training needed. And

Usage:
    .venv/bin/python benchmarks/segmenter_speed.py [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_ct import dataset, load_crops  # noqa: E402

from anodect.config import load_config  # noqa: E402
from anodect.devices import set_threads  # noqa: E402
from anodect.segmenter import inputs  # noqa: E402
from anodect.segmenter.model import Segmenter, SegmenterSettings  # noqa: E402
from anodect.segmenter.stage import score_scan  # noqa: E402

WIDTHS = {"24-48-96 (default)": (24, 48, 96), "16-32-64": (16, 32, 64)}
# (name, channels, precision, score batch, numpy's median): the scoring variants timed side by side.
VARIANTS = [
    ("previous default: float32, batch 16, np.median", (24, 48, 96), "float32", 16, True),
    ("float32, batch 16", (24, 48, 96), "float32", 16, False),
    ("float32, batch 4 (default)", (24, 48, 96), "float32", 4, False),
    ("float32, batch 1", (24, 48, 96), "float32", 1, False),
    ("bfloat16, batch 4", (24, 48, 96), "bfloat16", 4, False),
    ("bfloat16, batch 8", (24, 48, 96), "bfloat16", 8, False),
    ("16-32-64, bfloat16, batch 4", (16, 32, 64), "bfloat16", 4, False),
]


@contextmanager
def numpy_median(enabled: bool):
    """The residual's reference with ``np.median`` (before the sorting network), for comparison."""
    saved = inputs.median
    if enabled:
        inputs.median = lambda values: np.median(np.asarray(values, np.float32), axis=0).astype(np.float32)
    try:
        yield
    finally:
        inputs.median = saved


def spread(values: list[float]) -> str:
    return f"{np.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scans", type=int, default=12, help="test scans scored per repeat")
    parser.add_argument("--steps", type=int, default=60, help="training steps timed per repeat")
    parser.add_argument("--no-training", action="store_true", help="time scoring only")
    parser.add_argument("--median-only", action="store_true", help="time the residual's median only")
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "real_ct"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    set_threads(args.threads)
    config = load_config(ROOT / "config" / "config.yaml")
    context = config["crop_context"]
    folder, rois = dataset("real", "medium", 7, Path(args.out), config)
    test = dict(list(load_crops(folder, rois, config, "test").items())[:args.scans])
    n_crops = sum(cs.crops.shape[0] * cs.crops.shape[1] for cs in test.values())
    load = [os.getloadavg()[0]]
    rows = []
    # (m) the residual's reference alone: np.median against the sorting network, per crop.
    stacks = [cs.crops[:, r].astype(np.float32) for cs in test.values() for r in range(cs.crops.shape[1])]
    fars = [stack[inputs.distant(cs_idx, p, inputs.InputSettings())] for stack, cs_idx in
            zip(stacks, [cs.slice_indices for cs in test.values() for _ in range(cs.crops.shape[1])])
            for p in range(len(stack))]
    fars = [f for f in fars if len(f)]
    for name, fn in (("np.median", lambda v: np.median(v, axis=0)), ("sorting network (default)", inputs.median)):
        per_crop = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for far in fars:
                fn(far)
            per_crop.append((time.perf_counter() - t0) / len(fars) * 1000)
            load.append(os.getloadavg()[0])
        rows.append((f"median of the distant slices: {name}", "(m) ms per crop",
                     f"{np.median(per_crop):.2f} ({min(per_crop):.2f}-{max(per_crop):.2f})"))
        print(" | ".join(rows[-1]), flush=True)
    variants = [] if args.median_only else VARIANTS
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, cs in test.items():
            paths[name] = Path(tmp) / f"{len(paths):02d}.crops.npz"
            cs.save(paths[name])
        models = {}
        for vname, channels, precision, batch, _ in variants:
            models[vname] = Segmenter(SegmenterSettings(channels=channels, precision=precision,
                                                        score_batch_size=batch, seed=0))
            models[vname].metadata = {"context": context, "model_id": "speed"}
        sides = {(v[0], side): [] for v in variants
                 for side in ("(a) pipeline job, end to end", "(b) model compute")}
        # Repeats outside, variants inside: a change in the machine's load falls on every variant alike.
        for _ in range(args.repeats):
            for vname, _, _, _, slow_median in variants:
                model = models[vname]
                with numpy_median(slow_median):
                    t0 = time.perf_counter()
                    for name, path in paths.items():
                        score_scan(model, path, Path(tmp) / "out.scores.npz")
                    sides[(vname, "(a) pipeline job, end to end")].append(n_crops / (time.perf_counter() - t0))
                    seconds = sum(model.score(cs.crops, cs.slice_indices, context)[2]["seconds"]
                                  for cs in test.values())
                    sides[(vname, "(b) model compute")].append(n_crops / seconds)
                load.append(os.getloadavg()[0])
        for (vname, side), values in sides.items():
            rows.append((vname, side, spread(values)))
            print(f"{vname} | {side} | {spread(values)}", flush=True)
    from anodect.segmenter.model import TrainingCell

    train_sets = load_crops(folder, rois, config, "train_normal")
    for wname, channels in ({} if args.no_training or args.median_only else WIDTHS).items():
        settings = SegmenterSettings(channels=channels, steps=args.steps, seed=0)
        cells = [TrainingCell.of(n, cs.crops, cs.slice_indices, settings.inputs) for n, cs in train_sets.items()]
        per_step = []
        for _ in range(args.repeats):
            model = Segmenter(settings).fit(cells, [], context, [], progress_every=10 ** 9)
            per_step.append(model.metadata["timings_s"]["train"] / args.steps)
            load.append(os.getloadavg()[0])
        full = [v * config["segmenter"]["steps"] / 60 for v in per_step]
        rows.append((f"{wname}, float32", "(t) training, s per step", f"{np.median(per_step):.3f} "
                     f"({min(per_step):.3f}-{max(per_step):.3f}); {config['segmenter']['steps']} steps: "
                     f"{np.median(full):.1f} min ({min(full):.1f}-{max(full):.1f})"))
        print(" | ".join(rows[-1]), flush=True)
    print(f"\n{n_crops} crops per repeat, {args.repeats} repeats, {args.threads} threads; machine load (1-min) "
          f"median {np.median(load):.2f}, range {min(load):.2f}-{max(load):.2f}; {os.cpu_count()} cores\n")
    print("| variant | side | crops/s, median (range) |\n| --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
