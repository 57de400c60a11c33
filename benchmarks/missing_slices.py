"""One missing slice must not flip a cell: verdicts and peaks of every normal test cell with one
slice, then three consecutive slices, left out at every position.

Real scans lose slices (a corrupt export, a cut range). For each finished run given (its
``output_inference_dir``: the trained models, the test scans' crops, the demo's truth), every
normal test cell is judged whole, then once per position with that slice left out (and with
three consecutive slices left out), through the model's own scoring and the pipeline's
decisions at the automatic threshold (``decisions.settings_from_params``). Printed per cell:
the whole scan's peak (its largest crop score: PatchCore's volume score, the segmenter's
probability), the range of peaks with slices missing, the largest move and the largest rise of
the peak as a share of the threshold (a peak also falls when its own slice goes; a rise is what
can flag), the same of the run score, and the verdicts that changed. For PatchCore the rises are
printed a second time with the complete scan's slabs kept for the slices that remain: what is
left there is the reference's and the windows' doing, the difference the thinner slabs beside
the gap.

PatchCore is judged under each ``--variants`` of its volume evidence, REFERENCE/EDGES
(``patchcore.volume.reference`` and ``.edges``, config/README.md), in one run, each at its own
automatic threshold. A variant whose slabs are the run's model's uses its bank, its threshold
recomputed from the training cells held out one by one as training does
(``PatchCore.heldout_thresholds``; the saved bank does not record which cell each vector came
from, so every bank vector is found again among the training patches). A variant with other
slabs (other ``edges``) gets a bank of its own, trained from the run's training crops with the
model's settings (scoring centred slabs against a bank of shifted ones set a threshold of 8.7
where the bank of centred slabs sets 3.3).

  median/shifted                 before issue #30: plain medians; slab and window the nearest
                                 slices, across a gap, shifted inwards at the scan's ends;
  trimmed-harrell-davis@1.0/centred
                                 trimmed Harrell-Davis medians, the kernel cut to 1/sqrt(n)
                                 (Akinshin's; before the kernel_width key); centred windows over
                                 the slices that exist, a z-score from fewer slices scaled by
                                 sqrt(present / width), a slice alone between gaps not judged;
  trimmed-harrell-davis/centred  the default: the same, the kernel cut to
                                 patchcore.volume.kernel_width / sqrt(n) (1.5);
  and the other combinations (``harrell-davis`` is the kernel uncut; ``@W`` sets the width of a
  trimmed kernel): one change at a time.

Raw maps are cached by the bytes of each slabbed crop, so a left-out slice re-embeds only
the crops whose slab changed. The segmenter rescans the cell each time (its inputs reach
10 slices).

Usage:
    .venv/bin/python benchmarks/missing_slices.py results/real_ct:config/real_ct.yaml results \\
        [--models patchcore segmenter] [--variants median/shifted trimmed-harrell-davis@1.0/centred] [--spans 1 3]

``complete`` edges average slabs as ``centred`` does: both are judged with one bank.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

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


def merged_config(path: str | None) -> dict:
    """config/config.yaml with ``path`` over it, as ``snakemake --configfile path`` merges them."""
    from snakemake.utils import update_config

    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text(encoding="utf-8"))
    if path:
        update_config(base, yaml.safe_load(Path(path).read_text(encoding="utf-8")))
    return validate_schema(base)


def variant(name: str) -> str:
    """REFERENCE[@KERNEL_WIDTH]/EDGES, checked (argparse type)."""
    reference, _, edges = name.partition("/")
    reference, _, width = reference.partition("@")
    if reference not in volume.REFERENCES or edges not in volume.EDGES or (width and not float(width) > 0):
        raise argparse.ArgumentTypeError(f"{name!r}: REFERENCE[@KERNEL_WIDTH]/EDGES, REFERENCE one of "
                                         f"{', '.join(volume.REFERENCES)}, EDGES one of {', '.join(volume.EDGES)}")
    return name


def slab_kind(vol: volume.VolumeSettings) -> tuple[int, str]:
    """What a bank depends on: the slab and how it is averaged (``complete`` averages as ``centred``)."""
    return vol.slab, "shifted" if vol.edges == "shifted" else "centred"


def variant_settings(model: PatchCore, name: str) -> volume.VolumeSettings:
    """The model's volume settings with the variant's; a width not given is today's default."""
    reference, edges = name.split("/")
    reference, _, width = reference.partition("@")
    return replace(volume.VolumeSettings.from_model(model.metadata.get("volume")), reference=reference, edges=edges,
                   kernel_width=float(width) if width else volume.VolumeSettings.kernel_width)


class PatchCoreJudge:
    """PatchCore's evidence of a (partial) scan under one volume setting, raw maps cached by slabbed crop."""

    def __init__(self, model: PatchCore, context: int, vol: volume.VolumeSettings):
        self.model, self.context, self.cache, self.vol = model, context, {}, vol

    def evidence(self, cs: CropSet, whole: CropSet | None = None) -> ScoreMaps:
        """``whole``: the complete scan, whose slabs are kept for the slices ``cs`` has: what a
        missing slice does through the reference and the windows alone, its slabs left as they were."""
        s, r, h, w = cs.crops.shape
        source = whole if whole is not None else cs
        slabbed = volume.slab_crops(source.crops, source.slice_indices, self.vol.slab, self.vol.edges)
        slabbed = slabbed[np.searchsorted(source.slice_indices, cs.slice_indices)].reshape(s * r, h, w)
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


def training_scans(model: PatchCore, run: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """The run's training cells (crops, slice indices), in the order the model was trained on them."""
    sets = {cs.scan_id: cs for cs in map(CropSet.load, sorted(run.glob("crops/train_normal-*/*.npz")))}
    order = [sets[r["scan_id"]] for r in model.metadata["training_scans"] if sets[r["scan_id"]].n_slices]
    return [(cs.crops, cs.slice_indices) for cs in order]


def restore_groups(model: PatchCore, scans, context: int) -> None:
    """Each bank vector's training cell, which the saved model does not keep (the held-out
    threshold needs it): every bank vector is one training patch, found again exactly."""
    import faiss

    from anodect.patchcore.model import inner_patches

    vol = volume.VolumeSettings.from_model(model.metadata["volume"])
    slabbed = [volume.slab_crops(c, i, vol.slab, vol.edges) for c, i in scans]
    flat_crops = np.concatenate([c.reshape(-1, *c.shape[2:]) for c in slabbed])
    groups = np.concatenate([np.full(c.shape[0] * c.shape[1], g) for g, c in enumerate(slabbed)])
    features = model.embed(flat_crops)
    n, gh, gw, d = features.shape
    _, geo = model.geometry(flat_crops.shape[1:])
    rows, cols = inner_patches(geo, (gh, gw), flat_crops.shape[1:], context)
    flat = np.ascontiguousarray(features[:, rows, cols].reshape(-1, d), np.float32)
    index = faiss.IndexFlatL2(d)
    index.add(flat)
    dist, nearest = index.search(np.ascontiguousarray(model.bank, np.float32), 1)
    scale = float(np.median((model.bank ** 2).sum(1)))
    if float(dist.max()) > 1e-6 * scale:
        raise RuntimeError(f"bank vectors not found among the training patches (largest distance {dist.max():.3g})")
    model.bank_groups = groups[nearest[:, 0] // (flat.shape[0] // n)]


def trained_bank(saved: PatchCore, settings, scans, context: int, vol: volume.VolumeSettings, cache: str | None,
                 run: Path) -> PatchCore:
    """A bank of ``vol``'s slabs trained as the pipeline trains, kept in ``cache`` (with each vector's
    training cell) so that a rerun of the benchmark does not train it again."""
    folder = None
    if cache:
        key = hashlib.sha1(json.dumps([str(run.resolve()), saved.metadata["bank_sha256"], slab_kind(vol),
                                       replace(settings, volume=vol, batch_size=0).__repr__()]).encode())
        folder = Path(cache) / key.hexdigest()[:16]
        if (folder / "groups.npy").is_file():
            model = PatchCore.load(folder)
            model.bank_groups = np.load(folder / "groups.npy")
            print(f"{run} {slab_kind(vol)}: bank from {folder}", flush=True)
            return model
    t0 = time.perf_counter()
    model = PatchCore(replace(settings, volume=vol)).fit_scans(scans, context)
    print(f"{run} {slab_kind(vol)}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
    if folder:
        folder.mkdir(parents=True, exist_ok=True)
        model.save(folder)
        np.save(folder / "groups.npy", model.bank_groups)
    return model


def heldout_threshold(model: PatchCore, scans, context: int, vol: volume.VolumeSettings) -> float:
    """The variant's own automatic volume threshold, from the training cells held out one by one."""
    model.settings = replace(model.settings, volume=vol)
    slabbed = [volume.slab_crops(c, i, vol.slab, vol.edges) for c, i in scans]
    return float(model.heldout_thresholds(slabbed, [i for _, i in scans], context)["volume"])


def whole_scans(model: PatchCore, vol: volume.VolumeSettings, threshold: float, run: Path, config: dict) -> dict:
    """Every test cell whole (cracked ones too), judged as ``benchmarks/real_ct.py`` judges them:
    what a variant costs or gains where no slice is missing."""
    import real_ct

    from anodect.config import rois_from_config
    from anodect.tracking import TrackingSettings

    test = real_ct.load_crops(run / "demo", rois_from_config(config), config, "test")
    model.metadata = {**model.metadata, "volume": vol.as_dict(),
                      "auto_threshold": {**model.metadata["auto_threshold"], "volume": threshold}}
    d = config["decisions"]
    tracking = TrackingSettings(min_consecutive_slices=d["min_consecutive_slices"], max_gap=d["max_gap"],
                                link_margin=d["link_margin"])
    m = real_ct.evaluate(model, test, run / "demo" / "truth", tracking)["volume"]
    return {"crop AUROC": round(m["crop_auroc"], 3), "slice AUROC": round(m["slice_auroc"], 3),
            "cracked NG": f"{m['cracked_ng']}/{m['n_cracked']}", "normal NG": f"{m['normal_ng']}/{m['n_normal']}",
            "crack recall": round(m["crack_recall"], 2)}


def without(cs: CropSet, drop: list[int]) -> CropSet:
    keep = np.setdiff1d(np.arange(len(cs.slice_indices)), drop)
    return CropSet(cs.scan_id, cs.crops[keep], cs.slice_indices[keep], cs.paths[keep], cs.roi_names, cs.roi_boxes,
                   cs.window, cs.context, cs.pages[keep])


def judge(judge_, cs: CropSet, settings, model: str, whole: CropSet | None = None) -> tuple[float, float, str]:
    """The scan's peak, its run score (the highest threshold at which ``min_consecutive_slices``
    slices of one ROI in a row stay above it: what decides the verdict) and its verdict.
    ``whole`` (PatchCore): the complete scan's slabs kept (``PatchCoreJudge.evidence``)."""
    ev = judge_.evidence(cs) if whole is None else judge_.evidence(cs, whole)
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
    parser.add_argument("--variants", nargs="+", type=variant,
                        default=["median/shifted", "trimmed-harrell-davis@1.0/centred", "trimmed-harrell-davis/centred"])
    parser.add_argument("--spans", nargs="+", type=int, default=[1, 3], help="consecutive slices left out")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default=str(ROOT / "results" / "benchmarks" / "missing_slices_banks"),
                        help="where banks trained here are kept for reruns ('' keeps none)")
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "missing_slices.json"))
    args = parser.parse_args()
    set_threads(args.threads)
    rows, whole_rows, load = [], [], [os.getloadavg()[0]]
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
                saved = PatchCore.load(folder)
                # Banks trained here use today's coreset (the run's model may predate it).
                train_settings = replace(saved.settings, coreset_block_picks=config["patchcore"]["coreset_block_picks"])
                saved_vol = volume.VolumeSettings.from_model(saved.metadata["volume"])
                scans, restored = training_scans(saved, run), False
                judges, banks = {}, {}
                for v in args.variants:
                    vol = variant_settings(saved, v)
                    if slab_kind(vol) in banks:
                        # Same slab crops as a bank trained here: the same bank; only judging differs.
                        model = banks[slab_kind(vol)]
                        threshold = heldout_threshold(model, scans, context, vol)
                    elif slab_kind(vol) == slab_kind(saved_vol):
                        # The run's bank holds these slabs: only the threshold is the variant's own.
                        model = saved
                        if not restored:
                            restore_groups(saved, scans, context)
                            restored = True
                        banks[slab_kind(vol)] = saved
                        threshold = heldout_threshold(model, scans, context, vol)
                    else:
                        # Other slabs: a bank of them, trained as the pipeline trains (its own threshold).
                        model = trained_bank(saved, train_settings, scans, context, vol, args.cache, run)
                        threshold = heldout_threshold(model, scans, context, vol)
                        banks[slab_kind(vol)] = model
                    print(f"{run} {v}: held-out volume threshold {threshold:.4f}", flush=True)
                    judges[v] = (PatchCoreJudge(model, context, vol), replace(settings, threshold=threshold))
                    whole_rows.append({"run": str(run), "variant": v, **whole_scans(model, vol, threshold, run, config)})
                    print(json.dumps(whole_rows[-1]), flush=True)
            else:
                judges = {"as is": (SegmenterJudge(Segmenter.load(folder), context), settings)}
            for vname, (jd, settings) in judges.items():
                for cs in cells:
                    whole, whole_run, verdict = judge(jd, cs, settings, model_name)
                    thr = abs(settings.threshold)
                    row = {"run": str(run), "model": model_name, "variant": vname, "cell": cs.scan_id,
                           "threshold": round(settings.threshold, 4), "whole peak": round(whole, 4),
                           "whole run score": round(whole_run, 4), "verdict": verdict}
                    for span in args.spans:
                        peaks, runs, flips, kept = [], [], [], []
                        for p in range(len(cs.slice_indices) - span + 1):
                            part = without(cs, list(range(p, p + span)))
                            peak, run_, v = judge(jd, part, settings, model_name)
                            peaks.append(peak)
                            runs.append(run_)
                            if v != verdict:
                                flips.append(f"{int(cs.slice_indices[p])}:{v}")
                            if model_name == "patchcore":
                                kept.append(judge(jd, part, settings, model_name, whole=cs)[:2])
                        row.update({f"{span} out: peaks": f"{min(peaks):.3f}-{max(peaks):.3f}",
                                    f"{span} out: largest move / threshold":
                                        round(max(abs(p - whole) for p in peaks) / thr, 3),
                                    # A peak also falls when its own slice goes; a rise is what can flag.
                                    f"{span} out: largest peak rise / threshold":
                                        round(max(max(p - whole for p in peaks), 0.0) / thr, 3),
                                    f"{span} out: largest run-score move / threshold":
                                        round(max(abs(r - whole_run) for r in runs) / thr, 3),
                                    # What can turn a normal cell NG: the run score rising.
                                    f"{span} out: largest run-score rise / threshold":
                                        round(max(max(r - whole_run for r in runs), 0.0) / thr, 3),
                                    f"{span} out: verdicts changed": ", ".join(flips) or "none"})
                        if kept:
                            # The same, the complete scan's slabs kept: what is left is the reference's
                            # and the windows' doing; the difference is the thinner slabs beside the gap.
                            row.update({f"{span} out, slabs kept: largest peak rise / threshold":
                                            round(max(max(k[0] - whole for k in kept), 0.0) / thr, 3),
                                        f"{span} out, slabs kept: largest run-score rise / threshold":
                                            round(max(max(k[1] - whole_run for k in kept), 0.0) / thr, 3)})
                    row["margin / threshold"] = round(abs(whole - settings.threshold) / thr, 3)
                    row["run margin / threshold"] = round(abs(whole_run - settings.threshold) / thr, 3)
                    rows.append(row)
                    load.append(os.getloadavg()[0])
                    print(json.dumps(row, ensure_ascii=False), flush=True)
    table = pd.DataFrame(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"missing": rows, "whole": whole_rows}, ensure_ascii=False, indent=1),
                              encoding="utf-8")
    print(f"\n{args.threads} threads; machine load (1-min) median {np.median(load):.2f}, "
          f"range {min(load):.2f}-{max(load):.2f}\n")
    print(table.to_markdown(index=False))
    if whole_rows:
        print("\nWhole scans, every test cell (volume evidence at each variant's own threshold):\n")
        print(pd.DataFrame(whole_rows).to_markdown(index=False))
    for (run, model, vname), g in table.groupby(["run", "model", "variant"], sort=False):
        line = [f"{run} {model} [{vname}]"]
        for span in args.spans:
            far = g[g["margin / threshold"] > 0.15]
            far_run = g[g["run margin / threshold"] > 0.15]
            flipped = far[far[f"{span} out: verdicts changed"] != "none"]
            flipped_run = far_run[far_run[f"{span} out: verdicts changed"] != "none"]
            kept = f"{span} out, slabs kept: largest peak rise / threshold"
            line.append(f"{span} out: largest move of the peak {g[f'{span} out: largest move / threshold'].max():.3f}"
                        f" of the threshold (largest rise {g[f'{span} out: largest peak rise / threshold'].max():.3f}"
                        f"), of the run score {g[f'{span} out: largest run-score move / threshold'].max():.3f} "
                        f"(largest rise {g[f'{span} out: largest run-score rise / threshold'].max():.3f})"
                        + (f"; the complete scan's slabs kept: largest rise of the peak {g[kept].max():.3f}, of the "
                           f"run score {g[f'{span} out, slabs kept: largest run-score rise / threshold'].max():.3f}"
                           if kept in g and g[kept].notna().any() else "")
                        + f"; verdicts changed: "
                        f"{len(flipped)} of {len(far)} cells with the peak >15% from the threshold, "
                        f"{len(flipped_run)} of {len(far_run)} with the run score >15% from it, "
                        f"{int((g[f'{span} out: verdicts changed'] != 'none').sum())} of {len(g)} in all")
        print("; ".join(line))


if __name__ == "__main__":
    main()
