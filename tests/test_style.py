"""The workflow's formatting, checked where a contributor runs the tests.

CI runs ``make lint`` after the suite; a .smk file that snakefmt would rewrite
failed CI once after every test had passed. Checking it here stops that before
a commit, in a second.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _snakefmt() -> str:
    found = Path(sys.executable).with_name("snakefmt")
    if found.exists():
        return str(found)
    found = shutil.which("snakefmt")
    if found is None:
        pytest.fail("snakefmt is not installed: it is pinned in requirements.lock")
    return found


def test_snakefmt_would_change_no_workflow_file():
    result = subprocess.run(
        [_snakefmt(), "--check", "--diff", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
