"""The evaluate rule: every model's decisions and evidence against the truth and each other.

Reads what the pipeline wrote (the summary tables and each model's evidence files,
through ``anodect.evidence``), computes every metric of ``anodect.metrics`` (the
metrics library) and writes them as JSON and a long CSV, with the slice table and
the disagreements the report and its figures are drawn from. Without ground truth
only the comparison of the models is made.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import metrics as ev
from . import registry
from .decisions import DecisionSettings, read_evidence, resolve_threshold, settings_from_params
from .evidence import CROP_SCORE_COLUMNS
from .io import read_table, write_json, write_table

log = logging.getLogger(__name__)


@dataclass
class ModelRun:
    """One model's files and decision settings (``workflow.decision_params``)."""

    name: str  # the model's key
    outputs: dict[str, str]  # scan_id -> its evidence file
    params: dict  # threshold resolved to a number

    @property
    def threshold(self) -> float:
        return float(self.params["threshold"])

    @property
    def evidence(self) -> str:
        return self.params.get("evidence", "slice")

    @property
    def maps(self) -> bool:
        """Whether the model's evidence is score maps (a crop score that may be NaN, a threshold it sets)."""
        return registry.get(self.name).evidence == "maps"

    @property
    def settings(self) -> DecisionSettings:
        return settings_from_params(self.params)


@dataclass
class Comparison:
    metrics: dict
    slices: pd.DataFrame  # one row per inspected slice: truth, each model's score and decisions
    crop_scores: pd.DataFrame  # evaluation.CROP_SCORE_COLUMNS
    disagreements: pd.DataFrame
    truth: ev.Truth | None


def files_by_scan(paths, scan_ids: list[str]) -> dict[str, str]:
    """scan_id -> its file among per-scan outputs named ``<scan_id>.<ext>``; every scan must have one."""
    found = {Path(p).stem: str(p) for p in paths}
    missing = [s for s in scan_ids if s not in found]
    if missing:
        raise FileNotFoundError(f"no per-scan file for {', '.join(missing[:5])} among {len(found)} files")
    return {s: found[s] for s in scan_ids}


def crop_scores(run: ModelRun, crop_meta: dict[str, dict]) -> pd.DataFrame:
    """Every crop's threshold-free score for one model, scans in sorted order."""
    settings = run.settings
    parts = [read_evidence(run.name, run.outputs[sid], settings).crop_table(run.name, settings,
                                                                             {**crop_meta[sid], "scan_id": sid})
             for sid in sorted(run.outputs)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=CROP_SCORE_COLUMNS)


def all_boxes(run: ModelRun) -> pd.DataFrame:
    """Every box the model draws before its threshold, ranked by its score (for box AP).

    Score maps: the regions of every crop at the configured map level, each scored
    with its crop's score. Scored boxes: every box above the score floor after NMS.
    """
    settings = run.settings
    parts = []
    for scan_id in sorted(run.outputs):
        boxes = read_evidence(run.name, run.outputs[scan_id], settings).ranked(settings)
        boxes.insert(0, "scan_id", scan_id)
        parts.append(boxes)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["scan_id", "slice_index", "roi", "x1", "y1", "x2", "y2", "score"])


def slice_table(scans: list[dict], decisions: pd.DataFrame, scores: pd.DataFrame, models: list[str],
                truth: ev.Truth | None) -> pd.DataFrame:
    """One row per inspected slice: truth, then each model's slice score, flag and verdict."""
    battery = {s["scan_id"]: s["battery_id"] for s in scans}
    per_slice = ev.slice_scores(scores)
    table = None
    for m in models:
        d = decisions[decisions["model"] == m][["scan_id", "slice_index", "flagged", "anomaly"]].copy()
        d = d.merge(per_slice[per_slice["model"] == m].drop(columns="model"), on=["scan_id", "slice_index"],
                    how="left")
        d = d.rename(columns={c: f"{m}_{c}" for c in ("flagged", "anomaly", "score")})
        table = d if table is None else table.merge(d, on=["scan_id", "slice_index"], how="outer")
    table = table.sort_values(["scan_id", "slice_index"]).reset_index(drop=True)
    table.insert(1, "battery_id", table["scan_id"].map(battery))
    if truth is not None:
        table = table.merge(truth.slices.rename(columns={"cracked": "truth"}), on=["scan_id", "slice_index"],
                            how="left")
    for m in models:
        for c in ("flagged", "anomaly"):
            table[f"{m}_{c}"] = table[f"{m}_{c}"].fillna(False).astype(bool)
    return table


def _verdicts(batteries: pd.DataFrame, model: str) -> pd.Series:
    """scan_id -> NG, for the scans the model gave a verdict (``NO DATA`` scans are left out)."""
    given = batteries[batteries[f"{model}_verdict"].isin(["OK", "NG"])]
    return pd.Series((given[f"{model}_verdict"] == "NG").to_numpy(), index=given["scan_id"], dtype=bool)


def model_metrics(run: ModelRun, table: pd.DataFrame, cracks: pd.DataFrame, batteries: pd.DataFrame,
                  scores: pd.DataFrame, truth: ev.Truth | None) -> dict:
    """One model's metrics at every level; decision counts only when there is no truth."""
    m = run.name
    verdict = _verdicts(batteries, m)
    mine = cracks[cracks["model"] == m].reset_index(drop=True)
    out = {"threshold": run.threshold, "min_consecutive_slices": run.params["min_consecutive_slices"],
           **({"evidence": run.evidence, "threshold_source": run.params.get("threshold_source", "config")}
              if run.maps else {}),
           "counts": {"batteries_ng": int(verdict.sum()), "batteries": int(len(verdict)),
                      "batteries_no_data": int(len(batteries) - len(verdict)),
                      "cracks": int(len(mine)), "slices_flagged": int(table[f"{m}_flagged"].sum()),
                      "slices_anomaly": int(table[f"{m}_anomaly"].sum()), "slices": int(len(table))}}
    if truth is None:
        return out
    rows = table[table["truth"].notna()]
    labels = rows["truth"].astype(bool)
    score = rows[f"{m}_score"]
    # A crop without a score (no box; no volume evidence) ranks below every scored one.
    score = score.fillna(float(score.min()) - 1.0 if run.maps and score.notna().any() else 0.0)
    true_ng = truth.verdicts()
    evaluated = set(true_ng.index)
    out["slice"] = ev.slice_metrics(labels, score, rows[f"{m}_flagged"])
    out["slice_tracked"] = ev.slice_metrics(labels, score, rows[f"{m}_anomaly"])
    out["crack"] = ev.crack_metrics(mine[mine["scan_id"].isin(evaluated)].reset_index(drop=True), truth.cracks,
                                    len(evaluated))
    out["battery"] = ev.battery_metrics(true_ng, verdict)
    out["full_recall_threshold"] = ev.threshold_for_full_recall(
        scores[scores["model"] == m], true_ng, int(run.params["min_consecutive_slices"]))
    boxes = all_boxes(run)
    images = rows[["scan_id", "slice_index"]]
    out["boxes"] = ev.coco_box_ap(truth.boxes, boxes, images)
    return out


def disagreements(table: pd.DataFrame, scores: pd.DataFrame, runs: list[ModelRun], truth: ev.Truth | None,
                  gallery_max: int) -> pd.DataFrame:
    """Slices where the models' verdicts differ (one model: where it differs from the truth).

    Each disagreement run (consecutive slices of one scan with the same pattern)
    offers its middle slice to the gallery, up to ``gallery_max`` in scan order; the
    ROI shown is the one with a true box, else the one with the strongest evidence
    relative to each model's threshold.
    """
    models = [r.name for r in runs]
    if len(models) > 1:
        verdicts = table[[f"{m}_anomaly" for m in models]]
        differ = verdicts.nunique(axis=1) > 1
    elif truth is not None:
        differ = table["truth"].notna() & (table[f"{models[0]}_anomaly"] != table["truth"].eq(True))
    else:
        differ = pd.Series(False, index=table.index)
    rows = table[differ].copy()
    columns = [*table.columns, "roi", "gallery"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    relative = []
    for r in runs:
        s = scores[scores["model"] == r.name].set_index(["scan_id", "slice_index", "roi"])["score"]
        relative.append(s / max(abs(r.threshold), 1e-9))
    evidence = pd.concat(relative, axis=1).max(axis=1)
    by_slice = {key: group.droplevel([0, 1]) for key, group in evidence.groupby(level=[0, 1])}
    true_roi = {}
    if truth is not None:
        for b in truth.boxes.itertuples():
            true_roi.setdefault((b.scan_id, int(b.slice_index)), b.roi)
    roi = []
    for r in rows.itertuples():
        key = (r.scan_id, int(r.slice_index))
        if key in true_roi:
            roi.append(true_roi[key])
            continue
        here = by_slice.get(key)
        roi.append(str(here.idxmax()) if here is not None and len(here) else "")
    rows["roi"] = roi
    pattern = rows[[f"{m}_anomaly" for m in models]].astype(int).astype(str).agg("".join, axis=1)
    position = table.groupby("scan_id").cumcount()[rows.index]
    new_run = (rows["scan_id"] != rows["scan_id"].shift()) | (position.diff() != 1) | (pattern != pattern.shift())
    run_id = new_run.cumsum()
    chosen = set()
    for _, group in rows.groupby(run_id, sort=True):
        if len(chosen) >= gallery_max:
            break
        chosen.add(group.index[len(group) // 2])
    rows["gallery"] = rows.index.isin(chosen)
    return rows[columns].reset_index(drop=True)


def compare(runs: list[ModelRun], scans: list[dict], tables: dict[str, str], crop_paths: dict[str, str],
            truth_spec: str | None, gallery_max: int = 24) -> Comparison:
    """Evaluate every model of the run and compare them.

    Args:
        runs: the run's models, in report order.
        scans: sample-sheet records of the inspected scans.
        tables: ``slices``, ``cracks``, ``batteries`` -> the summary tables.
        crop_paths: scan_id -> crops file (slices the models saw, ROIs).
        truth_spec: ground truth path (``evaluation.truth`` resolved), None for none.
        gallery_max: most disagreements drawn in the report.
    """
    from .crops import CropSet

    models = [r.name for r in runs]
    crop_meta = {sid: CropSet.read_meta(p) for sid, p in sorted(crop_paths.items())}
    truth = ev.load_truth(truth_spec, scans, crop_paths)
    decisions = read_table(tables["slices"])
    cracks = read_table(tables["cracks"])
    batteries = read_table(tables["batteries"])
    scores = pd.concat([crop_scores(r, crop_meta) for r in runs], ignore_index=True)
    table = slice_table(scans, decisions, scores, models, truth)
    metrics: dict = {"models": {}, "agreement": None, "truth": None,
                     "counts": {"scans": len(scans), "slices": int(len(table)),
                                "crops": int(len(scores) // max(len(models), 1))}}
    if truth is not None:
        metrics["truth"] = {"source": truth.source, "scans": len(truth.scan_ids()),
                            "slices": int(len(truth.slices)), "cracked_slices": int(truth.slices["cracked"].sum()),
                            "cracks": int(len(truth.cracks)), "batteries_ng": int(truth.verdicts().sum()),
                            "truth_unreadable": truth.unreadable, "notes": truth.notes}
    for r in runs:
        metrics["models"][r.name] = model_metrics(r, table, cracks, batteries, scores, truth)
        log.info("%s: %s", r.name, {k: v for k, v in metrics["models"][r.name].items() if k != "boxes"})
    if len(models) > 1:
        metrics["agreement"] = [pair_agreement(table, batteries, a, b)
                                for i, a in enumerate(models) for b in models[i + 1:]]
    gallery_max = int(gallery_max)
    return Comparison(metrics, table, scores, disagreements(table, scores, runs, truth, gallery_max), truth)


def pair_agreement(table: pd.DataFrame, batteries: pd.DataFrame, a: str, b: str) -> dict:
    """Two models' agreement on the batteries both judged and on every slice."""
    va, vb = _verdicts(batteries, a), _verdicts(batteries, b)
    both = va.index.intersection(vb.index)
    return {"battery": ev.agreement(va[both], vb[both]),
            "slice": ev.agreement(table[f"{a}_anomaly"], table[f"{b}_anomaly"]), "first": a, "second": b}


def metric_rows(metrics: dict) -> pd.DataFrame:
    """The metrics as a long table: model, level, metric, value."""
    rows = []
    for m, levels in metrics["models"].items():
        for level, values in levels.items():
            if isinstance(values, dict):
                rows += [{"model": m, "level": level, "metric": k, "value": v} for k, v in values.items()]
            else:
                rows.append({"model": m, "level": "settings" if level != "full_recall_threshold" else "threshold",
                             "metric": level, "value": values})
    for pair in metrics.get("agreement") or []:
        for level, values in pair.items():
            if isinstance(values, dict):
                rows += [{"model": f"{pair['first']}+{pair['second']}", "level": f"agreement_{level}", "metric": k,
                          "value": v} for k, v in values.items()]
    return pd.DataFrame(rows, columns=["model", "level", "metric", "value"])


def write_comparison(result: Comparison, outputs: dict[str, str]) -> None:
    """Write metrics.json, metrics.csv, the slice table, crop scores, truth and disagreements."""
    write_json(outputs["metrics_json"], result.metrics)
    write_table(outputs["metrics_csv"], metric_rows(result.metrics))
    write_table(outputs["slices"], result.slices)
    write_table(outputs["crop_scores"], result.crop_scores)
    write_table(outputs["disagreements"], result.disagreements)
    truth = result.truth
    write_table(outputs["truth_boxes"], truth.boxes if truth else pd.DataFrame(columns=ev.TRUTH_BOX_COLUMNS))
    write_table(outputs["truth_cracks"], truth.cracks if truth else pd.DataFrame(columns=ev.TRUTH_CRACK_COLUMNS))


def read_outputs(paths: dict[str, str]) -> dict:
    """What ``write_comparison`` wrote, for the figures and the report."""
    import json

    out = {"metrics": json.loads(Path(paths["metrics_json"]).read_text(encoding="utf-8"))}
    for name in ("slices", "crop_scores", "disagreements", "truth_boxes", "truth_cracks"):
        out[name] = read_table(paths[name])
    return out


def resolved_params(model: str, params: dict, model_meta: str | None) -> dict:
    """A model's decision params with ``threshold: auto`` replaced by the model's own threshold."""
    source = "automatic (held-out training cells)" if params["threshold"] == "auto" else "config"
    threshold = resolve_threshold(params["threshold"], params.get("evidence", "slice"), model_meta or None,
                                  registry.get(model).threshold_key)
    return {**params, "threshold": threshold, "threshold_source": source}


def run_comparison(*, scans: list[dict], settings: dict[str, dict], evidence: dict[str, list[str]],
                   crops: list[str], tables: dict[str, str], threshold_meta: dict[str, str], truth_spec: str | None,
                   gallery_max: int, outputs: dict[str, str]) -> Comparison:
    """The evaluate rule: compare the run's models and write the comparison files.

    Args:
        scans: sample-sheet records of the inspected scans.
        settings: model -> its decision params (``ModelPlugin.decision_params``).
        evidence: model -> its per-scan evidence files.
        crops: the per-scan crops files.
        tables: ``slices``, ``cracks``, ``batteries`` -> the summary tables.
        threshold_meta: model -> its model.json, for the models whose threshold is ``auto``.
        truth_spec: ``planning.evaluation_truth``.
        gallery_max: ``evaluation.gallery_max``.
        outputs: the paths ``write_comparison`` writes.
    """
    ids = [s["scan_id"] for s in scans]
    runs = []
    for m, params in settings.items():
        resolved = resolved_params(m, params, threshold_meta.get(m)) if registry.get(m).evidence == "maps" else params
        runs.append(ModelRun(m, files_by_scan(evidence[m], ids), resolved))
    result = compare(runs, scans, tables, files_by_scan(crops, ids), truth_spec, gallery_max)
    write_comparison(result, outputs)
    return result
