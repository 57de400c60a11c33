"""Atomic outputs: what a killed job leaves is removed by the next job writing the same output."""

import os
import subprocess
import sys
import time

from anodect.io import atomic_dir, write_bytes

from conftest import REPO

KILLED_WRITER = """
import os, sys
sys.path.insert(0, {src!r})
from anodect.io import atomic_dir, atomic_path
with atomic_path({file!r}) as tmp:
    tmp.write_bytes(b"half")
    with atomic_dir({folder!r}) as d:
        (d / "part.npz").write_bytes(b"half of a batch")
        os.kill(os.getpid(), 9)
"""


def test_a_killed_jobs_temporaries_are_removed_by_the_next_write_of_that_output(tmp_path):
    folder, file = tmp_path / "scores" / "inspect-0000", tmp_path / "tables" / "slices.csv"
    code = KILLED_WRITER.format(src=str(REPO / "src"), file=str(file), folder=str(folder))
    assert subprocess.run([sys.executable, "-c", code]).returncode == -9
    left = sorted(p.name for p in [*folder.parent.iterdir(), *file.parent.iterdir()])
    assert len(left) == 2 and all(n.startswith((".inspect-0000.", ".slices.")) for n in left), left
    # Another output's temporary, and one of a process still running, are not touched.
    other = folder.parent / f".inspect-0001.{left[0].split('.')[2]}.abcdefgh"
    other.mkdir()
    running = folder.parent / f".inspect-0000.{left[0].split('.')[2].rsplit('-', 1)[0]}-{os.getpid()}.abcdefgh"
    running.mkdir()
    with atomic_dir(folder) as d:
        (d / "part.npz").write_bytes(b"whole")
    write_bytes(file, b"whole")
    assert (folder / "part.npz").read_bytes() == b"whole" and file.read_bytes() == b"whole"
    assert sorted(p.name for p in folder.parent.iterdir()) == sorted([folder.name, other.name, running.name])
    assert sorted(p.name for p in file.parent.iterdir()) == ["slices.csv"]


def test_another_hosts_temporary_is_kept_until_it_is_a_day_old(tmp_path):
    target = tmp_path / "out"
    fresh, stale = tmp_path / ".out.elsewhere-12.abcdefgh", tmp_path / ".out.elsewhere-13.abcdefgh"
    fresh.mkdir()
    stale.mkdir()
    day_ago = time.time() - 25 * 3600
    os.utime(stale, (day_ago, day_ago))
    with atomic_dir(target) as tmp:
        (tmp / "x").write_bytes(b"x")
    assert fresh.exists() and not stale.exists()
