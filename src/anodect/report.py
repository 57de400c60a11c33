"""The comparison report: one self-contained HTML file an analyst opens in a browser.

Everything is inside the file (figures as base64 PNG, styles inline, no script),
so it can be mailed or archived with a lot's records and opens the same offline
years later. Sections: verdicts per battery, metrics per model at slice, crack,
battery and box level, threshold sweeps, agreement of the two models and a gallery
of their disagreements, slice profiles per battery, and the facts of the run
(inputs, skipped slices, time per rule, model ids, config, versions).
"""

from __future__ import annotations

import base64
import html
import logging
import math
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import yaml

from . import registry

log = logging.getLogger(__name__)

# The pipeline's own packages; each model adds its own (``ModelPlugin.packages``).
VERSIONED = ("anodect", "torch", "torchvision", "snakemake", "scikit-learn", "pycocotools", "numpy", "pandas",
             "opencv-python-headless", "matplotlib", "supervision")

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK JP","Hiragino Sans",sans-serif;margin:0 auto;
max-width:1200px;padding:1em 2em;color:#222}
h1{font-size:1.5em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.ng{background:#fde2e2}.ok{background:#e5f5e0}
.miss{background:#fff1c6}figure{display:inline-block;margin:.4em;vertical-align:top}
figcaption{font-size:.85em;color:#555;max-width:720px}img{max-width:100%;border:1px solid #eee}
.note{color:#555;font-size:.9em}pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.8em}
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em}
.card b{font-size:1.4em;display:block}
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


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


def image_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def figure(path: Path, caption: str) -> str:
    return f"<figure>{image_tag(path, caption)}<figcaption>{caption}</figcaption></figure>"


def table_html(rows: list[list], header: list[str], left: int = 1, classes: list[str] | None = None) -> str:
    """A table; the first ``left`` columns are left-aligned text."""
    head = "".join(f'<th class="{"l" if i < left else ""}">{esc(h)}</th>' for i, h in enumerate(header))
    body = []
    for n, row in enumerate(rows):
        cls = f' class="{classes[n]}"' if classes and classes[n] else ""
        cells = "".join(f'<td class="{"l" if i < left else ""}">{c if str(c).startswith("<") else esc(c)}</td>'
                        for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


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
    import json

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


def _metric_table(metrics: dict, models: list[str]) -> str:
    spec = [
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
    def source(m):
        d = metrics["models"][m]
        if "threshold_source" not in d:
            return "config"
        return f"{d.get('threshold_source', 'config')}; {d.get('evidence', 'slice')} evidence"

    rows = [["threshold", *[fmt(metrics["models"][m]["threshold"]) for m in models]],
            ["threshold from", *[esc(source(m)) for m in models]],
            ["threshold for 100% battery recall (below)",
             *[fmt(metrics["models"][m].get("full_recall_threshold")) for m in models]]]
    for title, level, items in spec:
        rows.append([f"<b>{esc(title)}</b>", *[""] * len(models)])
        for label, key in items:
            values = []
            for m in models:
                d = metrics["models"][m][level]
                values.append(f"{d['tp']} / {d['fp']} / {d['fn']} / {d['tn']}" if key is None else fmt(d.get(key)))
            rows.append([label, *values])
    return table_html(rows, ["", *[registry.display(m) for m in models]])


def _battery_rows(batteries: pd.DataFrame, models: list[str], truth: pd.Series | None, table: pd.DataFrame):
    rows, classes = [], []
    for b in batteries.itertuples():
        verdicts = [getattr(b, f"{m}_verdict") for m in models]
        true = None if truth is None or b.scan_id not in truth.index else ("NG" if truth[b.scan_id] else "OK")
        cells = [b.battery_id, b.axis, b.scan_id, fmt(true)]
        for m, v in zip(models, verdicts):
            n = getattr(b, f"{m}_cracks")
            score = table.loc[table["scan_id"] == b.scan_id, f"{m}_score"].max()
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
    return table_html(rows, header, left=3, classes=classes)


def _agreement(pairs: list[dict]) -> str:
    """One table per pair of models."""
    out = []
    for agree in pairs:
        a, b = registry.display(agree["first"]), registry.display(agree["second"])
        rows = []
        for level in ("battery", "slice"):
            d = agree[level]
            rows.append([level, d["both_ng"], d["only_first"], d["only_second"], d["both_ok"], fmt(d["kappa"])])
        if len(pairs) > 1:
            out.append(f"<h3>{esc(a)} and {esc(b)}</h3>")
        out.append(table_html(rows, ["level", "both NG", f"only {a}", f"only {b}", "both OK", "Cohen's kappa"]))
    return "\n".join(out)


def build_html(report: dict, models: list[str], batteries: pd.DataFrame, folders: dict[str, str],
               facts: dict) -> str:
    """The report page.

    Args:
        report: ``comparison.read_outputs``.
        models: the run's models, in report order.
        batteries: ``tables/batteries.csv``.
        folders: ``figures``, ``profiles``, ``gallery`` -> the figure folders.
        facts: ``scans`` (sample-sheet DataFrame), ``qc`` (DataFrame), ``rule_times`` (DataFrame),
            ``model_files`` (model -> metadata path), ``config`` (dict), ``versions`` (dict).
    """
    metrics, table = report["metrics"], report["slices"]
    truth_info = metrics.get("truth")
    truth_verdicts = None
    if truth_info:
        truth_verdicts = (report["truth_cracks"].groupby("scan_id").size() > 0).reindex(
            sorted(set(table.loc[table["truth"].notna(), "scan_id"])), fill_value=False)
    figures_dir, profiles_dir, gallery_dir = (Path(folders[k]) for k in ("figures", "profiles", "gallery"))
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Anode-crack inspection: "
           f"model comparison</title><style>{_STYLE}</style></head><body>",
           f"<h1>Anode-crack inspection: {esc(_names(models))} compared</h1>" if len(models) > 1 else
           f"<h1>Anode-crack inspection: {esc(_names(models))}</h1>",
           f"<p class=\"note\">Written {esc(now)} by anodect {esc(facts['versions'].get('anodect'))}. "
           f"{metrics['counts']['scans']} inspected scans, {metrics['counts']['slices']} slices, "
           f"{metrics['counts']['crops']} ROI crops per model. Ground truth: "
           f"{esc(truth_info['source']) if truth_info else 'none (the models are compared with each other only)'}"
           ".</p>"]

    made = {m: made_from(m, _read_meta(facts["model_files"].get(m))) for m in models}
    cards = []
    for m in models:
        d = metrics["models"][m]
        line = f"{d['counts']['batteries_ng']} of {d['counts']['batteries']} batteries NG"
        if "battery" in d:
            line += f"; sensitivity {fmt(d['battery']['sensitivity'])}, specificity {fmt(d['battery']['specificity'])}"
        if made[m][1]:
            line += "; UNTRAINED (random weights, see How the models were made)"
        cards.append(f'<div class="card">{esc(registry.display(m))}<b>{d["counts"]["cracks"]} cracks</b>{esc(line)}</div>')
    if truth_info:
        cards.append(f'<div class="card">Truth<b>{truth_info["cracks"]} cracks</b>{truth_info["batteries_ng"]} of '
                     f'{truth_info["scans"]} batteries NG, {truth_info["cracked_slices"]} cracked slices</div>')
    out.append(f'<div class="cards">{"".join(cards)}</div>')

    out.append("<h2 id=\"batteries\">Verdicts per battery</h2>")
    out.append("<p class=\"note\">A battery is NG when a model confirms a crack (a track through "
               f"{metrics['models'][models[0]]['min_consecutive_slices']} or more consecutive slices). Yellow rows: "
               "the models disagree, or one is wrong. Top score: the highest crop score (score maps: "
               f"{esc(_names([m for m in models if registry.get(m).evidence == 'maps']) or 'none')}) or box "
               f"confidence (boxes: {esc(_names([m for m in models if registry.get(m).evidence == 'boxes']) or 'none')}"
               ") of the battery.</p>")
    out.append(_battery_rows(batteries, models, truth_verdicts, table))

    if truth_info:
        out.append("<h2 id=\"metrics\">Metrics against the ground truth</h2>")
        out.append("<p class=\"note\">Slice scores are the best crop of the slice, thresholds not applied (AUROC, "
                   "AP); the decision at the configured threshold gives precision, recall and F1. A confirmed crack "
                   "matches a true one in the same scan and ROI when their 3-D boxes (x, y, slices) overlap. Box AP: "
                   "pycocotools' COCO evaluation of every box each model draws before its threshold against the true "
                   "per-slice boxes; cracks are 1–3 px wide, so IoU .25 is the telling column. The threshold for 100% "
                   "battery recall is the highest one at which every NG battery still has a run of enough slices "
                   "above it (any threshold below it keeps every NG battery NG under the run rule).</p>")
        out.append(_metric_table(metrics, models))
        for note in truth_info.get("notes", []):
            out.append(f"<p class=\"note\">Truth: {esc(note)}</p>")
    else:
        out.append("<h2 id=\"metrics\">Metrics</h2><p>No ground truth was given (<code>evaluation.truth: none</code>, "
                   "or no demo): the models are compared with each other only. Give VIA or COCO annotations of the "
                   "inspected scans in <code>evaluation.truth</code> for sensitivity, specificity and AP.</p>")
        rows = [[k, *[metrics["models"][m]["counts"][k] for m in models]]
                for k in ("batteries_ng", "cracks", "slices_flagged", "slices_anomaly", "slices")]
        out.append(table_html(rows, ["", *[registry.display(m) for m in models]]))

    out.append("<h2 id=\"made\">How the models were made</h2>")
    for m in models:
        text, warning = made[m]
        out.append(f"<p><b>{esc(registry.display(m))}</b>: {esc(text)}.</p>")
        if warning:
            out.append(f"<p class=\"miss\"><b>{esc(warning)}</b></p>")

    out.append("<h2 id=\"curves\">Threshold sweeps</h2>")
    captions = {"roc": "ROC of the slice score.",
                "pr": "Precision-recall of the slice score; dots: each model at its configured threshold.",
                "f1_threshold": "Slice F1 against the threshold: dashed, the configured threshold; dotted green, "
                                "the threshold below which every NG battery is found.",
                "scores": "Slice scores of every inspected slice, thresholds dashed."}
    for name in ("roc", "pr", "f1_threshold", "scores"):
        if (figures_dir / f"{name}.png").is_file():
            out.append(figure(figures_dir / f"{name}.png", captions[name]))
    if not truth_info:
        out.append("<p class=\"note\">ROC, PR and F1 curves need ground truth.</p>")

    if metrics.get("agreement"):
        out.append(f"<h2 id=\"agreement\">Agreement of the {'two ' if len(models) == 2 else ''}models</h2>")
        out.append(_agreement(metrics["agreement"]))
    gallery = sorted(gallery_dir.glob("*.png"))
    n_dis = len(report["disagreements"])
    out.append("<h2 id=\"gallery\">Disagreements</h2>")
    what = "the models' slice verdicts differ" if metrics.get("agreement") else "the model and the truth differ"
    panels = "; ".join(f"{registry.display(m)}'s anomaly map" if registry.get(m).evidence == "maps" else
                       f"{registry.display(m)}'s boxes above its threshold (red) and its three best below it (dashed)"
                       for m in models)
    out.append(f"<p class=\"note\">{n_dis} slices where {what}; one slice of each run of consecutive such slices is "
               f"shown ({len(gallery)} here). Left: the crop with its ROI (dotted) and the true boxes (green); "
               f"then, left to right: {esc(panels)}.</p>")
    for p in gallery:
        out.append(figure(p, esc(p.stem)))

    out.append("<h2 id=\"profiles\">Slice profiles per battery</h2>")
    names = dict(zip(table["scan_id"], table["battery_id"]))
    profiles = sorted(profiles_dir.glob("*.png"))
    if len(profiles) < len(names):
        out.append(f"<p class=\"note\">{len(names) - len(profiles)} batteries without a true or confirmed crack or "
                   "a disagreement are not drawn (evaluation.max_profiles).</p>")
    for p in profiles:
        out.append(figure(p, f"{esc(names.get(p.stem, ''))} ({esc(p.stem)}): slice score against slice index, "
                             "thresholds dashed, true cracks shaded green, confirmed cracks as bars."))

    out.append(_facts(facts, models))
    out.append("</body></html>")
    return "\n".join(out)


def _names(models: list[str]) -> str:
    names = [registry.display(m) for m in models]
    return " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " and " + names[-1]


def _facts(facts: dict, models: list[str]) -> str:
    out = ["<h2 id=\"run\">Run facts</h2>"]
    sheet = facts["scans"]
    roles = sheet.groupby("role").agg(scans=("scan_id", "size"), slices=("n_slices", "sum")).reset_index()
    out.append(table_html(roles.values.tolist(), ["role", "scans", "slices"]))
    qc = facts["qc"]
    bad = qc[qc["status"] != "ok"] if len(qc) else qc
    if len(bad):
        out.append(f"<p><b>{len(bad)} slices skipped</b> (unreadable or unusable; the rest of the run went on):</p>")
        out.append(table_html(bad[["scan_id", "slice_index", "status", "reason", "path"]].head(200).values.tolist(),
                              ["scan", "slice", "status", "reason", "file"], left=5))
    else:
        out.append("<p>No slice was skipped.</p>")
    notes = facts.get("notes")
    if notes is not None and len(notes):
        out.append(f"<p><b>Discovery notes</b> ({len(notes)}): files or folders left out of the scans, and why.</p>")
        out.append(table_html(notes[["role", "source", "scan_id", "note"]].fillna("").head(200).values.tolist(),
                              ["role", "folder or file", "scan", "note"], left=4))
    times = facts["rule_times"]
    if len(times):
        out.append("<h3>Time per rule (Snakemake benchmark files)</h3>")
        out.append(table_html([[r.rule, r.jobs, f"{r.total_s:.1f}", f"{r.max_s:.1f}", f"{r.max_rss_mb:.0f}"]
                               for r in times.itertuples()],
                              ["rule", "jobs", "total s", "longest job s", "peak memory MB"]))
    out.append("<h3>Models</h3>")
    out.append(table_html(model_facts(models, facts["model_files"]), ["model", "id", "made from", "metadata"], left=4))
    out.append("<h3>Package versions</h3>")
    out.append(table_html([[k, v or "not installed"] for k, v in facts["versions"].items()], ["package", "version"],
                          left=2))
    out.append("<h3>Config</h3><details><summary>config as run (defaults filled in)</summary><pre>"
               + esc(yaml.safe_dump(facts["config"], allow_unicode=True, sort_keys=False)) + "</pre></details>")
    return "\n".join(out)


def write_report(*, out_path: str | Path, comparison_files: dict[str, str], models: list[str], batteries: str,
                 folders: dict[str, str], scans: str, qc: str, benchmarks: list[str], benchmark_root: str,
                 model_files: dict[str, str | None], config: dict, notes: str | None = None) -> None:
    """Gather the run's facts and write the report page atomically."""
    from .comparison import read_outputs
    from .io import package_versions, read_table, write_text

    facts = {"scans": read_table(scans), "qc": read_table(qc) if Path(qc).is_file() else pd.DataFrame(),
             "notes": read_table(notes) if notes and Path(notes).is_file() else None,
             "rule_times": rule_times(benchmarks, benchmark_root), "model_files": model_files, "config": config,
             "versions": package_versions(*dict.fromkeys(
                 [*VERSIONED, *(p for m in models for p in registry.get(m).packages)]))}
    page = build_html(read_outputs(comparison_files), models, read_table(batteries), folders, facts)
    write_text(out_path, page)
    log.info("report %s: %.1f kB", out_path, len(page.encode("utf-8")) / 1024)
