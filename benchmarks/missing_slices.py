"""One missing slice must not flip a cell: verdicts and peaks of every normal test cell with one
slice, then three consecutive slices, left out at every position.

Real scans lose slices (a corrupt export, a cut range). For each finished run given (its
``output_inference_dir``: the trained models, the test scans' crops, the demo's truth), every
normal test cell is judged whole, then once per position with that slice left out (and with
three consecutive slices left out), through the model's own scoring and the pipeline's
decisions at the automatic threshold (``decisions.settings_from_params``). Printed per cell:
the whole scan's peak (its largest crop score: PatchCore's volume score, the segmenter's
probability), the range of peaks with slices missing, the largest move of the peak as a share
of the threshold, and the verdicts that changed.

PatchCore is judged under each ``--variants`` of its volume evidence (slab and window) in one run:

  bridge           the pipeline's (unchanged): the ``width`` nearest slices within ``width - 1``
                   slice numbers, so near a gap a slab or window takes a slice from across it;
  ends             a gap as a scan end: the window stays in the run of consecutive slices,
                   shifted away from the gap (a short run averaged whole);
  truncate         the centred window over the slices that exist in it (fewer beside a gap and
                   at the scan's ends);
  truncate-gaps    truncate at gaps, the scan's ends shifted inwards as before;
  truncate-scaled  truncate, each z-score scaled by sqrt(slices in its slab / slab) and each
                   window mean by sqrt(slices in it / window): fewer slices are not more evidence;
  gaps-scaled      truncate-gaps, scaled the same way: complete scans judged exactly as now.

Raw maps are cached by the bytes of each slabbed crop, so a left-out slice re-embeds only
the crops whose slab changed. The segmenter rescans the cell each time (its inputs reach
10 slices).

Usage:
    .venv/bin/python benchmarks/missing_slices.py results/real_ct:config/real_ct.yaml results \\
        [--models patchcore segmenter] [--variants bridge truncate-scaled] [--spans 1 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from anodect.config import validate_schema  # noqa: E402
from anodect.crops import CropSet  # noqa: E402
from anodect.decisions import decide, settings_from_params  # noqa: E402
from anodect.devices import set_threads  # noqa: E402
from anodect.evidence import ScoreMaps  # noqa: E402
from anodect.metrics import run_score  # noqa: E402
from anodect.patchcore import volume  # noqa: E402
from anodect.patchcore.model import PatchCore  # noqa: E402
from anodect.registry import get  # noqa: E402
from anodect.segmenter.model import Segmenter  # noqa: E402
from anodect.sheets import read_sheet  # noqa: E402


def ends_neighbour_mean(stack: np.ndarray, slice_indices: np.ndarray, width: int) -> np.ndarray:
    """A gap as a scan end: ``width`` consecutive slices within the run of consecutive slice
    numbers, shifted away from the gap; a run shorter than ``width`` averaged whole."""
    stack = np.asarray(stack)
    if width <= 1 or len(stack) <= 1:
        return stack.astype(np.float32)
    idx = np.asarray(slice_indices, np.int64)
    order = np.argsort(idx, kind="stable")
    breaks = np.flatnonzero(np.diff(idx[order]) != 1) + 1
    starts, ends = np.concatenate([[0], breaks]), np.concatenate([breaks, [len(idx)]]) - 1
    run = np.searchsorted(starts, np.arange(len(idx)), side="right") - 1
    out = np.empty(stack.shape, np.float32)
    for k in range(len(idx)):
        first, last = starts[run[k]], ends[run[k]]
        lo = first if last - first + 1 <= width else int(np.clip(k - width // 2, first, last - width + 1))
        hi = last if last - first + 1 <= width else lo + width - 1
        out[order[k]] = stack[order[lo:hi + 1]].mean(axis=0, dtype=np.float32)
    return out


def truncated_neighbour_mean(stack: np.ndarray, slice_indices: np.ndarray, width: int,
                             shift_at_ends: bool = False) -> np.ndarray:
    """The centred window of ``width`` slice numbers, over the slices that exist in it (fewer beside a
    gap); with ``shift_at_ends`` the scan's first and last slices keep a full window shifted inwards."""
    stack = np.asarray(stack)
    if width <= 1 or len(stack) <= 1:
        return stack.astype(np.float32)
    idx = np.asarray(slice_indices, np.int64)
    first, last = idx.min(), idx.max()
    out = np.empty(stack.shape, np.float32)
    for k, s in enumerate(idx):
        lo = s - width // 2
        if shift_at_ends:
            lo = min(max(lo, first), max(last - width + 1, first))
        inside = (idx >= lo) & (idx <= lo + width - 1)
        out[k] = stack[inside].mean(axis=0, dtype=np.float32)
    return out


def present(slice_indices: np.ndarray, width: int, shift_at_ends: bool = False) -> np.ndarray:
    """How many slices of each slice's window of ``width`` slice numbers exist (centred, or
    shifted inwards at the scan's first and last slices)."""
    idx = np.asarray(slice_indices, np.int64)
    first, last = idx.min(), idx.max()
    lo = idx - width // 2
    if shift_at_ends:
        lo = np.minimum(np.maximum(lo, first), max(last - width + 1, first))
    return np.array([int(((idx >= a) & (idx <= a + width - 1)).sum()) for a in lo], np.float32)


_plain_volume_maps = volume.volume_maps


def scaled_volume_maps(maps: np.ndarray, slice_indices: np.ndarray, settings, shift_at_ends: bool = False
                       ) -> np.ndarray:
    """Truncated windows whose fewer slices do not count as evidence: each z-score scaled by
    sqrt(slices in its slab / slab), each window mean by sqrt(slices in it / window), so a mean of
    fewer slices has the null spread of a full one."""
    from dataclasses import replace

    z = _plain_volume_maps(maps, slice_indices, replace(settings, window=1))
    if not np.isfinite(z).any():
        return z
    k_slab = present(slice_indices, settings.slab, shift_at_ends)
    z = z * np.sqrt(k_slab / max(settings.slab, 1))[:, None, None, None]
    zw = truncated_neighbour_mean(z, slice_indices, settings.window, shift_at_ends)
    k_window = present(slice_indices, settings.window, shift_at_ends)
    return zw * np.sqrt(k_window / max(settings.window, 1))[:, None, None, None]


VARIANTS = {"bridge": volume.neighbour_mean, "ends": ends_neighbour_mean,
            "truncate": truncated_neighbour_mean,
            "truncate-gaps": lambda st, ix, w: truncated_neighbour_mean(st, ix, w, shift_at_ends=True),
            "truncate-scaled": truncated_neighbour_mean,
            "gaps-scaled": lambda st, ix, w: truncated_neighbour_mean(st, ix, w, shift_at_ends=True)}


@contextmanager
def variant(name: str):
    saved, saved_maps = volume.neighbour_mean, volume.volume_maps
    volume.neighbour_mean = VARIANTS[name]
    if name == "truncate-scaled":
        volume.volume_maps = scaled_volume_maps
    elif name == "gaps-scaled":
        volume.volume_maps = lambda m, ix, st: scaled_volume_maps(m, ix, st, shift_at_ends=True)
    try:
        yield
    finally:
        volume.neighbour_mean, volume.volume_maps = saved, saved_maps


def merged_config(path: str | None) -> dict:
    """config/config.yaml with ``path`` over it, as ``snakemake --configfile path`` merges them."""
    from snakemake.utils import update_config

    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text(encoding="utf-8"))
    if path:
        update_config(base, yaml.safe_load(Path(path).read_text(encoding="utf-8")))
    return validate_schema(base)


class PatchCoreJudge:
    """PatchCore's evidence of a (partial) scan, with raw maps cached by slabbed crop."""

    def __init__(self, model: PatchCore, context: int):
        self.model, self.context, self.cache = model, context, {}
        self.vol = volume.VolumeSettings.from_config(model.metadata.get("volume", {"slab": 1}))

    def evidence(self, cs: CropSet) -> ScoreMaps:
        s, r, h, w = cs.crops.shape
        slabbed = volume.slab_crops(cs.crops, cs.slice_indices, self.vol.slab).reshape(s * r, h, w)
        keys = [hashlib.sha1(c.tobytes()).hexdigest() for c in slabbed]
        missing = [k for k, key in enumerate(keys) if key not in self.cache]
        if missing:
            result = self.model.score(slabbed[missing], self.context)
            for j, k in enumerate(missing):
                self.cache[keys[k]] = (float(result.scores[j]), result.maps[j])
        scores = np.array([self.cache[k][0] for k in keys], np.float32).reshape(s, r)
        maps = np.stack([self.cache[k][1] for k in keys]).reshape(s, r, *self.cache[keys[0]][1].shape)
        vmaps = volume.volume_maps(maps, cs.slice_indices, self.vol)
        return ScoreMaps.from_crops(cs, scores, maps, "missing-slices", volume.volume_scores(vmaps), vmaps,
                                    self.vol.as_dict())


class SegmenterJudge:
    def __init__(self, model: Segmenter, context: int):
        self.model, self.context = model, context

    def evidence(self, cs: CropSet) -> ScoreMaps:
        scores, maps, _ = self.model.score(cs.crops, cs.slice_indices, self.context)
        return ScoreMaps.from_crops(cs, scores, maps, "missing-slices")


def without(cs: CropSet, drop: list[int]) -> CropSet:
    keep = np.setdiff1d(np.arange(len(cs.slice_indices)), drop)
    return CropSet(cs.scan_id, cs.crops[keep], cs.slice_indices[keep], cs.paths[keep], cs.roi_names, cs.roi_boxes,
                   cs.window, cs.context, cs.pages[keep])


def judge(judge_, cs: CropSet, settings, model: str) -> tuple[float, float, str]:
    """The scan's peak, its run score (the highest threshold at which ``min_consecutive_slices``
    slices of one ROI in a row stay above it: what decides the verdict) and its verdict."""
    ev = judge_.evidence(cs)
    crop = ev.volume_scores if settings.evidence == "volume" and ev.volume_scores is not None else ev.scores
    peak = float(np.nanmax(crop)) if np.isfinite(crop).any() else float("nan")
    table = pd.DataFrame([(int(i), r, float(crop[k, r])) for k, i in enumerate(cs.slice_indices)
                          for r in range(crop.shape[1])], columns=["slice_index", "roi", "score"]).fillna(-np.inf)
    run = run_score(table, settings.tracking.min_consecutive_slices)
    d = decide(model, {"scan_id": cs.scan_id, "battery_id": cs.scan_id, "axis": ""}, ev.flagged(settings),
               [int(i) for i in cs.slice_indices], {}, settings.tracking)
    return peak, run, d.verdict


def normal_test_cells(run: Path) -> list[CropSet]:
    battery = {r["scan_id"]: r["battery_id"] for r in read_sheet(run / "scans.tsv")}
    cells = pd.read_csv(run / "demo" / "truth" / "cells.csv").set_index("battery_id")["verdict"]
    out = []
    for path in sorted(run.glob("crops/inspect-*/*.npz")):
        cs = CropSet.load(path)
        if cells.get(battery.get(cs.scan_id)) == "OK":
            out.append(cs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="RUN_DIR[:CONFIG] of finished runs")
    parser.add_argument("--models", nargs="+", default=["patchcore"], choices=["patchcore", "segmenter"])
    parser.add_argument("--variants", nargs="+", default=["bridge", "truncate-scaled"], choices=list(VARIANTS))
    parser.add_argument("--spans", nargs="+", type=int, default=[1, 3], help="consecutive slices left out")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "missing_slices.json"))
    args = parser.parse_args()
    set_threads(args.threads)
    rows, load = [], [os.getloadavg()[0]]
    for spec in args.runs:
        run, _, cfg = spec.partition(":")
        run = Path(run)
        config = merged_config(cfg or None)
        context = config["crop_context"]
        cells = normal_test_cells(run)
        for model_name in args.models:
            folder = run / model_name / "model"
            params = get(model_name).decision_params(config)
            settings = settings_from_params({**params, "threshold": "auto"}, folder / "model.json", model_name)
            if model_name == "patchcore":
                judges = {v: PatchCoreJudge(PatchCore.load(folder), context) for v in args.variants}
            else:
                judges = {"as is": SegmenterJudge(Segmenter.load(folder), context)}
            for vname, jd in judges.items():
                with variant(vname if model_name == "patchcore" else "ends"):
                    for cs in cells:
                        whole, whole_run, verdict = judge(jd, cs, settings, model_name)
                        thr = abs(settings.threshold)
                        row = {"run": str(run), "model": model_name, "variant": vname, "cell": cs.scan_id,
                               "threshold": round(settings.threshold, 4), "whole peak": round(whole, 4),
                               "whole run score": round(whole_run, 4), "verdict": verdict}
                        for span in args.spans:
                            peaks, runs, flips = [], [], []
                            for p in range(len(cs.slice_indices) - span + 1):
                                peak, run_, v = judge(jd, without(cs, list(range(p, p + span))), settings,
                                                      model_name)
                                peaks.append(peak)
                                runs.append(run_)
                                if v != verdict:
                                    flips.append(f"{int(cs.slice_indices[p])}:{v}")
                            row.update({f"{span} out: peaks": f"{min(peaks):.3f}-{max(peaks):.3f}",
                                        f"{span} out: largest move / threshold":
                                            round(max(abs(p - whole) for p in peaks) / thr, 3),
                                        f"{span} out: largest run-score move / threshold":
                                            round(max(abs(r - whole_run) for r in runs) / thr, 3),
                                        f"{span} out: verdicts changed": ", ".join(flips) or "none"})
                        row["margin / threshold"] = round(abs(whole - settings.threshold) / thr, 3)
                        row["run margin / threshold"] = round(abs(whole_run - settings.threshold) / thr, 3)
                        rows.append(row)
                        load.append(os.getloadavg()[0])
                        print(json.dumps(row, ensure_ascii=False), flush=True)
    table = pd.DataFrame(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"\n{args.threads} threads; machine load (1-min) median {np.median(load):.2f}, "
          f"range {min(load):.2f}-{max(load):.2f}\n")
    print(table.to_markdown(index=False))
    for (run, model, vname), g in table.groupby(["run", "model", "variant"], sort=False):
        line = [f"{run} {model} [{vname}]"]
        for span in args.spans:
            far = g[g["margin / threshold"] > 0.15]
            far_run = g[g["run margin / threshold"] > 0.15]
            flipped = far[far[f"{span} out: verdicts changed"] != "none"]
            flipped_run = far_run[far_run[f"{span} out: verdicts changed"] != "none"]
            line.append(f"{span} out: largest move of the peak {g[f'{span} out: largest move / threshold'].max():.3f}"
                        f" of the threshold, of the run score "
                        f"{g[f'{span} out: largest run-score move / threshold'].max():.3f}; verdicts changed: "
                        f"{len(flipped)} of {len(far)} cells with the peak >15% from the threshold, "
                        f"{len(flipped_run)} of {len(far_run)} with the run score >15% from it, "
                        f"{int((g[f'{span} out: verdicts changed'] != 'none').sum())} of {len(g)} in all")
        print("; ".join(line))


if __name__ == "__main__":
    main()
