"""RF-DETR speed and accuracy on the demo, both sides of every comparison measured in one run.

Prints
  1. where a training step's CPU time goes: median seconds per step (batch 4) of forward,
     loss and backward+optimizer for rfdetr's Nano defaults (resolution 384,
     300 queries x 13 groups) against the cuts the pipeline makes (resolution,
     queries, groups), all from random weights as in the demo;
  2. training seconds per epoch on the pipeline's demo dataset (rfdetr's own
     ``train()``, one epoch, the config's settings);
  3. prediction crops per second on CPU, batched (the pipeline) and one by one;
  4. on the demo test scans: slice-level AP (slice score = best box confidence) and
     box recall at IoU 0.3, at the score floor and at rf_detr_threshold;
  5. with --long-epochs N: the same settings trained N epochs without early stopping
     (is it the budget?), its best validation mAP@50, loss and test slice-level AP.

Run after `make run` (it reads results/crops, results/rfdetr and the demo's truth):
    .venv/bin/python benchmarks/rfdetr_speed.py [--results results] [--threads 2] [--skip-train]
The step profile alone needs crops only (e.g. after `make real-ct`):
    .venv/bin/python benchmarks/rfdetr_speed.py --steps-only --steps 5 --results results/real_ct \
        --config config/real_ct.yaml
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score

sys.path.insert(0, str(Path(__file__).parent))
from patchcore_speed import demo_parser, load_demo  # noqa: E402

from anodect.rfdetr.model import TrainSettings, build, train  # noqa: E402
from anodect.rfdetr.stage import crops_for, load_detector, to_slice_boxes  # noqa: E402


def step_profile(configs, steps: int, crop_shape, threads: int) -> pd.DataFrame:
    """Seconds per training step (forward, loss, backward + AdamW) on random crops with one box each."""
    from rfdetr.config import TrainConfig
    from rfdetr.models.lwdetr import build_criterion_from_config

    torch.set_num_threads(threads)
    rows = []
    g = torch.Generator().manual_seed(0)
    h, w = crop_shape
    for name, resolution, queries, groups in configs:
        settings = TrainSettings(pretrain_weights=None, num_queries=queries, group_detr=groups, resolution=resolution)
        model = build(settings, "cpu")
        model.model_config.resolution = resolution
        net = model.model.model
        net.train()
        criterion, _ = build_criterion_from_config(model.model_config, TrainConfig(dataset_dir="unused"))
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        images = torch.rand(4, 3, resolution, resolution, generator=g)
        targets = [{"labels": torch.zeros(1, dtype=torch.long),
                    "boxes": torch.tensor([[0.5, 0.5, 24 / w, 8 / h]])} for _ in range(4)]
        times = np.zeros((steps, 3))
        for i in range(steps + 1):
            t0 = time.perf_counter()
            out = net(images, targets)
            t1 = time.perf_counter()
            losses = criterion(out, targets)
            loss = sum(losses[k] * criterion.weight_dict[k] for k in losses if k in criterion.weight_dict)
            t2 = time.perf_counter()
            opt.zero_grad()
            loss.backward()
            opt.step()
            t3 = time.perf_counter()
            if i:  # the first step warms caches
                times[i - 1] = (t1 - t0, t2 - t1, t3 - t2)
        # Median over the timed steps, and the range of the whole step.
        med, total = np.median(times, 0), times.sum(1)
        rows.append({"setting": name, "resolution": resolution, "queries x groups": f"{queries} x {groups}",
                     "forward s": med[0], "loss s": med[1], "backward+opt s": med[2],
                     "s/image": np.median(total) / 4, "s/image range": f"{total.min() / 4:.3f}-{total.max() / 4:.3f}"})
    return pd.DataFrame(rows)


def epoch_seconds(dataset: Path, config: dict, threads: int) -> tuple[float, int]:
    settings = TrainSettings.from_config({**config["rfdetr"], "epochs": 1, "early_stopping": False})
    tmp = Path(tempfile.mkdtemp(prefix="rfdetr-bench."))
    try:
        t0 = time.perf_counter()
        train(dataset, settings, tmp, threads, config["class_label"])
        seconds = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n_train = len(list((dataset / "train").glob("*.png")))
    return seconds, n_train


def evaluate(detector, config, test, truth, truth_boxes) -> dict:
    rf = config["rfdetr"]
    tables = []
    for _, cs in test:
        dets = detector.predict(crops_for(detector, cs), rf["score_floor"])
        tables.append(to_slice_boxes(dets, cs, detector.context))
    return accuracy(tables, test, truth, truth_boxes, [rf["score_floor"], config["rf_detr_threshold"]])


def long_run(dataset: Path, config: dict, epochs: int, threads: int, test, truth, truth_boxes) -> None:
    """Train the pipeline's settings for ``epochs`` without early stopping and evaluate that model."""
    settings = TrainSettings.from_config({**config["rfdetr"], "epochs": epochs, "early_stopping": False})
    tmp = Path(tempfile.mkdtemp(prefix="rfdetr-long."))
    try:
        meta = train(dataset, settings, tmp, threads, config["class_label"])
        detector = load_detector(tmp / "checkpoint.pth", {"device": "cpu", "batch_size": 16})
        acc = evaluate(detector, config, test, truth, truth_boxes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best = max((h.get("val/mAP_50") or 0, h.get("val/ema_mAP_50") or 0) for h in meta["history"])
    losses = [h["train/loss"] for h in meta["history"] if h.get("train/loss") is not None]
    print(f"\n5. {epochs} epochs without early stopping: {meta['train_seconds'] / 60:.0f} min, best validation "
          f"mAP@50 {max(best):.4f}, training loss {losses[0]:.1f} -> {losses[-1]:.1f}, "
          f"test slice-level AP {acc['slice_ap']:.3f}")


def prediction_speed(detector, crops: np.ndarray, repeats: int) -> tuple[np.ndarray, np.ndarray]:
    """Crops per second batched (the pipeline's batch size) and one by one, same crops, ``repeats`` times."""
    detector.predict(crops[:2], 0.05)  # warm-up
    batched, single = [], []
    size = detector.batch_size
    for _ in range(repeats):
        detector.batch_size = size
        t0 = time.perf_counter()
        detector.predict(crops, 0.05)
        batched.append(len(crops) / (time.perf_counter() - t0))
        detector.batch_size = 1
        t0 = time.perf_counter()
        detector.predict(crops, 0.05)
        single.append(len(crops) / (time.perf_counter() - t0))
    detector.batch_size = size
    return np.array(batched), np.array(single)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def accuracy(tables, test, truth_slices, truth_boxes, thresholds) -> dict:
    labels, scores = [], []
    recalled = {t: 0 for t in thresholds}
    n_truth = 0
    for (battery, crop_set), table in zip(test, tables):
        cracked = truth_slices[truth_slices["battery_id"] == battery].set_index("slice_index")["n_cracks"]
        best = table.groupby("slice_index")["confidence"].max()
        for i in crop_set.slice_indices:
            labels.append(int(cracked[i] > 0))
            scores.append(float(best.get(i, 0.0)))
        tb = truth_boxes[(truth_boxes["battery_id"] == battery)
                         & truth_boxes["slice_index"].isin(crop_set.slice_indices)]
        for (s, roi), group in tb.groupby(["slice_index", "roi"]):
            # Truth boxes are inclusive pixels; predictions are continuous corners.
            gt = group[["x1", "y1", "x2", "y2"]].to_numpy(float) + [0, 0, 1, 1]
            pred = table[(table["slice_index"] == s) & (table["roi"] == roi)]
            n_truth += len(gt)
            for t in thresholds:
                p = pred[pred["confidence"] >= t][["x1", "y1", "x2", "y2"]].to_numpy(float)
                if len(p):
                    recalled[t] += int((iou(gt, p).max(1) >= 0.3).sum())
    return {"slice_ap": average_precision_score(labels, scores), "n_slices": len(labels),
            "n_cracked": int(sum(labels)), "n_truth_boxes": n_truth,
            "recall": {t: recalled[t] / max(n_truth, 1) for t in thresholds}}


def main() -> None:
    parser = demo_parser(__doc__)
    parser.add_argument("--skip-train", action="store_true", help="skip the one-epoch training measurement")
    parser.add_argument("--steps", type=int, default=3, help="training steps per setting in the step profile")
    parser.add_argument("--long-epochs", type=int, default=0, help="also train this many epochs (0: skip)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each prediction measurement")
    parser.add_argument("--steps-only", action="store_true",
                        help="only the training-step profile (needs crops, no trained model)")
    args = parser.parse_args()
    import os

    load = [os.getloadavg()[0]]
    config, truth, _, test = load_demo(args)
    results = Path(args.results)
    truth_boxes = pd.read_csv(Path(config["demo"]["out_dir"]) / "truth" / "boxes.csv")
    rf = config["rfdetr"]
    crop_shape = test[0][1].crops.shape[-2:]

    print("1. Training step, batch 4, random weights (rfdetr Nano):")
    configs = [("rfdetr defaults", 384, 300, 13), ("resolution 192", 192, 300, 13),
               ("30 queries x 3 groups", 384, 30, 3),
               ("pipeline", rf["resolution"], rf["num_queries"] or 300, rf["group_detr"] or 13)]
    print(step_profile(configs, args.steps, crop_shape, args.threads).to_string(index=False, float_format="%.3f"))
    load.append(os.getloadavg()[0])
    print(f"(median of {args.steps} timed steps after a warm-up step, {args.threads} threads; load median "
          f"{np.median(load):.2f}, range {min(load):.2f}-{max(load):.2f}, {os.cpu_count()} cores)")
    if args.steps_only:
        return

    if not args.skip_train:
        seconds, n = epoch_seconds(results / "rfdetr" / "dataset", config, args.threads)
        print(f"\n2. One training epoch on the demo dataset ({n} training crops, rfdetr train(), "
              f"validation included): {seconds:.0f} s, {seconds / n:.2f} s per training crop")

    detector = load_detector(results / "rfdetr" / "model" / "checkpoint.pth",
                             {"device": "cpu", "batch_size": rf["predict_batch_size"]})
    crops = np.concatenate([crops_for(detector, cs) for _, cs in test[:2]])
    batched, single = prediction_speed(detector, crops, args.repeats)
    load.append(os.getloadavg()[0])
    print(f"\n3. Prediction on {len(crops)} crops, CPU, {args.threads} threads, {args.repeats} runs: batched "
          f"({detector.batch_size}) median {np.median(batched):.1f} crops/s (range {batched.min():.1f}-"
          f"{batched.max():.1f}), one by one median {np.median(single):.1f} ({single.min():.1f}-{single.max():.1f});"
          f" load median {np.median(load):.2f} (range {min(load):.2f}-{max(load):.2f}), {os.cpu_count()} cores")

    acc = evaluate(detector, config, test, truth, truth_boxes)
    print(f"\n4. Demo test scans ({len(test)} cells, {acc['n_slices']} slices, {acc['n_cracked']} cracked, "
          f"{acc['n_truth_boxes']} crack boxes): slice-level AP {acc['slice_ap']:.4f}")
    for t, r in acc["recall"].items():
        print(f"   box recall at IoU 0.3, confidence >= {t}: {r:.3f}")
    if args.long_epochs:
        long_run(results / "rfdetr" / "dataset", config, args.long_epochs, args.threads, test, truth, truth_boxes)


if __name__ == "__main__":
    main()
