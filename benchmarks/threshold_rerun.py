"""What a threshold change costs after a full run: the jobs it reruns and their time.

Each side is a checkout whose demo run is complete (``make run`` there). Every
repeat sets ``patchcore_threshold`` to the next of two values on the command line
(``--config``, so no file changes), which reruns PatchCore's decisions and what
follows them; the sides alternate within a repeat, so both see the same machine.
At the end each side runs once more with its own config, leaving its results as
they were.

    python benchmarks/threshold_rerun.py --side now=. --side before=/tmp/old --repeats 3
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path


def run(checkout: Path, cores: int, *args: str) -> tuple[float, int, str]:
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), *args]
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}  # the checkout's own package
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"{checkout}: snakemake {' '.join(args)} failed:\n{out[-3000:]}")
    done = re.findall(r"(\d+) of (\d+) steps", out)
    return elapsed, int(done[-1][1]) if done else 0, out


def jobs_by_rule(out: str) -> dict[str, int]:
    if "Job stats:" not in out:
        return {}
    rows = out.split("Job stats:")[1].split("\ntotal")[0].splitlines()[3:]
    return {r.split()[0]: int(r.split()[1]) for r in rows if len(r.split()) == 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", action="append", required=True, help="NAME=CHECKOUT with a finished run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--thresholds", type=float, nargs=2, default=[5.0, 6.0])
    args = parser.parse_args()
    sides = {name: Path(path).resolve() for name, path in (s.split("=", 1) for s in args.side)}
    for name, checkout in sides.items():
        _, _, out = run(checkout, args.cores, "-n")
        if "Nothing to be done" not in out:
            raise SystemExit(f"{name} ({checkout}): the run is not complete; run `make run` there first")
    times = {name: [] for name in sides}
    jobs, rules, loads = {}, {}, []
    for k in range(args.repeats):
        threshold = args.thresholds[k % 2]
        for name, checkout in sides.items():
            loads.append(os.getloadavg()[0])
            _, _, plan = run(checkout, args.cores, "-n", "--config", f"patchcore_threshold={threshold}")
            rules[name] = jobs_by_rule(plan)
            elapsed, jobs[name], _ = run(checkout, args.cores, "--config", f"patchcore_threshold={threshold}")
            times[name].append(elapsed)
    loads.append(os.getloadavg()[0])
    for checkout in sides.values():
        run(checkout, args.cores)  # back to each side's own config
    print(f"{args.repeats} repeats, {args.cores} cores, load {statistics.median(loads):.2f} "
          f"({min(loads):.2f}-{max(loads):.2f})")
    for name, values in times.items():
        print(f"  {name}: {jobs[name]} jobs, {statistics.median(values):.1f} s "
              f"({min(values):.1f}-{max(values):.1f}); {rules[name]}")


if __name__ == "__main__":
    main()
