"""Snakemake's own planning cost per job, in a workflow with nothing of ours in it.

A generated Snakefile chains K trivial rules per scan (each reads the previous
rule's file of the scan) and one aggregation over every scan, the shape of the
pipeline's per-scan chain; ``snakemake -n`` plans it with every output missing.
The per-job figure is the floor that ``benchmarks/dag_scale.py``'s planning can
approach by trimming our own code; only fewer jobs go below it.

    python benchmarks/snakemake_floor.py --scans 1000 5000 --chain 7 2 [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SNAKEFILE = """
SCANS = [f"s{{i:05d}}" for i in range({n})]

rule all:
    input: expand("out/step{last}/{{scan}}.txt", scan=SCANS)
{steps}
"""

STEP = """
rule step{k}:
    input: "{source}/{{scan}}.txt"
    output: "out/step{k}/{{scan}}.txt"
    log: "logs/step{k}/{{scan}}.log"
    threads: 1
    resources: mem_mb=500, runtime=10
    params: p=lambda wildcards: wildcards.scan
    shell: "cp {{input}} {{output}}"
"""


def plan(n: int, chain: int, repeats: int) -> tuple[list[float], int]:
    root = Path(tempfile.mkdtemp(prefix=f"floor{n}x{chain}-"))
    try:
        steps = "".join(STEP.format(k=k, source=f"out/step{k - 1}" if k else "in") for k in range(chain))
        (root / "Snakefile").write_text(SNAKEFILE.format(n=n, last=chain - 1, steps=steps))
        (root / "in").mkdir()
        for i in range(n):
            (root / "in" / f"s{i:05d}.txt").write_text("x")
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "8", "--quiet", "rules"],
                                  cwd=root, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-3000:])
        return times, n * chain + 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--chain", type=int, nargs="+", default=[7, 2], help="rules per scan")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for n in args.scans:
        for chain in args.chain:
            load = os.getloadavg()[0]
            times, jobs = plan(n, chain, args.repeats)
            med = statistics.median(times)
            print(f"{n} scans x {chain} rules: {jobs} jobs planned in {med:.1f} s ({min(times):.1f}-{max(times):.1f}), "
                  f"{1000 * med / jobs:.2f} ms/job, load {load:.2f}", flush=True)


if __name__ == "__main__":
    main()
