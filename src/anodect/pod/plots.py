"""The POD figures: one per predictor, every model's curve, its lower 95 % bound, the hits and misses, a90/95."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ..figures import COLOURS, MODEL_NAMES as NAMES, plt, png
from ..io import write_bytes
from .analysis import PREDICTORS


def plot_curves(summary: dict, cracks: pd.DataFrame, hits: dict[str, pd.DataFrame], folder: str | Path) -> list[Path]:
    """``pod_<predictor>.png`` in ``folder`` for each predictor; returns the files."""
    usable = cracks[cracks["usable"]]
    files = []
    models = list(summary["models"])
    for predictor, label in PREDICTORS.items():
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        for k, model in enumerate(models):
            colour = COLOURS[model]
            curve = summary["models"][model]["curves"][predictor]
            data = usable.merge(hits[model][["crack_id", "hit"]], on="crack_id")
            # Hits at 1, misses at 0, each model a little apart so that the points stay readable.
            jitter = 0.03 * (k - (len(models) - 1) / 2)
            ax.scatter(data[predictor], data["hit"].astype(float) + jitter, s=10, alpha=0.5, color=colour,
                       edgecolors="none")
            if curve["status"] == "fit":
                c = curve["curve"]
                ax.plot(c["size"], c["pod"], color=colour,
                        label=f"{NAMES[model]}: a90 {curve['a90']:.3g}, a90/95 {_fmt(curve['a90_95'])}")
                lower = [(s, p) for s, p in zip(c["lower_size"], c["lower_pod"]) if s is not None]
                if lower:
                    ax.plot(*zip(*lower), color=colour, linestyle="--", linewidth=1)
                if math.isfinite(curve["a90_95"]):
                    ax.plot([curve["a90_95"]], [0.9], marker="v", color=colour, markersize=7)
            else:
                ax.plot([], [], color=colour, label=f"{NAMES[model]}: {curve.get('bound', curve['status'])}")
        ax.axhline(0.9, color="#888888", linewidth=0.8, linestyle=":")
        ax.set_xscale("log")
        # Plain numbers at 1, 2, 5 x 10^k: an inspector reads "14 grey levels", not 1.4 x 10^1.
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(-0.08, 1.08)
        ax.set_xlabel(f"crack {label}")
        ax.set_ylabel("probability of detection")
        ax.set_title(f"POD against {predictor.replace('_', ' in ')}: curve (solid), lower 95 % bound (dashed)",
                     fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        path = Path(folder) / f"pod_{predictor}.png"
        write_bytes(path, png(fig))
        files.append(path)
    return files


def _fmt(value: float) -> str:
    return f"{value:.3g}" if value is not None and math.isfinite(value) else "beyond the sizes tried"


__all__ = ["plot_curves"]
