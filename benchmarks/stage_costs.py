"""What each per-scan stage's jobs of a finished run cost, from their benchmark files and logs.

Per rule: the jobs (one per batch of scans), their wall time (median and range over
the jobs, and the sum). For the model stages also the crops: end to end (crops over
the summed job times, start-up and model load included) and inside the jobs (the rate
each scan's log line reports, median over scans), which is what per-job start-up costs.

    python benchmarks/stage_costs.py results
"""

from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path

RATE = re.compile(r"(\d+) crops in ([\d.]+) s \(([\d.]+) crops/s\)")


def job_seconds(folder: Path) -> dict[str, float]:
    """Seconds of each job under a rule's benchmark folder, by job (relative path, no suffix)."""
    out = {}
    for path in sorted(folder.rglob("*.tsv")):
        header, row = path.read_text().splitlines()[:2]
        out[str(path.relative_to(folder).with_suffix(""))] = float(row.split("\t")[header.split("\t").index("s")])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="output_inference_dir of a finished run")
    args = parser.parse_args()
    for rule in ("crop_rois", "score_patchcore", "predict_rfdetr", "decide"):
        seconds = job_seconds(args.results / "benchmarks" / rule)
        if not seconds:
            continue
        v = list(seconds.values())
        line = (f"{rule}: {len(v)} jobs, {statistics.median(v):.2f} s per job ({min(v):.2f}-{max(v):.2f}), "
                f"{sum(v):.1f} s in all")
        rates, crops = [], 0
        for log in sorted((args.results / "logs" / rule).rglob("*.log")):
            # One line per scan of the job's batch.
            for n, _, rate in RATE.findall(log.read_text(encoding="utf-8", errors="replace")):
                crops += int(n)
                rates.append(float(rate))
        if rates:
            line += (f"; {len(rates)} scans, {crops} crops: {crops / sum(v):.1f} crops/s end to end, "
                     f"{statistics.median(rates):.1f} crops/s inside the jobs (median over scans)")
        print(line)


if __name__ == "__main__":
    main()
