"""The demo pipeline through the SLURM profile on a real one-node SLURM (cluster/local-slurm.sh).

Run by CI after the README's test command, as root, with the cluster started:
``cluster/local-slurm.sh start && ANODECT_SLURM=1 .venv/bin/pytest tests/test_slurm.py``.
"""

import json
import math
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from anodect.batches import assign
from anodect.sheets import read_sheet

from conftest import REPO, tiny_config, write_config

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

COMPARED = ("tables/batteries.csv", "tables/cracks.csv", "tables/detections.csv", "report/metrics.csv")


def run(workdir, *args, timeout=1800):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-8000:]}")
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def cluster():
    # Opt-in: the README's test command must never submit jobs to a cluster it happens to find.
    if not os.environ.get("ANODECT_SLURM"):
        pytest.skip("set ANODECT_SLURM=1 with a SLURM up (cluster/local-slurm.sh start) to run this test")
    if not shutil.which("sbatch") or subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        pytest.fail("ANODECT_SLURM is set but no SLURM answers (cluster/local-slurm.sh start)")


def test_the_demo_through_the_slurm_profile_matches_the_local_run(cluster, tmp_path):
    local, slurm = tmp_path / "local", tmp_path / "slurm"
    for workdir in (local, slurm):
        write_config(workdir / "config" / "config.yaml", tiny_config(workdir))
    run(local, "--cores", "2")
    out = run(slurm, "--profile", str(REPO / "profiles" / "slurm"), "--slurm-keep-successful-logs")
    assert "Nothing to be done" in run(slurm, "-n", "--cores", "1")
    # Jobs really went through SLURM, grouped as the profile says. The plugin keeps one log per
    # submission under .snakemake/slurm_logs/{group_<group>,rule_<rule>}/...; count them.
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    grouped = set(profile["groups"])
    submitted = {}
    for log in (slurm / ".snakemake" / "slurm_logs").rglob("*.log"):
        kind = log.relative_to(slurm / ".snakemake" / "slurm_logs").parts[0]
        # A group job's folder is group_<group>_<its rules>: count it under its group.
        kind = next((f"group_{g}" for g in set(profile["groups"].values()) if kind.startswith(f"group_{g}_")), kind)
        submitted[kind] = submitted.get(kind, 0) + 1
    assert sum(submitted.values()) == out.count("has been submitted with SLURM jobid"), (submitted, out[-3000:])
    # No per-scan rule was submitted on its own: each ran inside a group job.
    assert not {f"rule_{r}" for r in grouped} & set(submitted), submitted
    # The batches (scans_per_job at its default, 10): one per role here, so 3 crop jobs (2 inspected,
    # 2 normal, 1 annotated scan) in 2 submissions of 2 components; the inspected batch's scoring,
    # segmentation, prediction and decisions (6 jobs) in one to three submissions.
    batch_of = assign(read_sheet(slurm / "results" / "scans.tsv"), 10)
    crop_batches = len(set(batch_of.values()))
    inspect_batches = len({b for b in batch_of.values() if b.startswith("inspect")})
    assert (crop_batches, inspect_batches) == (3, 1)
    components = profile["group-components"]
    assert submitted.get("group_crops") == math.ceil(crop_batches / components["crops"]), submitted
    # A batch's scoring and decisions of one model become ready when that model's training ends:
    # with the models trained at different times, the group goes out once per model at most.
    n_models = len(json.loads((slurm / "results" / "report" / "metrics.json").read_text())["models"])
    assert math.ceil(inspect_batches / components["batch"]) <= submitted.get("group_batch", 0) \
        <= n_models * inspect_batches, submitted
    for rule in ("train_patchcore", "train_segmenter", "train_rfdetr"):
        assert submitted.get(f"rule_{rule}") == 1, submitted
    # Small-file aggregations are local rules: never queued.
    assert not {"rule_qc_table", "rule_summarise", "rule_report"} & set(submitted), submitted
    for rel in COMPARED:
        a = pd.read_csv(local / "results" / rel)
        b = pd.read_csv(slurm / "results" / rel)
        pd.testing.assert_frame_equal(a, b, obj=rel)
