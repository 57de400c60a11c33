"""The comparison report: one self-contained HTML file an analyst opens in a browser.

Everything is inside the file (figures as base64 PNG, styles inline, no script),
so it can be mailed or archived with a lot's records and opens the same offline
years later. Sections: verdicts per battery, metrics per model at slice, crack,
battery and box level, threshold sweeps, agreement of the two models and a gallery
of their disagreements, slice profiles per battery, and the facts of the run
(inputs, skipped slices, time per rule, model ids, config, versions).

``report_data`` gathers what the page shows as plain data (no markup);
``templates/report.html.j2`` lays it out, and Jinja2 escapes every value.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from datetime import datetime, timezone
from pathlib import Path

import jinja2
import pandas as pd
import yaml

from . import registry

log = logging.getLogger(__name__)

TEMPLATE = "report.html.j2"  # in anodect/templates

# The pipeline's own packages; each model adds its own (``ModelPlugin.packages``).
VERSIONED = ("anodect", "torch", "torchvision", "snakemake", "scikit-learn", "pycocotools", "numpy", "pandas",
             "opencv-python-headless", "matplotlib", "supervision")

def fmt(value, digits: int = 3) -> str:
    """A metric for the page: None as an en dash, rates to ``digits`` decimals, scores to 4 figures."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if abs(value) < 10:
            return f"{value:.{digits}f}"
        return f"{value:.{max(0, digits + 1 - len(str(int(abs(value)))))}f}"
    return str(value)


def figure(path: Path, caption: str) -> dict:
    """A figure of the page: the PNG inline (a data URI) and its caption."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return {"src": f"data:image/png;base64,{data}", "caption": caption}


def table(rows: list[list], header: list[str], left: int = 1, classes: list[str] | None = None,
          headings: list[bool] | None = None) -> dict:
    """A table of the page; the first ``left`` columns are left-aligned text, a heading row's label is bold."""
    return {"header": [str(h) for h in header], "left": left,
            "rows": [{"cells": [str(c) for c in row], "class": classes[n] if classes else "",
                      "heading": bool(headings[n]) if headings else False} for n, row in enumerate(rows)]}


def rule_times(benchmark_files: list[str], root: str | Path) -> pd.DataFrame:
    """Jobs, total and longest wall time and peak memory per rule, from Snakemake benchmark files.

    A file's rule is its first path component under ``root`` (``<rule>.tsv`` or
    ``<rule>/<wildcards>.tsv``).
    """
    rows = []
    root = Path(root)
    for f in benchmark_files:
        rel = Path(f).relative_to(root) if Path(f).is_relative_to(root) else Path(Path(f).name)
        rule = rel.parts[0].removesuffix(".tsv")
        try:
            b = pd.read_csv(f, sep="\t")
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            log.warning("%s: unreadable benchmark file (%s)", f, exc)
            continue
        for r in b.itertuples():
            rows.append({"rule": rule, "s": float(r.s), "max_rss": float(getattr(r, "max_rss", float("nan")))})
    if not rows:
        return pd.DataFrame(columns=["rule", "jobs", "total_s", "max_s", "max_rss_mb"])
    df = pd.DataFrame(rows)
    out = df.groupby("rule", sort=False).agg(jobs=("s", "size"), total_s=("s", "sum"), max_s=("s", "max"),
                                             max_rss_mb=("max_rss", "max")).reset_index()
    return out.sort_values("total_s", ascending=False).reset_index(drop=True)


def _read_meta(path: str | None) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8")) if path and Path(path).is_file() else {}


def model_facts(models: list[str], model_files: dict[str, str | None]) -> list[list[str]]:
    """Model id, what it was made from and where it lies, from each model's metadata file."""
    rows = []
    for m in models:
        path = model_files.get(m)
        meta = _read_meta(path)
        plugin = registry.get(m)
        rows.append([plugin.display, plugin.model_id(meta), plugin.card(meta)[0], str(path or "")])
    return rows


def made_from(model: str, meta: dict) -> tuple[str, str | None]:
    """How a model was made, and a warning when its figures do not measure a trained model.

    Returns:
        (one paragraph for the report, the warning or None), from the model's plugin.
    """
    return registry.get(model).card(meta)


METRIC_ROWS = [
    ("Slice", "slice", [("AUROC (score)", "auroc"), ("AP (score)", "ap"), ("precision at threshold", "precision"),
                        ("recall at threshold", "recall"), ("F1 at threshold", "f1")]),
    ("Slice, after tracking", "slice_tracked", [("precision", "precision"), ("recall", "recall"), ("F1", "f1")]),
    ("Crack (3-D)", "crack", [("true cracks", "n_true"), ("confirmed cracks", "n_predicted"),
                              ("matched", "n_matched"), ("recall", "recall"),
                              ("false cracks per battery", "false_per_battery"), ("mean 3-D IoU", "mean_iou")]),
    ("Battery", "battery", [("TP / FP / FN / TN", None), ("sensitivity", "sensitivity"),
                            ("specificity", "specificity")]),
    ("Boxes (COCO, pycocotools)", "boxes", [("AP IoU .50:.95", "ap"), ("AP IoU .50", "ap50"),
                                           ("AP IoU .25", "ap25"), ("boxes ranked", "n_boxes")]),
]


def _metric_table(metrics: dict, models: list[str]) -> dict:
    def source(m):
        d = metrics["models"][m]
        if "threshold_source" not in d:
            return "config"
        return f"{d.get('threshold_source', 'config')}; {d.get('evidence', 'slice')} evidence"

    rows = [["threshold", *[fmt(metrics["models"][m]["threshold"]) for m in models]],
            ["threshold from", *[source(m) for m in models]],
            ["threshold for 100% battery recall (below)",
             *[fmt(metrics["models"][m].get("full_recall_threshold")) for m in models]]]
    headings = [False] * len(rows)
    for title, level, items in METRIC_ROWS:
        rows.append([title, *[""] * len(models)])
        headings.append(True)
        for label, key in items:
            values = []
            for m in models:
                d = metrics["models"][m][level]
                values.append(f"{d['tp']} / {d['fp']} / {d['fn']} / {d['tn']}" if key is None else fmt(d.get(key)))
            rows.append([label, *values])
            headings.append(False)
    return table(rows, ["", *[registry.display(m) for m in models]], headings=headings)


def _battery_table(batteries: pd.DataFrame, models: list[str], truth: pd.Series | None, slices: pd.DataFrame) -> dict:
    rows, classes = [], []
    for b in batteries.itertuples():
        verdicts = [getattr(b, f"{m}_verdict") for m in models]
        true = None if truth is None or b.scan_id not in truth.index else ("NG" if truth[b.scan_id] else "OK")
        cells = [b.battery_id, b.axis, b.scan_id, fmt(true)]
        for m, v in zip(models, verdicts):
            n = getattr(b, f"{m}_cracks")
            score = slices.loc[slices["scan_id"] == b.scan_id, f"{m}_score"].max()
            usable = getattr(b, f"{m}_slices", None)
            if v == "NO DATA" and usable is not None and not pd.isna(usable):
                # Why it could not be judged: no slice judged (none usable, or no volume
                # evidence), or fewer than a crack needs.
                v = f"NO DATA ({int(usable)} slice{'s' if int(usable) != 1 else ''} judged)"
            cells += [f"{v} ({n})" if n else v, fmt(None if pd.isna(score) else float(score))]
        rows.append(cells)
        wrong = true is not None and any(v != true for v in verdicts)
        unsure = len(set(verdicts)) > 1 or any(v not in ("OK", "NG") for v in verdicts)
        classes.append("miss" if wrong or unsure else ("ng" if "NG" in verdicts else "ok"))
    header = ["battery", "axis", "scan", "truth"]
    for m in models:
        header += [f"{registry.display(m)} verdict (cracks)", f"{registry.display(m)} top score"]
    return table(rows, header, left=3, classes=classes)


def _agreement(pairs: list[dict]) -> list[dict]:
    """One table per pair of models."""
    out = []
    for agree in pairs:
        a, b = registry.display(agree["first"]), registry.display(agree["second"])
        rows = []
        for level in ("battery", "slice"):
            d = agree[level]
            rows.append([level, d["both_ng"], d["only_first"], d["only_second"], d["both_ok"], fmt(d["kappa"])])
        out.append({"title": f"{a} and {b}",
                    "table": table(rows, ["level", "both NG", f"only {a}", f"only {b}", "both OK", "Cohen's kappa"])})
    return out


CURVES = {"roc": "ROC of the slice score.",
          "pr": "Precision-recall of the slice score; dots: each model at its configured threshold.",
          "f1_threshold": "Slice F1 against the threshold: dashed, the configured threshold; dotted green, "
                          "the threshold below which every NG battery is found.",
          "scores": "Slice scores of every inspected slice, thresholds dashed."}


def report_data(report: dict, models: list[str], batteries: pd.DataFrame, folders: dict[str, str],
                facts: dict) -> dict:
    """What the page shows, as plain data for ``templates/report.html.j2``.

    Args:
        report: ``comparison.read_outputs``.
        models: the run's models, in report order.
        batteries: ``tables/batteries.csv``.
        folders: ``figures``, ``profiles``, ``gallery`` -> the figure folders.
        facts: ``scans`` (sample-sheet DataFrame), ``qc`` (DataFrame), ``rule_times`` (DataFrame),
            ``model_files`` (model -> metadata path), ``config`` (dict), ``versions`` (dict).
    """
    metrics, slices = report["metrics"], report["slices"]
    truth_info = metrics.get("truth")
    truth_verdicts = None
    if truth_info:
        truth_verdicts = (report["truth_cracks"].groupby("scan_id").size() > 0).reindex(
            sorted(set(slices.loc[slices["truth"].notna(), "scan_id"])), fill_value=False)
    figures_dir, profiles_dir, gallery_dir = (Path(folders[k]) for k in ("figures", "profiles", "gallery"))
    made = {m: made_from(m, _read_meta(facts["model_files"].get(m))) for m in models}

    cards = []
    for m in models:
        d = metrics["models"][m]
        line = f"{d['counts']['batteries_ng']} of {d['counts']['batteries']} batteries NG"
        if "battery" in d:
            line += f"; sensitivity {fmt(d['battery']['sensitivity'])}, specificity {fmt(d['battery']['specificity'])}"
        if made[m][1]:
            line += "; UNTRAINED (random weights, see How the models were made)"
        cards.append({"label": registry.display(m), "headline": f"{d['counts']['cracks']} cracks", "line": line})
    if truth_info:
        cards.append({"label": "Truth", "headline": f"{truth_info['cracks']} cracks",
                      "line": f"{truth_info['batteries_ng']} of {truth_info['scans']} batteries NG, "
                              f"{truth_info['cracked_slices']} cracked slices"})

    agreement = _agreement(metrics["agreement"]) if metrics.get("agreement") else []
    gallery = sorted(gallery_dir.glob("*.png"))
    names = dict(zip(slices["scan_id"], slices["battery_id"]))
    profiles = sorted(profiles_dir.glob("*.png"))
    return {
        "names": _names(models), "n_models": len(models),
        "written": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": facts["versions"].get("anodect"), "counts": metrics["counts"],
        "truth_source": truth_info["source"] if truth_info else None,
        "cards": cards,
        "min_slices": metrics["models"][models[0]]["min_consecutive_slices"],
        "maps_models": _names([m for m in models if registry.get(m).evidence == "maps"]) or "none",
        "boxes_models": _names([m for m in models if registry.get(m).evidence == "boxes"]) or "none",
        "batteries": _battery_table(batteries, models, truth_verdicts, slices),
        "metrics": _metric_table(metrics, models) if truth_info else None,
        "truth_notes": truth_info.get("notes", []) if truth_info else [],
        "truth_unreadable": [names.get(s, s) for s in truth_info.get("truth_unreadable", [])] if truth_info else [],
        "counts_table": table([[k, *[metrics["models"][m]["counts"][k] for m in models]]
                               for k in ("batteries_ng", "cracks", "slices_flagged", "slices_anomaly", "slices")],
                              ["", *[registry.display(m) for m in models]]),
        "made": [{"name": registry.display(m), "text": made[m][0], "warning": made[m][1]} for m in models],
        "curves": [figure(figures_dir / f"{name}.png", caption) for name, caption in CURVES.items()
                   if (figures_dir / f"{name}.png").is_file()],
        "agreement": agreement,
        "gallery": {
            "n": len(report["disagreements"]), "figures": [figure(p, p.stem) for p in gallery],
            "what": "the models' slice verdicts differ" if agreement else "the model and the truth differ",
            "panels": "; ".join(f"{registry.display(m)}'s anomaly map" if registry.get(m).evidence == "maps" else
                                f"{registry.display(m)}'s boxes above its threshold (red) and its three best below "
                                "it (dashed)" for m in models)},
        "profiles": {"hidden": max(0, len(names) - len(profiles)),
                     "figures": [figure(p, f"{names.get(p.stem, '')} ({p.stem}): slice score against slice index, "
                                           "thresholds dashed, true cracks shaded green, confirmed cracks as bars.")
                                 for p in profiles]},
        "facts": _facts(facts, models),
        "pod": _pod(facts.get("pod"), models),
    }


def _pod(pod: dict | None, models: list[str]) -> dict | None:
    """The POD section (issue #28): the plain-words sentences, the table and one figure per predictor."""
    if not pod:
        return None
    import json
    import math

    from .pod.analysis import PREDICTORS, sentence

    summary = json.loads(Path(pod["json"]).read_text(encoding="utf-8"))
    rows = []
    for m in models:
        result = summary["models"].get(m)
        if result is None:
            continue
        cell, crop = result["false_calls"]["cell"], result["false_calls"]["crop"]
        for predictor in ("depth", "depth_sigma", "width", "length"):
            c = result["curves"][predictor]
            a90 = fmt(c["a90"]) if c["status"] == "fit" else c.get("bound", c["status"])
            if c["status"] == "fit" and c["a90"] > c["size_max"]:
                a90 = f"above the largest size tried, {fmt(c['size_max'])} (the fit's tail says {fmt(c['a90'])})"
            a9095 = (fmt(c["a90_95"]) if math.isfinite(c["a90_95"]) else "beyond the sizes tried") \
                if c["status"] == "fit" else ""
            name = registry.display(m) + (" (taught this renderer)" if result.get("taught_this_renderer") else "")
            rows.append([name, PREDICTORS[predictor], a90, a9095,
                         f"{cell['events']}/{cell['trials']} (at most {fmt(cell['upper95'])})" if cell["trials"] else "",
                         f"{crop['events']}/{crop['trials']} (at most {fmt(crop['upper95'])})" if crop["trials"] else "",
                         f"{c['hits']}/{c['n']}", result["cells"]])
    figures = [figure(p, f"POD against {PREDICTORS[p.stem[4:]]}: each model's curve (solid), its lower 95 % bound "
                         "(dashed, likelihood ratio), a90/95 (triangle) and every rendered crack, hit at 1 or "
                         "missed at 0.")
               for p in sorted(Path(pod["figures"]).glob("pod_*.png")) if p.stem[4:] in PREDICTORS]
    return {
        "sentences": [sentence(m, registry.display(m), summary["models"][m], summary["ranges"])
                      for m in models if m in summary["models"]],
        "n_cracks": summary["n_usable"], "n_rendered": summary["n_cracks"], "copies": summary["copies"],
        "cells": len(summary["cells"]),
        "sigma": ", ".join(f"{v:.2f}" for v in summary["noise_sigma"].values()),
        "table": table(rows, ["model", "predictor", "a90", "a90/95", "false NG cells (95 % bound)",
                              "false crops (95 % bound)", "cracks found", "clean cells"], left=2),
        "figures": figures,
    }


def _names(models: list[str]) -> str:
    names = [registry.display(m) for m in models]
    return " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " and " + names[-1]


def _facts(facts: dict, models: list[str]) -> dict:
    sheet = facts["scans"]
    roles = sheet.groupby("role").agg(scans=("scan_id", "size"), slices=("n_slices", "sum")).reset_index()
    qc = facts["qc"]
    bad = qc[qc["status"] != "ok"] if len(qc) else qc
    notes = facts.get("notes")
    times = facts["rule_times"]
    return {
        "roles": table(roles.values.tolist(), ["role", "scans", "slices"]),
        "n_skipped": len(bad),
        "skipped": table(bad[["scan_id", "slice_index", "status", "reason", "path"]].head(200).values.tolist(),
                         ["scan", "slice", "status", "reason", "file"], left=5) if len(bad) else None,
        "n_notes": 0 if notes is None else len(notes),
        "notes": table(notes[["role", "source", "scan_id", "note"]].fillna("").head(200).values.tolist(),
                       ["role", "folder or file", "scan", "note"], left=4) if notes is not None and len(notes) else None,
        "times": table([[r.rule, r.jobs, f"{r.total_s:.1f}", f"{r.max_s:.1f}", f"{r.max_rss_mb:.0f}"]
                        for r in times.itertuples()],
                       ["rule", "jobs", "total s", "longest job s", "peak memory MB"]) if len(times) else None,
        "models": table(model_facts(models, facts["model_files"]), ["model", "id", "made from", "metadata"], left=4),
        "versions": table([[k, v or "not installed"] for k, v in facts["versions"].items()], ["package", "version"],
                          left=2),
        "config": yaml.safe_dump(facts["config"], allow_unicode=True, sort_keys=False),
    }


def render_html(data: dict) -> str:
    """The page from ``report_data``: the package's Jinja2 template, every value escaped."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("anodect", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template(TEMPLATE).render(**data)


def write_report(*, out_path: str | Path, comparison_files: dict[str, str], models: list[str], batteries: str,
                 folders: dict[str, str], scans: str, qc: str, benchmarks: list[str], benchmark_root: str,
                 model_files: dict[str, str | None], config: dict, notes: str | None = None,
                 pod: dict | None = None) -> None:
    """Gather the run's facts and write the report page atomically."""
    from .comparison import read_outputs
    from .io import package_versions, read_table, write_text

    facts = {"scans": read_table(scans), "qc": read_table(qc) if Path(qc).is_file() else pd.DataFrame(),
             "notes": read_table(notes) if notes and Path(notes).is_file() else None,
             "rule_times": rule_times(benchmarks, benchmark_root), "model_files": model_files, "config": config,
             "pod": pod,
             "versions": package_versions(*dict.fromkeys(
                 [*VERSIONED, *(p for m in models for p in registry.get(m).packages)]))}
    page = render_html(report_data(read_outputs(comparison_files), models, read_table(batteries), folders, facts))
    write_text(out_path, page)
    log.info("report %s: %.1f kB", out_path, len(page.encode("utf-8")) / 1024)
