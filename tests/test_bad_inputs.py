"""Bad input: each case gives a message naming the file and what is wrong, and the run goes on where it can."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import tifffile

from anodect.config import ConfigError, Roi
from anodect.crops import NoUsableSlices, SkippedSlices, crop_scan, extract_crops
from anodect.decisions import NO_DATA, battery_table
from anodect.discovery import DiscoverySettings, discover, notes_table
from anodect.groundtruth import AnnotationError
from anodect.io import write_bytes
from anodect.annotations import AnnotatedScan, place_annotations, read_annotation_file

from conftest import small_disk, tiny_config, write_slice

ROIS = [Roi("left", 4, 4, 12, 10), Roi("right", 20, 4, 28, 10)]
WINDOW = {"mode": "auto", "low_percentile": 0.5, "high_percentile": 99.5}
SETTINGS = DiscoverySettings()


def ct(seed: int = 0, dtype=np.uint16, shape=(16, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(1000, 3000, shape).astype(dtype)


def folder_scan(tmp_path, files: dict[int, object], battery="[B1] cell") -> pd.DataFrame:
    """Slices of one battery in the original layout; bytes are written as they are."""
    rows = []
    for index, content in files.items():
        path = tmp_path / battery / "[Z軸]" / f"{battery}_負極_{index:04d}.tif"
        if isinstance(content, bytes):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        else:
            write_slice(path, content)
        rows.append({"slice_index": index, "path": str(path), "page": -1})
    return pd.DataFrame(rows)


def reasons(qc: pd.DataFrame) -> dict[int, str]:
    return dict(zip(qc["slice_index"], qc["reason"]))


def test_each_bad_slice_is_skipped_with_its_file_and_reason(tmp_path):
    good = ct()
    tifffile.imwrite(tmp_path / "whole.tif", ct(1))
    truncated = (tmp_path / "whole.tif").read_bytes()[:300]
    nan_inside, nan_outside = ct(2).astype(np.float32), ct(3).astype(np.float32)
    nan_inside[5, 6] = np.nan  # inside ROI left
    nan_outside[0, 0] = np.nan
    slices = folder_scan(tmp_path, {
        201: good, 202: truncated, 203: b"", 204: ct(4, shape=(20, 32)), 205: b"this is not an image\n",
        206: np.full((16, 32), 1234, np.uint16), 207: nan_inside, 208: nan_outside, 209: ct(5)})
    crop_set, qc = extract_crops("s1", slices, ROIS, WINDOW)
    assert list(crop_set.slice_indices) == [201, 208, 209]
    why = reasons(qc)
    for index in (202, 203, 205, 206, 207):
        assert f"_負極_{index:04d}.tif" in why[index], why[index]
    assert "not a readable TIFF" in why[202] and "not a readable TIFF" in why[205]
    assert "empty file" in why[203]
    assert "differs from the scan's 32x16" in why[204]
    assert "constant image (every pixel 1234)" in why[206]
    assert "NaN or infinite pixels inside ROI left" in why[207]
    # NaN away from the ROIs: kept, the QC row says what was done.
    assert "1 NaN/infinite pixels outside the ROIs" in why[208]
    assert dict(zip(qc["slice_index"], qc["status"]))[208] == "ok"
    assert np.isfinite(crop_set.crops.astype(float)).all()


def test_an_roi_partly_outside_a_smaller_scan_skips_its_slices(tmp_path):
    slices = folder_scan(tmp_path, {1: ct(shape=(16, 24)), 2: ct(1, shape=(16, 24))})
    with pytest.raises(NoUsableSlices, match="ROI right outside the 24x16 image") as err:
        extract_crops("s1", slices, ROIS, WINDOW)
    assert list(err.value.qc["status"]) == ["skipped", "skipped"]


def test_a_scan_with_nothing_usable_fails_alone_unless_strict(tmp_path):
    dead = folder_scan(tmp_path, {1: b"", 2: b"garbage"})
    crop_set, qc = crop_scan("dead", dead, ROIS, WINDOW, None, context=2, strict=False)
    assert crop_set.crops.shape == (0, 2, 6 + 4, 8 + 4) and len(qc) == 2 and set(qc["status"]) == {"skipped"}
    crop_set.save(tmp_path / "dead.npz")  # an empty crops file is still a valid file for the next stages
    with pytest.raises(NoUsableSlices, match="dead: no usable slice"):
        crop_scan("dead", dead, ROIS, WINDOW, None, context=2, strict=True)
    one_bad = folder_scan(tmp_path / "b", {1: ct(), 2: b""})
    crop_set, _ = crop_scan("b", one_bad, ROIS, WINDOW, None, 0, strict=False)
    assert crop_set.n_slices == 1
    with pytest.raises(SkippedSlices, match="b: 1 slice.*strict.*empty file"):
        crop_scan("b", one_bad, ROIS, WINDOW, None, 0, strict=True)
    # Its battery is NO DATA, never OK.
    scans = [{"scan_id": "dead", "battery_id": "D", "axis": ""}, {"scan_id": "b", "battery_id": "B", "axis": ""}]
    slices = pd.DataFrame({"model": ["patchcore"], "scan_id": ["b"]})
    table = battery_table(scans, pd.DataFrame(columns=["model", "scan_id"]), ["patchcore"], slices)
    assert list(table["patchcore_verdict"]) == [NO_DATA, "OK"]


def test_discovery_says_what_it_left_out(tmp_path):
    for name in ("c_負極_0205.tif", "c_負極_0205.tiff", "c_負極_0206.tif", "c_負極_0999.tif", "c_負極_notes.tif"):
        write_slice(tmp_path / "B1" / "[Z軸]" / name, ct())
    write_slice(tmp_path / "B2" / "[Z軸]" / "d_負極_0100.tif", ct())  # every slice out of range
    skipped = []
    scans = discover(tmp_path, "inspect", SETTINGS, (200, 300), skipped=skipped)
    assert [s.battery_id for s in scans] == ["B1"] and [sl.index for sl in scans[0].slices] == [205, 206]
    notes = notes_table(scans, skipped)
    text = "\n".join(notes["note"])
    assert "slice 205: duplicate index in 'c_負極_0205.tiff'" in text
    assert "1 file(s) without a slice number" in text and "c_負極_notes.tif" in text
    assert "no scan: 1 slice(s) 100..100, none in filter_index_range 200..300" in text
    assert any("B2" in s for s in notes["source"])


def annotated_scan(training) -> AnnotatedScan:
    rec = training["records"]["train_defect"][0]
    return AnnotatedScan({**rec, "width": 256, "height": 256}, training["sets"][rec["scan_id"]])


def test_bad_annotation_files_are_listed_and_skipped_unless_strict(tiny_training, tmp_path):
    folder = tmp_path / "ann"
    shutil.copytree(tiny_training["annotations"], folder)
    scan = annotated_scan(tiny_training)
    battery = scan.record["battery_id"]
    (folder / "broken.json").write_text('{"a.tif": {"regions": ', encoding="utf-8")
    name = sorted(tiny_training["sets"][scan.record["scan_id"]].paths)[0].rsplit("/", 1)[-1]
    via = {"x": {"filename": name, "regions": [{"shape_attributes": {
        "name": "polygon", "all_points_x": [900, 950, 960], "all_points_y": [900, 910, 950]}}]},
        "y": {"filename": "nowhere_負極_0207.tif", "regions": [{"shape_attributes": {
            "name": "polygon", "all_points_x": [1, 5, 6], "all_points_y": [1, 1, 6]}}]}}
    (folder / battery / "extra.json").write_text(json.dumps(via), encoding="utf-8")
    files = sorted(folder.rglob("*.json"))
    placed, report = place_annotations(files, folder, [scan])
    assert placed and any("broken.json" in r and "not a readable JSON" in r for r in report.rejected)
    assert any("extra.json" in m and "outside the 256x256 image" in m for m in report.outside_image)
    assert report.as_dict()["rejected_files"] == report.rejected
    with pytest.raises(AnnotationError, match="broken.json"):
        place_annotations(files, folder, [scan], strict=True)


@pytest.mark.parametrize("text, message", [
    ("[1, 2", "not a readable JSON"),
    ('{"images": [{"id": 1}], "annotations": [{"image_id": 1}]}', "COCO file with a malformed"),
    ('{"images": [], "annotations": [5]}', "COCO file with a malformed"),
    ('{"a.tif": {"regions": [{"shape_attributes": {"name": "polygon", "all_points_x": [1, 2], '
     '"all_points_y": [1, 2]}}]}}', "3\\+ points"),
    ('{"a.tif": {"regions": [{"shape_attributes": {"name": "polygon", "all_points_x": [1, 2, "x"], '
     '"all_points_y": [1, 2, 3]}}]}}', "non-numeric"),
    ('{"a.tif": {"regions": [{"shape_attributes": {"name": "polygon", "all_points_x": [1, 2, NaN], '
     '"all_points_y": [1, 2, 3]}}]}}', "NaN or infinite"),
    ('{"a.tif": 3}', "is not an object"),
])
def test_malformed_annotation_files_name_the_file_and_the_problem(tmp_path, text, message):
    path = tmp_path / "ann.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(AnnotationError, match=f"ann.json.*{message}"):
        read_annotation_file(path)


def test_model_metadata_that_disagrees_with_the_config_is_named(tmp_path):
    from anodect.preflight import check_config

    model = tmp_path / "frozen"
    model.mkdir()
    (model / "model.json").write_text(json.dumps({"backbone": "efficientnet_lite0", "layers": ["blocks.2"],
                                                  "input_size": None, "context": 16, "crop_size": [160, 199]}))
    np.save(model / "memory_bank.npy", np.zeros((1, 1), np.float32))
    config = tiny_config(tmp_path)
    config["patchcore"] = {"model": str(model), "backbone": "efficientnet_lite0", "layers": ["blocks.1"]}
    with pytest.raises(ConfigError) as err:
        check_config(config)
    text = str(err.value)
    assert "patchcore.layers: the PatchCore model in" in text and "['blocks.2']" in text and "['blocks.1']" in text
    assert "crop size" in text  # the tiny ROIs are not the 160x199 crops this model was made with


def test_an_unwritable_results_folder_is_refused_before_any_job(tmp_path):
    from anodect.preflight import check_config

    config = tiny_config(tmp_path)
    config["output_inference_dir"] = "/proc/anodect-results"
    with pytest.raises(ConfigError, match="output_inference_dir: cannot write in /proc"):
        check_config(config)


def test_a_full_disk_gives_a_clear_error_and_leaves_no_partial_file(tmp_path):
    with small_disk(tmp_path / "small", "64k") as small:
        with pytest.raises(OSError, match="cannot write .*big.bin: no space left on the device"):
            write_bytes(small / "big.bin", b"\0" * 200_000)
        assert list(small.iterdir()) == []  # neither the file nor its temporary
