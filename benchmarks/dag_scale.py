"""What thousands of scans cost before any pixel is read: parses, planning and discovery,
on a real folder tree.

The tree is what a user brings: ``<battery>/[Z軸]/<battery>_負極_NNNN.tif``, N scans of
300 slice files each, every file a hard link to one of 32 real CT slices
(``data/battery_xct/cell_vol``, copied to 32 inodes so no inode passes the 65,000-link
limit). Models are given ready (a PatchCore folder and an RF-DETR checkpoint file, never
opened by planning), so the plan holds the per-scan chain (crops, PatchCore scores,
RF-DETR predictions, decisions and drawings per model) and the report.

Timed separately, each ``--repeats`` times (median and range), with the load average:

1. ``main parse``: ``snakemake -n <scans.tsv>`` after discovery: what every invocation pays
   before planning (config check, the discovery job's rerun check over the folders).
2. ``job parse``: the command a cluster node runs for one crop job (``--mode remote
   --target-jobs crop_rois:batch=... --allowed-rules crop_rois``), as a dry run.
   Beside it, Snakemake's own floor for that command: the same remote-mode dry run of a
   workflow of one trivial rule (``job parse floor``), timed in the same repeats.
3. ``plan``: ``snakemake -n`` of the whole run after discovery.
4. ``discovery``: the discovery job itself (``--forcerun discover_scans``).

Each ``--scans-per-job`` value (the config key; default 10 and 1, one job per scan) is a
side of its own. ``--before DIR`` times another checkout of the pipeline (``git worktree
add DIR <rev>``; one from before ``scans_per_job``, with per-scan jobs) on the same tree.
The sides alternate within every repeat, so all come from one run.

    python benchmarks/dag_scale.py --scans 1000 5000 [--slices 300] [--repeats 3] [--scans-per-job 10 1]
                                   [--keep DIR] [--before DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "data" / "battery_xct" / "cell_vol"
ROI = {"name": "left", "x_min": 100, "x_max": 267, "y_min": 300, "y_max": 428}
INODES = 32


def make_tree(root: Path, n_scans: int, n_slices: int) -> Path:
    """The input tree of hard links; returns the input folder."""
    sources = sorted(REAL.glob("*.tif"))
    if not sources:
        raise SystemExit(f"no real slices in {REAL}")
    pool = root / "pool"
    pool.mkdir(parents=True)
    inodes = []
    for k in range(INODES):
        target = pool / f"slice_{k:02d}.tif"
        shutil.copyfile(sources[k % len(sources)], target)
        inodes.append(str(target))
    data = root / "scans"
    for n in range(n_scans):
        folder = data / f"B{n:05d}" / "[Z軸]"
        folder.mkdir(parents=True)
        for i in range(n_slices):
            os.link(inodes[(n * n_slices + i) % INODES], folder / f"B{n:05d}_負極_{i:04d}.tif")
    return data


def write_config(root: Path, data: Path, scans_per_job: int | None) -> None:
    config = {
        "input_dir": str(data), "output_inference_dir": str(root / "results"),
        "roi_config": [ROI], "filter_index_range": None, "crop_context": 0, "patchcore_threshold": 1.0,
        "patchcore": {"model": str(root / "models" / "patchcore")},
        "rfdetr": {"model": str(root / "models" / "rf_detr" / "checkpoint.pth")},
        "evaluation": {"truth": "none"}, "demo": {"enabled": False},
    }
    if scans_per_job is not None:
        config["scans_per_job"] = scans_per_job
    (root / "config").mkdir(exist_ok=True)
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))


def make_models(root: Path) -> None:
    model = root / "models" / "patchcore"
    model.mkdir(parents=True)
    (model / "model.json").write_text(json.dumps({"format": "anodect-patchcore/1"}))
    np.save(model / "memory_bank.npy", np.zeros((1, 1), np.float32))
    checkpoint = root / "models" / "rf_detr" / "checkpoint.pth"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"")


def snakemake(root: Path, *args: str, repo: Path = REPO) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-d", str(root), *args]
    # The checkout's own package, ahead of the installed one.
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed, proc.stdout + proc.stderr


def planned_jobs(out: str) -> int:
    block = out.split("Job stats:")[1].split("\ntotal")[1]
    return int(block.split()[0])


def first_job(root: Path, scans_per_job: int | None) -> str:
    """The wildcard of the first scan's crop job: its batch, or its scan before batches."""
    sys.path.insert(0, str(REPO / "src"))
    from anodect.batches import assign
    from anodect.sheets import read_sheet

    sheet = read_sheet(root / "results" / "scans.tsv")
    if scans_per_job is None:
        return f"scan={sheet[0]['scan_id']}"
    return f"batch={assign(sheet, scans_per_job)[sheet[0]['scan_id']]}"


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def measure_once(root: Path, repo: Path, scans_per_job: int | None, times: dict[str, list[float]]) -> int:
    """One round of the four timings with the pipeline in ``repo``; returns the jobs planned."""
    results = root / "results"
    write_config(root, root / "scans", scans_per_job)
    t, _ = snakemake(root, "--cores", "1", "--forcerun", "discover_scans", "--", str(results / "scans.tsv"), repo=repo)
    times["discovery"].append(t)
    t, out = snakemake(root, "-n", "--cores", "1", str(results / "scans.tsv"), repo=repo)
    assert "Nothing to be done" in out, out[-2000:]
    times["main parse"].append(t)
    job = first_job(root, scans_per_job)
    t, _ = snakemake(root, "-n", "--mode", "remote", "--cores", "1", "--target-jobs", f"crop_rois:{job}",
                     "--allowed-rules", "crop_rois", repo=repo)
    times["job parse"].append(t)
    t, out = snakemake(root, "-n", "--cores", "8", "--quiet", "rules", repo=repo)
    times["plan"].append(t)
    return planned_jobs(out)


def parse_floor(root: Path) -> float:
    """Seconds of a remote-mode dry run of a one-rule workflow: Snakemake's start-up, nothing of ours."""
    floor = root / "floor"
    floor.mkdir(exist_ok=True)
    (floor / "Snakefile").write_text('rule a:\n    output:\n        "a.txt"\n    shell:\n        "touch {output}"\n')
    cmd = [sys.executable, "-m", "snakemake", "-s", str(floor / "Snakefile"), "-d", str(floor), "-n", "--mode",
           "remote", "--cores", "1", "--target-jobs", "a:", "--allowed-rules", "a"]
    t0 = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True)
    return time.perf_counter() - t0


def measure(root: Path, repeats: int, sides: dict[str, tuple[Path, int | None]]) -> dict:
    """Each side's timings, the sides alternating within every repeat."""
    times = {side: {"discovery": [], "main parse": [], "job parse": [], "plan": []} for side in sides}
    times["Snakemake alone"] = {"job parse floor": []}
    loads, jobs = [], {}
    for _ in range(repeats):
        times["Snakemake alone"]["job parse floor"].append(parse_floor(root))
        for side, (repo, scans_per_job) in sides.items():
            loads.append(os.getloadavg()[0])
            jobs[side] = measure_once(root, repo, scans_per_job, times[side])
    loads.append(os.getloadavg()[0])
    return {"times": times, "jobs": jobs, "load": loads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--slices", type=int, default=300, help="slice files per scan")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="keep the work folders under this folder")
    parser.add_argument("--scans-per-job", type=int, nargs="+", default=[10, 1])
    parser.add_argument("--before", type=Path, help="another checkout of the pipeline to time beside this one")
    args = parser.parse_args()
    sides = {f"this checkout, scans_per_job {k}": (REPO, k) for k in args.scans_per_job}
    if args.before:
        sides[f"before ({args.before})"] = (args.before, None)
    for n in args.scans:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix=f"dag{n}-", dir=args.keep))
        try:
            t0 = time.perf_counter()
            data = make_tree(root, n, args.slices)
            make_models(root)
            setup = time.perf_counter() - t0
            m = measure(root, args.repeats, sides)
            print(f"{n} scans x {args.slices} slice files ({n * args.slices:,} files; tree built in {setup:.0f} s), "
                  f"{args.repeats} repeats, load {statistics.median(m['load']):.2f} "
                  f"({min(m['load']):.2f}-{max(m['load']):.2f}):", flush=True)
            for side, times in m["times"].items():
                print(f"  {side}: {m['jobs'][side]} jobs planned" if side in m["jobs"] else f"  {side}:", flush=True)
                for name, values in times.items():
                    print(f"    {name:>10}: {summary(values)}", flush=True)
        finally:
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
