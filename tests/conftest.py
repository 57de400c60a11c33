"""Shared fixtures: a tiny generated battery-CT set and helpers to write slices."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from anodect.config import Roi
from anodect.demo.generator import DemoSettings, generate

REPO = Path(__file__).resolve().parents[1]

# No test downloads anything, on a machine with network too: rfdetr's cache is an empty
# folder of the session's and every HTTP(S) request to another host goes to a closed
# local port (the Snakemake runs the tests start inherit both; the browser test's
# local driver is exempt). Tests that need a release put one in the cache.
RF_HOME = tempfile.mkdtemp(prefix="anodect-tests-rf-home.")
os.environ["RF_HOME"] = RF_HOME
atexit.register(shutil.rmtree, RF_HOME, ignore_errors=True)  # one folder per session was left in /tmp
os.environ.pop("ROBOFLOW_HOME", None)
for _var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
    os.environ[_var] = "http://127.0.0.1:9"
for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = "localhost,127.0.0.1"

# A quarter-size demo: 256x256 slices, ROIs at the original positions scaled by 1/4.
TINY_ROIS = [Roi("left", 32, 112, 74, 144), Roi("right", 183, 112, 225, 144)]


def tiny_settings(out_dir: Path, **overrides) -> DemoSettings:
    base = dict(out_dir=str(out_dir), seed=3, image_size=256, n_train_normal=2, n_train_defect=1,
                n_test=2, test_defect_fraction=0.5, first_slice=203, last_slice=212,
                crack_slices=(2, 5), cracks_per_cell=(1, 2), contrast=(0.6, 0.9),
                width=(4.0, 8.0), length=(30.0, 60.0))
    base.update(overrides)
    return DemoSettings(**base)


def tiny_config(root: Path, demo_enabled: bool = True) -> dict:
    demo_dir = root / "results" / "demo"
    return {
        "input_dir": str(demo_dir / "scans" / "test"),
        "output_inference_dir": str(root / "results"),
        "roi_config": [{"name": r.name, "x_min": r.x_min, "x_max": r.x_max, "y_min": r.y_min,
                        "y_max": r.y_max} for r in TINY_ROIS],
        "filter_index_range": {"min": 204, "max": 211},
        "training": {"normal_dir": str(demo_dir / "scans" / "train_normal"),
                     "annotated_dir": str(demo_dir / "scans" / "train_defect"),
                     "annotations_dir": str(demo_dir / "annotations" / "train_defect")},
        # The crack segmenter shrunk to a smoke test: 20 steps of a narrow U-Net.
        "segmenter": {"steps": 20, "channels": [8, 16, 32], "batch_size": 4, "patch": 32},
        # RF-DETR shrunk to a smoke test: one epoch at 64 px on a handful of crops.
        "rfdetr": {"resolution": 64, "epochs": 1, "num_queries": 10, "group_detr": 2,
                   "dataset": {"synthetic_crops": 8, "background_crops": 4}},
        # The POD study shrunk to a smoke test: 12 cracks of 4 slices in the one crack-free scan.
        "pod": {"cracks": 12, "slices": [4]},
        "demo": {**{k: (list(v) if isinstance(v, tuple) else v)
                    for k, v in tiny_settings(demo_dir).__dict__.items()},
                 "enabled": demo_enabled},
    }


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> tuple[Path, dict]:
    """A generated tiny demo (read-only for tests) and its manifest."""
    out = tmp_path_factory.mktemp("tiny_demo")
    manifest = generate(out, tiny_settings(out), TINY_ROIS, crack_range=(204, 211), workers=1)
    return out, manifest


def write_config(path: Path, config: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@contextlib.contextmanager
def small_disk(path: Path, size: str):
    """A tmpfs of ``size`` mounted at ``path`` (made here) for the test's duration: a real full disk.

    Skips the test where mounting is not allowed (not root); CI runs as root.
    """
    path.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip(f"needs root to mount a {size} tmpfs (CI runs as root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def write_slice(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array)
    return path


@pytest.fixture(scope="session")
def tiny_training(tmp_path_factory) -> dict:
    """A tiny demo with three annotated and three normal cells, cropped like the pipeline does.

    Returns a dict with ``root`` (the demo folder), ``annotations`` (its VIA folder),
    ``records``/``crops`` per role (sample-sheet records and saved crop files), and the
    loaded ``sets`` by scan id.
    """
    from anodect.crops import extract_crops
    from anodect.discovery import DiscoverySettings, discover, slices_table

    root = tmp_path_factory.mktemp("tiny_training")
    generate(root, tiny_settings(root, n_train_defect=3, n_train_normal=3, n_test=2, seed=5), TINY_ROIS,
             crack_range=(204, 211), workers=1)
    rois = [{"name": r.name, "x_min": r.x_min, "x_max": r.x_max, "y_min": r.y_min, "y_max": r.y_max}
            for r in TINY_ROIS]
    out = {"root": root, "annotations": root / "annotations" / "train_defect", "records": {}, "crops": {},
           "sets": {}, "rois": rois}
    for role, folder in (("train_defect", "train_defect"), ("train_normal", "train_normal"), ("inspect", "test")):
        scans = discover(root / "scans" / folder, role, DiscoverySettings(), (204, 211))
        out["records"][role], out["crops"][role] = [], []
        for scan in scans:
            crop_set, _ = extract_crops(scan.scan_id, slices_table([scan]), TINY_ROIS, {"mode": "none"},
                                        context=16)
            path = root / "crops" / f"{scan.scan_id}.npz"
            crop_set.save(path)
            out["records"][role].append({"scan_id": scan.scan_id, "battery_id": scan.battery_id,
                                         "battery_path": scan.battery_path, "axis": scan.axis})
            out["crops"][role].append(str(path))
            out["sets"][scan.scan_id] = crop_set
    return out


@pytest.fixture(scope="session")
def imgsim_resnet50() -> str:
    """Real ResNet-50 weights offline: imgsim's self-supervised model (MIT), torchvision
    keys under ``module.pre.`` with a 2048->768 head, as a user's feature-extractor file
    often is. ``make install`` installs the wheel (no dependencies)."""
    try:
        import imgsim
    except ImportError:  # a failure, not a skip: the ResNet tests must run wherever the suite runs
        pytest.fail("imgsim is not installed: make install (or pip install --no-deps imgsim==0.1.2)")
    return str(Path(imgsim.__file__).parent / "model.pth")
