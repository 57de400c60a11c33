"""How long Snakemake takes to plan a run of thousands of scans (`snakemake -n`), no pixels needed.

A work folder gets a config with ready (frozen) models, and a sample sheet and
slice list of N fake scans of 300 slices each (a real scan's order of magnitude;
the slice files are not created: planning never opens them, the scan's
fingerprint column stands for them): the dry run plans every job (crops,
PatchCore scoring, RF-DETR prediction, decisions and drawings per scan, then the
summary and the report) without reading an image.

    python benchmarks/dag_scale.py --scans 1000 5000 [--slices 300] [--no-rfdetr] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import yaml

REPO = Path(__file__).resolve().parents[1]
ROI = {"name": "left", "x_min": 8, "x_max": 40, "y_min": 8, "y_max": 40}


def make_workdir(root: Path, n_scans: int, n_slices: int, rfdetr: bool) -> None:
    real = root / "real" / "[R01] cell" / "[Z軸]"
    real.mkdir(parents=True)
    for i in range(2):
        tifffile.imwrite(real / f"[R01] cell_負極_{i:04d}.tif", np.random.default_rng(i).integers(0, 255, (64, 64),
                                                                                                  dtype=np.uint8))
    model = root / "models" / "patchcore"
    model.mkdir(parents=True)
    (model / "model.json").write_text(json.dumps({"format": "anodect-patchcore/1"}))
    np.save(model / "memory_bank.npy", np.zeros((1, 1), np.float32))
    checkpoint = root / "models" / "rf_detr" / "checkpoint.pth"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"")
    config = {
        "input_dir": str(root / "real"), "output_inference_dir": str(root / "results"),
        "roi_config": [ROI], "filter_index_range": None, "crop_context": 0,
        "patchcore": {"model": str(model)},
        "rfdetr": {"model": str(checkpoint) if rfdetr else "none"},
        "evaluation": {"truth": "none"}, "demo": {"enabled": False},
    }
    (root / "config").mkdir()
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    results = root / "results"
    results.mkdir()
    scans, slices = [], []
    data = root / "fake"
    for n in range(n_scans):
        scan_id = f"b{n:05d}_z-{n:08x}"
        folder = data / f"B{n:05d}" / "[Z軸]"
        for i in range(n_slices):
            path = folder / f"B{n:05d}_負極_{i:04d}.tif"
            slices.append({"scan_id": scan_id, "slice_index": i, "path": str(path), "page": -1})
        scans.append({"scan_id": scan_id, "role": "inspect", "battery_id": f"B{n:05d}",
                      "battery_path": f"B{n:05d}", "axis": "[Z軸]", "layout": "folders", "source": str(folder),
                      "n_slices": n_slices, "first_slice": 0, "last_slice": n_slices - 1,
                      "slice_indices": f"0-{n_slices - 1}", "height": 64, "width": 64,
                      "fingerprint": f"{n:016x}"})
    pd.DataFrame(scans).to_csv(results / "scans.tsv", sep="\t", index=False)
    pd.DataFrame(slices).to_csv(results / "slices.tsv", sep="\t", index=False)
    (results / "benchmarks").mkdir()
    (results / "benchmarks" / "discover_scans.tsv").write_text("s\n0\n")
    pd.DataFrame(columns=["role", "source", "scan_id", "note"]).to_csv(results / "discovery_notes.tsv", sep="\t",
                                                                       index=False)


def dry_run(root: Path) -> tuple[float, dict[str, int]]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(root), "-n", "--quiet",
           "rules", "--rerun-triggers", "mtime", "--cores", "8"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"dry run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    jobs = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
            jobs[parts[0]] = int(parts[1])
    return elapsed, jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--slices", type=int, default=300, help="slices per fake scan")
    parser.add_argument("--no-rfdetr", action="store_true", help="PatchCore alone")
    parser.add_argument("--keep", type=Path, help="keep the work folders under this folder")
    args = parser.parse_args()
    for n in args.scans:
        root = Path(tempfile.mkdtemp(prefix=f"dag{n}-", dir=args.keep))
        t0 = time.perf_counter()
        make_workdir(root, n, args.slices, not args.no_rfdetr)
        setup = time.perf_counter() - t0
        elapsed, jobs = dry_run(root)
        total = sum(v for k, v in jobs.items())
        print(f"{n:>6} scans: snakemake -n planned {total} jobs in {elapsed:.1f} s "
              f"({1000 * elapsed / max(total, 1):.2f} ms/job; setup {setup:.1f} s) {jobs}", flush=True)
        if not args.keep:
            shutil.rmtree(root)


if __name__ == "__main__":
    main()
