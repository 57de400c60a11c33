"""One output folder, one run: the lock in output_inference_dir across working directories."""

import json
import os
import socket
import subprocess

import pytest

from anodect.runlock import LOCK, RunLockError, acquire, release


def held_by(results, pid, workdir):
    results.mkdir(parents=True, exist_ok=True)
    (results / LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "workdir": str(workdir),
                                            "started": "earlier"}), encoding="utf-8")


def test_a_live_run_from_another_working_directory_is_refused_a_gone_one_taken_over(tmp_path):
    results = tmp_path / "results"
    other = subprocess.Popen(["sleep", "60"])
    try:
        held_by(results, other.pid, tmp_path / "checkout-b")
        with pytest.raises(RunLockError, match=rf"process {other.pid} on .*checkout-b.*another output_inference_dir"):
            acquire(results, tmp_path / "checkout-a")
        acquire(results, tmp_path / "checkout-b")  # the same checkout: Snakemake's own lock rules there
    finally:
        other.kill()
        other.wait()
    held_by(results, other.pid, tmp_path / "checkout-b")  # that process is gone: a killed run's lock
    lock = acquire(results, tmp_path / "checkout-a")
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    release(results)
    assert not lock.exists()
    held_by(results, other.pid, tmp_path / "checkout-b")
    release(results)  # not ours: left alone
    assert (results / LOCK).exists()
