"""Per-job start-up against the batch size: PatchCore scoring, crops/s end to end, for short
and long scans.

Every job pays Python's start-up, the imports and the model load once; with
``scans_per_job`` above 1 that is paid once per batch instead of once per scan. This runs
the pipeline's own scoring jobs (``snakemake --until score_patchcore --forcerun
score_patchcore``) on demo scans of each length, for each ``--scans-per-job`` value, the
values alternating within every repeat. PatchCore is trained once, in the setup, on two
normal demo scans of ``--train-slices`` slices, and frozen for every length (training on two
300-slice scans, 1,200 crops, ran past 15 minutes on 2 cores: the coreset). Per value it prints:

- end to end: crops scored over the sum of the scoring jobs' benchmark seconds (start-up
  and model load included; the sum, so how many jobs ran side by side does not count);
- inside: the rate each scan's log line reports (median over scans), what the model does
  once loaded.

Medians and ranges over ``--repeats``, with the load average.

    python benchmarks/batch_startup.py [--slices 26 300] [--scans 12 4] [--scans-per-job 1 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from anodect.batches import assign  # noqa: E402
from anodect.sheets import read_sheet  # noqa: E402

RATE = re.compile(r"(\d+) crops in ([\d.]+) s \(([\d.]+) crops/s\)")
FIRST = 203  # the demo's first slice; the range analysed starts 2 slices in, as in config.yaml


def snakemake(root: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(root), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def write_config(root: Path, base: dict, n_slices: int, n_scans: int, scans_per_job: int,
                 model: Path | None) -> None:
    results = root / "results"
    config = copy.deepcopy(base)
    demo = results / "demo"
    config.update(
        output_inference_dir=str(results), input_dir=str(demo / "scans" / "test"),
        training={"normal_dir": str(demo / "scans" / "train_normal")},
        filter_index_range={"min": FIRST + 2, "max": FIRST + 1 + n_slices}, scans_per_job=scans_per_job,
    )
    config["demo"] = {**config["demo"], "out_dir": str(demo), "n_train_normal": 2, "n_train_defect": 1,
                      "n_test": n_scans, "first_slice": FIRST, "last_slice": FIRST + 3 + n_slices}
    config["rfdetr"] = {**config["rfdetr"], "model": "none"}
    config["evaluation"] = {**config.get("evaluation", {}), "truth": "none"}
    if model is not None:
        config["patchcore"] = {**config["patchcore"], "model": str(model)}
    (root / "config").mkdir(exist_ok=True)
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))


def score_once(root: Path, scans_per_job: int) -> dict:
    """Force the scoring jobs of one batch layout; their summed job seconds, crops and inner rates."""
    results = root / "results"
    sheet = read_sheet(results / "scans.tsv")
    batch_of = assign(sheet, scans_per_job)
    batches = sorted({batch_of[r["scan_id"]] for r in sheet if r["role"] == "inspect"})
    logs = results / "logs" / "score_patchcore"
    for batch in batches:
        (logs / f"{batch}.log").unlink(missing_ok=True)
    snakemake(root, "--until", "score_patchcore", "--forcerun", "score_patchcore")
    seconds, crops, rates, jobs = 0.0, 0, [], 0
    for batch in batches:
        bench = results / "benchmarks" / "score_patchcore" / f"{batch}.tsv"
        log = logs / f"{batch}.log"
        header, row = bench.read_text().splitlines()[:2]
        seconds += float(row.split("\t")[header.split("\t").index("s")])
        jobs += 1
        for n, _, rate in RATE.findall(log.read_text(encoding="utf-8", errors="replace")):
            crops += int(n)
            rates.append(float(rate))
    return {"jobs": jobs, "seconds": seconds, "crops": crops, "end_to_end": crops / seconds,
            "inside": statistics.median(rates)}


def summary(values: list[float], unit: str = "") -> str:
    return f"{statistics.median(values):.1f}{unit} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, nargs="+", default=[26, 300], help="slices per scan")
    parser.add_argument("--scans", type=int, nargs="+", default=[12, 4], help="scans to score, one per --slices")
    parser.add_argument("--scans-per-job", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--train-slices", type=int, default=26, help="slices of the normal scans PatchCore learns")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="keep the work folders under this folder")
    args = parser.parse_args()
    if len(args.scans) != len(args.slices):
        parser.error("give one --scans value per --slices value")
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    trained = Path(tempfile.mkdtemp(prefix="startup-model-", dir=args.keep))
    t0 = time.perf_counter()
    write_config(trained, base, args.train_slices, 1, 1, None)
    snakemake(trained, "--until", "train_patchcore")
    model = trained / "models" / "patchcore"
    shutil.copytree(trained / "results" / "patchcore" / "model", model)
    print(f"PatchCore trained on 2 normal scans of {args.train_slices} slices in {time.perf_counter() - t0:.0f} s",
          flush=True)
    for n_slices, n_scans in zip(args.slices, args.scans):
        root = Path(tempfile.mkdtemp(prefix=f"startup{n_slices}-", dir=args.keep))
        try:
            t0 = time.perf_counter()
            # Setup: the demo at this length and its crops.
            write_config(root, base, n_slices, n_scans, args.scans_per_job[0], model)
            snakemake(root, str(root / "results" / "scans.tsv"))
            snakemake(root, "--until", "crop_rois")
            setup = time.perf_counter() - t0
            runs = {k: [] for k in args.scans_per_job}
            loads = []
            for _ in range(args.repeats):
                for k in args.scans_per_job:
                    write_config(root, base, n_slices, n_scans, k, model)
                    loads.append(os.getloadavg()[0])
                    runs[k].append(score_once(root, k))
            loads.append(os.getloadavg()[0])
            print(f"{n_scans} scans x {n_slices} slices (setup {setup:.0f} s), {args.repeats} repeats, "
                  f"load {statistics.median(loads):.2f} ({min(loads):.2f}-{max(loads):.2f}):", flush=True)
            for k, rs in runs.items():
                print(f"  scans_per_job {k}: {rs[0]['jobs']} jobs, {rs[0]['crops']} crops; "
                      f"jobs {summary([r['seconds'] for r in rs], ' s')} in all; "
                      f"end to end {summary([r['end_to_end'] for r in rs])} crops/s; "
                      f"inside {summary([r['inside'] for r in rs])} crops/s", flush=True)
        finally:
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(trained, ignore_errors=True)


if __name__ == "__main__":
    main()
