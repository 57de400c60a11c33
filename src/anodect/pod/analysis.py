"""Hit/miss POD analysis (MIL-HDBK-1823A, ASTM E2862): curves, a90, a90/95 and false calls.

POD(a) = F(b0 + b1 log a), F the logistic function (the probit as a check), fitted
by statsmodels' binomial GLM. a90 is where the curve reaches 90 %; a90/95 the
one-sided 95 % upper confidence bound on it from the likelihood-ratio profile, the
handbook's choice for hit/miss data: the largest a whose constrained fit (the curve
forced through 90 % at a) is within chi-square(1) 90 % quantile / 2 of the best
log-likelihood. Where the profile never crosses within reach, the delta method
gives it instead, and says so. The lower 95 % bound of the curve is the same
profile at every POD level.

Data the curve cannot be fitted to are reported as what they show, never forced:
every crack found (a90 at most the smallest size tried), none found (above the
largest), or hits and misses split by a size (a90 between the largest miss and the
smallest hit). The probability of a false call carries a Clopper-Pearson upper bound.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import scipy.optimize
import scipy.stats
import statsmodels.api as sm

P90 = 0.9
CRIT = float(scipy.stats.chi2.ppf(0.90, 1))  # two-sided 90 % = one-sided 95 %
LINKS = {"logit": sm.families.links.Logit, "probit": sm.families.links.Probit}
PREDICTORS = {
    "depth": "depth (grey levels removed)",
    "depth_sigma": "depth (x the scan's noise sigma)",
    "width": "width (px)",
    "length": "length (px)",
}


def _family(link: str):
    return sm.families.Binomial(link=LINKS[link]())


def _fit(y: np.ndarray, x: np.ndarray, link: str, offset: np.ndarray | None = None, intercept: bool = True):
    exog = sm.add_constant(x, has_constant="add") if intercept else x.reshape(-1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # perfect-prediction and convergence warnings: separation is checked first
        return sm.GLM(y, exog, family=_family(link), offset=offset).fit()


def separation(y: np.ndarray, x: np.ndarray) -> str | None:
    """``all``, ``none``, ``split`` (a size parts hits from misses) or None when a curve can be fitted."""
    if y.all():
        return "all"
    if not y.any():
        return "none"
    if x[y == 0].max() < x[y == 1].min():
        return "split"
    return None


def profile_loglik(y: np.ndarray, x: np.ndarray, x_p: float, link: str, p: float) -> float:
    """The best log-likelihood of curves through POD ``p`` at log size ``x_p``: b0 + b1 x_p = F^-1(p)."""
    g = float(LINKS[link]()(np.array([p]))[0])
    fit = _fit(y, x - x_p, link, offset=np.full(len(y), g), intercept=False)
    # Only increasing curves: a falling one through the point is no POD curve.
    return float(fit.llf) if fit.params[0] > 0 else -np.inf


def upper_bound(y: np.ndarray, x: np.ndarray, fit, link: str, p: float, x_max: float) -> tuple[float, str]:
    """One-sided 95 % upper bound on log a_p: (value, method); inf when it lies beyond ``x_max``."""
    b0, b1 = fit.params
    g = float(LINKS[link]()(np.array([p]))[0])
    x_p = (g - b0) / b1
    llmax = float(fit.llf)

    def excess(xa):
        return 2 * (llmax - profile_loglik(y, x, xa, link, p)) - CRIT

    if x_p >= x_max:
        return math.inf, "none: a_p lies beyond the largest size tried x 4"
    try:
        if excess(x_max) > 0:
            return float(scipy.optimize.brentq(excess, x_p, x_max, xtol=1e-4)), "likelihood ratio"
        return math.inf, "likelihood ratio (beyond the largest size x 4)"
    except (ValueError, RuntimeError, np.linalg.LinAlgError):
        pass
    # Delta method on x_p = (g - b0) / b1.
    cov = np.asarray(fit.cov_params())
    grad = np.array([-1 / b1, -(g - b0) / b1 ** 2])
    se = float(np.sqrt(grad @ cov @ grad))
    return x_p + 1.645 * se, "delta method (the profile failed)"


def fit_curve(sizes: np.ndarray, hits: np.ndarray, link: str = "logit", band: bool = True) -> dict:
    """A POD curve of hits (0/1) against sizes (> 0): a90, a90/95 and the curve with its lower 95 % bound.

    Returns:
        ``status`` (``fit``, ``all``, ``none``, ``split``, ``no trend``: the slope is not shown
        to be positive, one-sided 5 %), ``n``, ``hits``,
        and for a fit ``b0``, ``b1``, ``a90``, ``a90_95``, ``method``; ``curve``: sizes,
        POD and its lower bound (for the figure).
    """
    sizes, hits = np.asarray(sizes, float), np.asarray(hits, int)
    keep = np.isfinite(sizes) & (sizes > 0)
    sizes, hits = sizes[keep], hits[keep]
    out = {"n": int(len(sizes)), "hits": int(hits.sum()), "link": link, "size_min": float(sizes.min()) if len(sizes) else None,
           "size_max": float(sizes.max()) if len(sizes) else None}
    if len(sizes) < 2:
        return {**out, "status": "too few", "a90": None, "a90_95": None}
    x = np.log(sizes)
    sep = separation(hits, x)
    if sep == "all":
        return {**out, "status": "all", "a90": None, "a90_95": None,
                "bound": f"every crack found: a90 at most {sizes.min():.3g}"}
    if sep == "none":
        return {**out, "status": "none", "a90": None, "a90_95": None,
                "bound": f"no crack found: a90 above {sizes.max():.3g}"}
    if sep == "split":
        lo, hi = sizes[hits == 0].max(), sizes[hits == 1].min()
        return {**out, "status": "split", "a90": None, "a90_95": None,
                "bound": f"every crack from {hi:.3g} found, none up to {lo:.3g}: a90 between them"}
    fit = _fit(hits.astype(float), x, link)
    b0, b1 = (float(v) for v in fit.params)
    p_rise = float(fit.pvalues[1]) / 2 if b1 > 0 else 1.0  # one-sided: POD rises with size
    if p_rise > 0.05:
        # No size dependence shown in this range: an a90 read off a flat fit would be an artefact.
        return {**out, "status": "no trend", "a90": None, "a90_95": None, "b0": b0, "b1": b1, "p_rise": p_rise,
                "bound": f"POD {hits.mean():.2f} at every size tried, no rise with size shown (p = {p_rise:.2f})"}
    g90 = float(LINKS[link]()(np.array([P90]))[0])
    x90 = (g90 - b0) / b1
    x_max = float(x.max() + math.log(4.0))
    x90_95, method = upper_bound(hits.astype(float), x, fit, link, P90, x_max)
    if x90 > x.max():
        # Read off beyond the data: a fit's tail, not a measurement. Said, and no bound claimed.
        x90_95, method = math.inf, "none: a90 lies beyond the largest size tried (extrapolated)"
    grid_x = np.linspace(x.min() - 0.2, x.max() + 0.2, 60)
    pod = fit.predict(sm.add_constant(grid_x, has_constant="add"))
    levels = np.linspace(0.05, 0.98, 32) if band else np.array([])
    bound_x = [upper_bound(hits.astype(float), x, fit, link, float(p), x_max)[0] for p in levels]
    return {**out, "status": "fit", "b0": b0, "b1": b1, "p_rise": p_rise, "a50": float(math.exp(-b0 / b1)),
            "a90": float(math.exp(x90)), "a90_95": float(math.exp(x90_95)) if math.isfinite(x90_95) else math.inf,
            "method": method,
            "curve": {"size": np.exp(grid_x).round(4).tolist(), "pod": np.asarray(pod).round(4).tolist(),
                      "lower_size": [round(float(math.exp(v)), 4) if math.isfinite(v) else None for v in bound_x],
                      "lower_pod": levels.round(4).tolist()}}


def fit_joint(table: pd.DataFrame, at_length: float) -> dict:
    """POD against depth and length together: logit(POD) = b0 + b1 log depth + b2 log length,
    and the depth found at 90 % for cracks ``at_length`` long."""
    y = table["hit"].to_numpy(int)
    if y.all() or not y.any() or len(y) < 4:
        return {"status": "all" if y.all() else "none" if not y.any() else "too few", "n": int(len(y))}
    exog = sm.add_constant(np.column_stack([np.log(table["depth"]), np.log(table["length"])]), has_constant="add")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit = sm.GLM(y.astype(float), exog, family=_family("logit")).fit()
        except (np.linalg.LinAlgError, ValueError) as exc:
            return {"status": f"failed: {exc}", "n": int(len(y))}
    b0, b1, b2 = (float(v) for v in fit.params)
    out = {"status": "fit", "n": int(len(y)), "b0": b0, "b_log_depth": b1, "b_log_length": b2,
           "p_values": [float(v) for v in fit.pvalues], "at_length": float(at_length)}
    if b1 > 0:
        out["a90_depth"] = float(math.exp((math.log(P90 / (1 - P90)) - b0 - b2 * math.log(at_length)) / b1))
    return out


def false_call_rate(events: int, trials: int) -> dict:
    """Rate and Clopper-Pearson 95 % upper bound (one-sided) of ``events`` in ``trials``."""
    if trials <= 0:
        return {"events": events, "trials": trials, "rate": None, "upper95": None}
    upper = 1.0 if events >= trials else float(scipy.stats.beta.ppf(0.95, events + 1, trials - events))
    return {"events": int(events), "trials": int(trials), "rate": events / trials, "upper95": upper}


def analyse(cracks: pd.DataFrame, hits: dict[str, pd.DataFrame], false_calls: dict[str, dict],
            voxel_size_um: float | None = None) -> tuple[pd.DataFrame, dict]:
    """Every model's curves and false calls: the rows of ``pod.csv`` and the content of ``pod.json``."""
    usable = cracks[cracks["usable"]].copy()
    rows, per_model = [], {}
    for model, table in hits.items():
        data = usable.merge(table[["crack_id", "hit"]], on="crack_id", how="inner")
        data["hit"] = data["hit"].astype(int)
        fc = false_calls[model]
        result = {"n_cracks": int(len(data)), "hits": int(data["hit"].sum()), "curves": {},
                  "false_calls": {"cell": false_call_rate(fc["ng_cells"], fc["n_cells"]),
                                  "crop": false_call_rate(fc["flagged_crops"], fc["crops"]),
                                  "copy_false_cracks": fc["copy_false_cracks"], "copies": fc["copies"]},
                  "threshold": fc["threshold"], "evidence": fc["evidence"], "cells": fc["n_cells"]}
        for predictor in PREDICTORS:
            curve = fit_curve(data[predictor].to_numpy(float), data["hit"].to_numpy(int))
            check = fit_curve(data[predictor].to_numpy(float), data["hit"].to_numpy(int), link="probit", band=False)
            curve["probit_a90"] = check.get("a90")
            result["curves"][predictor] = curve
            row = {"model": model, "predictor": predictor, "status": curve["status"], "n": curve["n"],
                   "hits": curve["hits"], "a50": curve.get("a50"), "a90": curve.get("a90"),
                   "a90_95": curve.get("a90_95"), "method": curve.get("method", ""), "probit_a90": check.get("a90"),
                   "bound": curve.get("bound", ""), "pfc_cell": result["false_calls"]["cell"]["rate"],
                   "pfc_cell_upper95": result["false_calls"]["cell"]["upper95"],
                   "pfc_crop": result["false_calls"]["crop"]["rate"],
                   "pfc_crop_upper95": result["false_calls"]["crop"]["upper95"], "cells": fc["n_cells"]}
            if voxel_size_um and predictor in ("width", "length"):
                for key in ("a90", "a90_95"):
                    row[f"{key}_um"] = row[key] * voxel_size_um if row[key] is not None else None
            rows.append(row)
        result["joint_depth_length"] = fit_joint(data, float(np.median(usable["length"])))
        per_model[model] = result
    summary = {
        "n_cracks": int(len(cracks)), "n_usable": int(len(usable)), "copies": int(cracks["copy_id"].nunique()),
        "cells": sorted(cracks["source_scan"].unique().tolist()),
        "noise_sigma": {s: float(v) for s, v in cracks.groupby("source_scan")["noise_sigma"].first().items()},
        "ranges": {p: [float(usable[p].min()), float(usable[p].max())] for p in PREDICTORS if len(usable)},
        "models": per_model,
    }
    return pd.DataFrame(rows), summary


def sentence(model: str, display: str, result: dict, ranges: dict) -> str:
    """The plain-words reading of one model's depth curve and false calls."""
    depth = result["curves"]["depth"]
    w, ln = ranges.get("width", [0, 0]), ranges.get("length", [0, 0])
    cracks = f"cracks {w[0]:.3g}-{w[1]:.3g} px wide and {ln[0]:.3g}-{ln[1]:.3g} px long"
    if depth["status"] == "fit" and depth["a90"] > depth["size_max"]:
        found = (f"finds fewer than 90 % of {cracks} even at the deepest tried ({depth['size_max']:.3g} grey "
                 f"levels; half of them at {depth['a50']:.3g})")
    elif depth["status"] == "fit":
        bound = (f"at least {depth['a90_95']:.3g} with 95 % confidence" if math.isfinite(depth["a90_95"])
                 else "with no 95 % bound within reach of the depths tried")
        found = (f"finds 90 % of {cracks} once they are {depth['a90']:.3g} grey levels deep "
                 f"({bound})")
    else:
        found = f"could not be given a curve on {cracks}: {depth.get('bound', depth['status'])}"
    cell = result["false_calls"]["cell"]
    if cell["trials"]:
        calls = (f"{cell['events']} false NG of {cell['trials']} crack-free cells "
                 f"(at most {cell['upper95']:.2f} per cell, 95 % confidence)")
    else:
        calls = "no crack-free cell to count false calls on"
    taught = (" These cracks come from the renderer it learned from: not a test on cracks it was never shown "
              "(pod.renderer: pull draws them another way)." if result.get("taught_this_renderer") else "")
    return f"On these cells {display} {found}, with {calls}.{taught}"


__all__ = ["CRIT", "PREDICTORS", "analyse", "false_call_rate", "fit_curve", "fit_joint", "profile_loglik",
           "sentence", "separation", "upper_bound"]
