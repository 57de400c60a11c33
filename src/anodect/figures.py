"""Figures of the comparison report: threshold sweeps, per-battery slice profiles, the disagreement gallery.

Every figure is a PNG drawn with matplotlib's Agg backend (no display), at a
fixed size and DPI so reruns give the same files. Each model draws in its
plugin's colour (PatchCore blue, RF-DETR orange), the truth in green.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from . import registry  # noqa: E402

log = logging.getLogger(__name__)

TRUTH_COLOUR = "#2ca02c"


class _Names(dict):
    def __missing__(self, key):
        return registry.display(key)


class _Colours(dict):
    def __missing__(self, key):
        return TRUTH_COLOUR if key == "truth" else registry.get(key).colour


MODEL_NAMES = _Names()
COLOURS = _Colours()
DPI = 90
# Fixed metadata keeps the PNG bytes identical from run to run.
_PNG_META = {"Software": None}


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata=_PNG_META)
    plt.close(fig)
    return buf.getvalue()


def _scores(table: pd.DataFrame, model: str) -> np.ndarray:
    return table[f"{model}_score"].fillna(0.0).to_numpy(float)


def _unit_square(fig, ax, xlabel: str, ylabel: str, title: str, legend: str) -> bytes:
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc=legend, fontsize=7)
    return png(fig)


def roc_figure(table: pd.DataFrame, models: list[str], metrics: dict) -> bytes:
    """ROC curves of the slice score, every model on one plot."""
    rows = table[table["truth"].notna()]
    fig, ax = plt.subplots(figsize=(4.2, 4))
    for m in models:
        fpr, tpr, _ = roc_curve(rows["truth"].astype(bool), _scores(rows, m))
        auc = metrics["models"][m]["slice"]["auroc"]
        ax.plot(fpr, tpr, color=COLOURS[m], label=f"{MODEL_NAMES[m]} (AUROC {auc:.3f})" if auc is not None else m)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    return _unit_square(fig, ax, "false positive rate (slices)", "true positive rate (slices)", "ROC, slice level",
                        "lower right")


def pr_figure(table: pd.DataFrame, models: list[str], metrics: dict) -> bytes:
    """Precision-recall curves of the slice score, with each model's operating point."""
    rows = table[table["truth"].notna()]
    labels = rows["truth"].astype(bool)
    fig, ax = plt.subplots(figsize=(4.2, 4))
    for m in models:
        precision, recall, _ = precision_recall_curve(labels, _scores(rows, m))
        s = metrics["models"][m]["slice"]
        ax.plot(recall, precision, color=COLOURS[m], label=f"{MODEL_NAMES[m]} (AP {s['ap']:.3f})")
        ax.plot([s["recall"]], [s["precision"]], "o", color=COLOURS[m], mec="black",
                label=f"{MODEL_NAMES[m]} at threshold")
    ax.axhline(labels.mean(), color="grey", lw=0.8, ls=":", label=f"chance ({labels.mean():.2f})")
    return _unit_square(fig, ax, "recall (slices)", "precision (slices)", "Precision-recall, slice level",
                        "lower left")


def f1_figure(table: pd.DataFrame, models: list[str], metrics: dict) -> bytes:
    """F1 of ``slice score > t`` against t, one panel per model (their scales differ)."""
    rows = table[table["truth"].notna()]
    labels = rows["truth"].astype(bool).to_numpy()
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False)
    for ax, m in zip(axes[0], models):
        scores = _scores(rows, m)
        grid = np.unique(np.concatenate([scores, [metrics["models"][m]["threshold"]]]))
        f1 = []
        for t in grid:
            flagged = scores > t
            tp = int((flagged & labels).sum())
            denom = int(flagged.sum()) + int(labels.sum())
            f1.append(2 * tp / denom if denom else 0.0)
        ax.plot(grid, f1, color=COLOURS[m], lw=1.2)
        t = metrics["models"][m]["threshold"]
        ax.axvline(t, color="black", ls="--", lw=1, label=f"configured threshold {t:g}")
        full = metrics["models"][m].get("full_recall_threshold")
        if full is not None:
            ax.axvline(full, color=COLOURS["truth"], ls=":", lw=1.2, label=f"100% battery recall below {full:.3g}")
        ax.set(xlabel=f"{MODEL_NAMES[m]} threshold", ylabel="F1 (slices)", ylim=(0, 1.02),
               title=f"{MODEL_NAMES[m]}: F1 against threshold")
        if registry.get(m).evidence == "maps" and grid.max() > 20 * max(np.median(grid), 1e-9):
            ax.set_xscale("symlog")
        ax.legend(fontsize=7, loc="best")
    return png(fig)


def score_figure(table: pd.DataFrame, models: list[str], metrics: dict) -> bytes:
    """Slice scores against each other (two models) or their histograms (one panel per model), thresholds drawn."""
    truth = table["truth"] if "truth" in table else pd.Series(np.nan, index=table.index)
    known = truth.notna()
    fig, ax = plt.subplots(figsize=(4.6, 4))
    if len(models) == 2:
        a, b = models
        for label, mask, colour in (("true crack", known & truth.eq(True), COLOURS["truth"]),
                                    ("no crack", known & ~truth.eq(True), "grey"),
                                    ("no truth", ~known, "black")):
            if mask.any():
                ax.scatter(_scores(table[mask], a), _scores(table[mask], b), s=9, alpha=0.6, color=colour,
                           label=label)
        ax.axvline(metrics["models"][a]["threshold"], color=COLOURS[a], ls="--", lw=1)
        ax.axhline(metrics["models"][b]["threshold"], color=COLOURS[b], ls="--", lw=1)
        ax.set(xlabel=f"{MODEL_NAMES[a]} slice {registry.get(a).score_label()}",
               ylabel=f"{MODEL_NAMES[b]} {registry.get(b).score_label()}", title="Slice scores of the two models")
        ax.legend(fontsize=7)
        return png(fig)
    if len(models) > 2:
        plt.close(fig)
        fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6), squeeze=False)
    else:
        axes = [[ax]]
    for ax, m in zip(axes[0], models):
        ax.hist(_scores(table, m), bins=40, color=COLOURS[m])
        ax.axvline(metrics["models"][m]["threshold"], color="black", ls="--", lw=1)
        ax.set(xlabel=f"{MODEL_NAMES[m]} slice score", ylabel="slices", title="Slice scores")
    return png(fig)


def summary_figures(table: pd.DataFrame, models: list[str], metrics: dict) -> dict[str, bytes]:
    """The report's run-wide figures; curves only where there is ground truth with both classes."""
    out = {"scores": score_figure(table, models, metrics)}
    has_truth = "truth" in table and table["truth"].notna().any()
    if has_truth and all(metrics["models"][m]["slice"]["auroc"] is not None for m in models):
        out["roc"] = roc_figure(table, models, metrics)
        out["pr"] = pr_figure(table, models, metrics)
        out["f1_threshold"] = f1_figure(table, models, metrics)
    return out


def profile_figure(scan_id: str, rows: pd.DataFrame, models: list[str], metrics: dict,
                   truth_cracks: pd.DataFrame, cracks: dict[str, pd.DataFrame]) -> bytes:
    """One battery: each model's slice score against slice index, its threshold, true and found crack spans.

    Args:
        rows: this scan's rows of the report's slice table.
        truth_cracks: this scan's true cracks.
        cracks: model -> this scan's confirmed cracks (first_slice, last_slice).
    """
    fig, ax = plt.subplots(figsize=(7.5, 2.6))
    x = rows["slice_index"].to_numpy(int)
    for _, c in truth_cracks.iterrows():
        ax.axvspan(c["first_slice"] - 0.5, c["last_slice"] + 0.5, color=COLOURS["truth"], alpha=0.18, lw=0)
    # The first model on the left axis, the others on one right axis.
    axes = {models[0]: ax}
    if len(models) > 1:
        twin = ax.twinx()
        axes.update({m: twin for m in models[1:]})
    for m in models:
        a = axes[m]
        a.plot(x, _scores(rows, m), color=COLOURS[m], marker=".", ms=4, lw=1.2, label=MODEL_NAMES[m])
        a.axhline(metrics["models"][m]["threshold"], color=COLOURS[m], ls="--", lw=0.9)
        if len(models) < 3:
            a.set_ylabel(f"{MODEL_NAMES[m]} {registry.get(m).score_label()}", color=COLOURS[m], fontsize=8)
            a.tick_params(axis="y", labelcolor=COLOURS[m], labelsize=7)
        if registry.get(m).evidence == "boxes":
            a.set_ylim(0, 1.02)
    if len(models) > 2:
        ax.set_ylabel(f"{MODEL_NAMES[models[0]]} {registry.get(models[0]).score_label()}", fontsize=8)
        axes[models[1]].set_ylabel(" / ".join(f"{MODEL_NAMES[m]}" for m in models[1:]), fontsize=8)
        for a in {id(a): a for a in axes.values()}.values():
            a.tick_params(axis="y", labelsize=7)
        ax.legend(handles=[h for a in {id(a): a for a in axes.values()}.values() for h in a.get_lines()
                           if not h.get_label().startswith("_")], fontsize=6, loc="upper right")
    # Confirmed cracks as bars under the curves, one lane per model.
    lo, hi = ax.get_ylim()
    for lane, m in enumerate(models):
        for _, c in cracks.get(m, pd.DataFrame()).iterrows():
            y = lo + (0.03 + 0.05 * lane) * (hi - lo)
            ax.plot([c["first_slice"] - 0.4, c["last_slice"] + 0.4], [y, y], color=COLOURS[m], lw=4,
                    solid_capstyle="butt")
    ax.set_xlabel("slice index", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    span = " (green: true cracks; bars: confirmed cracks)" if len(truth_cracks) else " (bars: confirmed cracks)"
    ax.set_title(f"{scan_id}{span}", fontsize=8)
    return png(fig)


def gallery_figure(item: pd.Series, crops, evidence: dict, truth_boxes: pd.DataFrame, metrics: dict) -> bytes:
    """One disagreement: the crop with the truth, then each model's evidence: a heat map
    (score maps) or its boxes (scored boxes).

    Args:
        item: a row of the disagreements table (scan_id, slice_index, roi, scores, verdicts).
        crops: the scan's ``CropSet``.
        evidence: model -> the scan's maps [slice, roi, h, w] (score maps) or its boxes
            table in full-slice pixels (scored boxes), in report order.
        truth_boxes: the scan's true boxes (full-slice corners, ``anodect.regions``).
    """
    pos = int(np.flatnonzero(crops.slice_indices == int(item["slice_index"]))[0])
    r = [str(n) for n in crops.roi_names].index(str(item["roi"]))
    crop = crops.crops[pos, r]
    ox, oy = crops.origin(r)
    rx1, ry1, rx2, ry2 = crops.roi_in_crop(r)
    panels = ["truth", *evidence]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.1 * len(panels), 2.9), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        ax.imshow(crop, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.add_patch(Rectangle((rx1 - 0.5, ry1 - 0.5), rx2 - rx1, ry2 - ry1, fill=False, ec="white", ls=":", lw=0.8))
        ax.set_xticks([])
        ax.set_yticks([])
        if panel == "truth":
            here = truth_boxes[(truth_boxes["slice_index"] == int(item["slice_index"]))
                               & (truth_boxes["roi"] == str(item["roi"]))]
            for _, b in here.iterrows():
                # Corners on pixel edges; imshow centres pixel j on j, so edges sit at j - 0.5.
                ax.add_patch(Rectangle((b["x1"] - ox - 0.5, b["y1"] - oy - 0.5), b["x2"] - b["x1"],
                                       b["y2"] - b["y1"], fill=False, ec=COLOURS["truth"], lw=1.5))
            has = item.get("truth")
            label = "no truth" if pd.isna(has) else ("true crack" if bool(has) else "no crack")
            ax.set_title(f"slice {int(item['slice_index'])}, {item['roi']}: {label}", fontsize=8)
        elif registry.get(panel).evidence == "maps":
            heat = np.full(crop.shape, np.nan, np.float32)
            heat[ry1:ry2, rx1:rx2] = evidence[panel][pos, r]  # maps cover the ROI alone
            t = metrics["models"][panel]["threshold"]
            ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=max(t * 2, float(np.nanmax(heat))))
            verdict = "crack" if item[f"{panel}_anomaly"] else "OK"
            ax.set_title(f"{MODEL_NAMES[panel]} {item[f'{panel}_score']:.3g} (thr {t:g}): {verdict}", fontsize=8)
        else:
            t = metrics["models"][panel]["threshold"]
            predictions = evidence[panel]
            here = predictions[(predictions["slice_index"] == int(item["slice_index"]))
                               & (predictions["roi"] == str(item["roi"]))].sort_values("confidence", ascending=False)
            for k, (_, b) in enumerate(here.iterrows()):
                above = b["confidence"] > t
                if not above and k >= 3:
                    continue  # the three best boxes below the threshold show what the model nearly said
                ax.add_patch(Rectangle((b["x1"] - ox - 0.5, b["y1"] - oy - 0.5), b["x2"] - b["x1"], b["y2"] - b["y1"],
                                       fill=False, ec="red" if above else COLOURS[panel], lw=1.4 if above else 0.8,
                                       ls="-" if above else "--"))
                ax.text(b["x1"] - ox, b["y1"] - oy - 1, f"{b['confidence']:.2f}", color="white", fontsize=6,
                        bbox={"facecolor": "red" if above else COLOURS[panel], "pad": 0.5, "lw": 0})
            verdict = "crack" if item[f"{panel}_anomaly"] else "OK"
            ax.set_title(f"{MODEL_NAMES[panel]} {item[f'{panel}_score']:.2f} (thr {t:g}): {verdict}", fontsize=8)
    # Scan ids only: battery names are often Japanese, which matplotlib's bundled font lacks.
    fig.suptitle(str(item["scan_id"]), fontsize=8, y=1.0)
    return png(fig)


def _gallery_evidence(model: str, path: str, metrics: dict):
    """What a model's gallery panel draws: the maps its decisions used, or its boxes."""
    from .decisions import read_evidence, settings_from_params

    params = metrics["models"][model]
    settings = settings_from_params({"min_consecutive_slices": 1, "max_gap": 0, "link_margin": 0,
                                     "threshold": params["threshold"],
                                     **({"evidence": params["evidence"]} if "evidence" in params else {})})
    found = read_evidence(model, path, settings)
    return found.display_maps(settings) if registry.get(model).evidence == "maps" else found.table


def write_figures(*, report: dict, models: list[str], cracks: pd.DataFrame, crop_paths: dict[str, str],
                  outputs: dict[str, str], evidence_paths: dict[str, dict[str, str]], max_profiles: int) -> dict:
    """Write every figure of the report into the three output folders.

    Args:
        evidence_paths: model -> scan id -> its evidence file (the gallery draws them).

    Profiles are drawn for up to ``max_profiles`` scans: NG by truth or by a model
    first, then the rest in scan order.

    Returns:
        What was drawn and what was left out, for the report.
    """
    from .crops import CropSet
    from .io import atomic_dir

    table, metrics = report["slices"], report["metrics"]
    with atomic_dir(outputs["figures"]) as folder:
        for name, data in summary_figures(table, models, metrics).items():
            (Path(folder) / f"{name}.png").write_bytes(data)

    scans = list(dict.fromkeys(table["scan_id"]))
    truth_cracks = report["truth_cracks"]
    interesting = set(truth_cracks["scan_id"]) | set(cracks["scan_id"]) | set(report["disagreements"]["scan_id"])
    ordered = [s for s in scans if s in interesting] + [s for s in scans if s not in interesting]
    drawn = ordered[:max_profiles]
    with atomic_dir(outputs["profiles"]) as folder:
        for scan_id in sorted(drawn):
            rows = table[table["scan_id"] == scan_id]
            data = profile_figure(scan_id, rows, models, metrics,
                                  truth_cracks[truth_cracks["scan_id"] == scan_id],
                                  {m: cracks[(cracks["model"] == m) & (cracks["scan_id"] == scan_id)] for m in models})
            (Path(folder) / f"{scan_id}.png").write_bytes(data)

    items = report["disagreements"]
    items = items[items["gallery"].astype(bool)] if len(items) else items
    with atomic_dir(outputs["gallery"]) as folder:
        for n, (scan_id, group) in enumerate(items.groupby("scan_id", sort=True)):
            crops = CropSet.load(crop_paths[scan_id])
            evidence = {m: _gallery_evidence(m, evidence_paths[m][scan_id], metrics) for m in models}
            boxes = report["truth_boxes"][report["truth_boxes"]["scan_id"] == scan_id]
            for _, item in group.iterrows():
                roi = re.sub(r"[^\w-]", "_", str(item["roi"]))
                name = f"{scan_id}_{int(item['slice_index']):05d}_{roi}.png"
                (Path(folder) / name).write_bytes(gallery_figure(item, crops, evidence, boxes, metrics))
    return {"profiles_drawn": len(drawn), "profiles_left_out": len(scans) - len(drawn),
            "gallery": int(len(items))}
