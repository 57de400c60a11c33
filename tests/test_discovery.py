import os
import re

import numpy as np
import pytest
import tifffile

from anodect.discovery import (DiscoverySettings, compact_indices, discover, make_scan_id, scans_table,
                               slices_table, slugify)

from conftest import write_slice

SETTINGS = DiscoverySettings()
IMG = np.zeros((8, 10), np.uint16)


def _scan(root, battery, indices, axis="[Z軸]", stem="負極", ext=".tif"):
    for i in indices:
        write_slice(root / battery / axis / f"{stem}_{i:04d}{ext}", IMG)


def test_original_naming_with_brackets_spaces_and_japanese(tmp_path):
    _scan(tmp_path, "[2024-05] セル A (再検査)", range(200, 235))
    scans = discover(tmp_path, "inspect", SETTINGS, (205, 230))
    assert len(scans) == 1
    scan = scans[0]
    assert scan.battery_id == "[2024-05] セル A (再検査)"
    assert scan.axis == "[Z軸]"
    assert [s.index for s in scan.slices] == list(range(205, 231))
    assert re.fullmatch(r"[a-z0-9_]+-[0-9a-f]{8}", scan.scan_id)
    assert (scan.height, scan.width) == (8, 10)


def test_same_battery_name_under_two_parents_does_not_collide(tmp_path):
    _scan(tmp_path / "line1", "cell 01", [210])
    _scan(tmp_path / "line2", "cell 01", [210])
    scans = discover(tmp_path, "inspect", SETTINGS, None)
    assert [s.battery_id for s in scans] == ["cell 01", "cell 01"]
    assert len({s.scan_id for s in scans}) == 2
    assert [s.battery_path for s in scans] == ["line1/cell 01", "line2/cell 01"]


def test_ids_are_stable_and_depend_on_role(tmp_path):
    _scan(tmp_path, "B1", [210])
    first = discover(tmp_path, "inspect", SETTINGS, None)[0].scan_id
    assert discover(tmp_path, "inspect", SETTINGS, None)[0].scan_id == first
    assert discover(tmp_path, "train_normal", SETTINGS, None)[0].scan_id != first
    assert make_scan_id("inspect", "B1/[Z軸]", "B1", "[Z軸]") == first


def test_filters_follow_the_original_conventions(tmp_path):
    _scan(tmp_path, "B1", [204, 205, 230, 231])
    _scan(tmp_path, "B1", [210], stem="正極")  # cathode files: not analysed
    _scan(tmp_path, "B1", [211], axis="[X軸]")  # another axis
    _scan(tmp_path, "B1", [212], ext=".TIF")  # upper-case extension still counts
    write_slice(tmp_path / "B1" / "[Z軸]" / "負極_12.tif", IMG)  # not a 4-digit index
    (tmp_path / "B1" / "[Z軸]" / "notes.txt").write_text("x")
    scans = discover(tmp_path, "inspect", SETTINGS, (205, 230))
    assert len(scans) == 1
    assert [s.index for s in scans[0].slices] == [205, 212, 230]


def test_case_sensitive_glob_and_custom_regex(tmp_path):
    _scan(tmp_path, "B1", [1, 2], ext=".TIF")
    strict = DiscoverySettings(case_sensitive=True, file_glob="*.tif")
    assert discover(tmp_path, "inspect", strict, None) == []
    custom = DiscoverySettings(name_contains="", axis_folder=None, slice_regex=r"(\d+)\.tif$")
    write_slice(tmp_path / "plain" / "slice12.tif", IMG)
    scans = discover(tmp_path / "plain", "inspect", custom, None)
    assert [s.index for s in scans[0].slices] == [12] and scans[0].axis == ""


def test_duplicate_slice_index_keeps_the_first_and_says_so(tmp_path):
    write_slice(tmp_path / "B1" / "[Z軸]" / "a_負極_0210.tif", IMG)
    write_slice(tmp_path / "B1" / "[Z軸]" / "b_負極_0210.tif", IMG)
    scan = discover(tmp_path, "inspect", SETTINGS, None)[0]
    assert len(scan.slices) == 1 and scan.slices[0].path.endswith("a_負極_0210.tif")
    assert "duplicate index" in scan.notes[0]


def test_multi_page_stack_layout(tmp_path):
    stack = np.arange(5 * 6 * 7, dtype=np.uint16).reshape(5, 6, 7)
    (tmp_path / "[A]").mkdir()
    tifffile.imwrite(tmp_path / "[A]" / "cell_負極.tif", stack)
    settings = DiscoverySettings(layout="stack", stack_first_index=100)
    scans = discover(tmp_path, "inspect", settings, (101, 103))
    assert len(scans) == 1
    assert [(s.index, s.page) for s in scans[0].slices] == [(101, 1), (102, 2), (103, 3)]
    assert (scans[0].height, scans[0].width) == (6, 7)


def test_tables_and_missing_root(tmp_path):
    _scan(tmp_path, "B1", [1, 2, 3, 7])
    scans = discover(tmp_path, "inspect", SETTINGS, None)
    sheet = scans_table(scans)
    assert sheet.loc[0, "slice_indices"] == "1-3,7" and sheet.loc[0, "n_slices"] == 4
    assert list(slices_table(scans)["slice_index"]) == [1, 2, 3, 7]
    with pytest.raises(FileNotFoundError, match="nope"):
        discover(tmp_path / "nope", "inspect", SETTINGS, None)


def test_the_sheets_read_back_as_written_without_pandas_guessing(tmp_path):
    """What discovery writes, the planning side reads with the csv module: integer columns as int,
    every other column as the text it was (a battery folder named 001 is not the number 1)."""
    from anodect.io import write_table
    from anodect.sheets import read_sheet, scan_record, scan_slices

    _scan(tmp_path / "in", "001", [4, 5])
    scans = discover(tmp_path / "in", "inspect", SETTINGS, None)
    write_table(tmp_path / "scans.tsv", scans_table(scans))
    write_table(tmp_path / "slices.tsv", slices_table(scans))
    record = scan_record(read_sheet(tmp_path / "scans.tsv"), scans[0].scan_id)
    assert record["battery_id"] == "001" and record["n_slices"] == 2 and record["height"] == IMG.shape[0]
    assert record["slice_indices"] == "4-5" and record["axis"] == "[Z軸]"
    rows = scan_slices(tmp_path / "slices.tsv", scans[0].scan_id)
    assert rows["slice_index"].tolist() == [4, 5] and rows["page"].tolist() == [-1, -1]
    assert rows["path"].tolist() == [sl.path for sl in scans[0].slices]
    with pytest.raises(KeyError, match="not in"):
        scan_slices(tmp_path / "slices.tsv", "nope-00000000")


def test_fingerprint_follows_the_slice_files_in_range_and_nothing_else(tmp_path):
    _scan(tmp_path, "B1", [1, 2, 3, 9])
    _scan(tmp_path, "B2", [1, 2, 3])

    def prints():
        return {s.battery_id: s.fingerprint() for s in discover(tmp_path, "inspect", SETTINGS, (1, 3))}

    first = prints()
    assert prints() == first and first["B1"] != first["B2"] and re.fullmatch(r"[0-9a-f]{16}", first["B1"])
    assert scans_table(discover(tmp_path, "inspect", SETTINGS, (1, 3)))["fingerprint"].tolist() == list(first.values())
    out_of_range = tmp_path / "B1" / "[Z軸]" / "負極_0009.tif"
    write_slice(out_of_range, IMG + 1)
    assert prints() == first
    rewritten = tmp_path / "B1" / "[Z軸]" / "負極_0002.tif"
    st = rewritten.stat()
    os.utime(rewritten, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    after = prints()
    assert after["B1"] != first["B1"] and after["B2"] == first["B2"]


def test_slugify_and_compact_indices():
    assert slugify("[T01] 検査セル_[Z軸]") == "t01_z"
    assert slugify("セル") == "scan"
    assert compact_indices([5, 1, 2, 3, 9]) == "1-3,5,9"
    assert compact_indices([]) == ""


def test_regex_without_group_is_rejected():
    with pytest.raises(ValueError, match="capture group"):
        DiscoverySettings(slice_regex=r"\d{4}").compiled_regex()


def test_every_page_of_a_stack_has_its_own_slice_name():
    from anodect.discovery import slice_name

    assert slice_name("/d/[A]/[Z軸]/[A]_負極_0205.tif", -1, 205) == "[A]_負極_0205"
    names = {slice_name("/d/[A] cell.tif", p, 100 + p) for p in range(5)}
    assert names == {f"[A] cell_{100 + p:04d}" for p in range(5)}


def test_folder_fingerprint_sees_scans_come_go_and_exported_again_but_not_a_middle_slice(tmp_path):
    from anodect.discovery import first_scan, folders_fingerprint

    settings = DiscoverySettings()
    _scan(tmp_path, "A", range(200, 206))
    _scan(tmp_path, "B", range(200, 206))
    rng = (201, 204)
    fp = lambda: folders_fingerprint(tmp_path, settings, rng)  # noqa: E731
    first = fp()
    assert fp() == first
    folder = tmp_path / "A" / "[Z軸]"

    def touch(name):
        st = (folder / name).stat()
        os.utime(folder / name, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))

    touch("負極_0202.tif")  # a middle slice rewritten in place: the documented blind spot
    assert fp() == first
    touch("負極_0205.tif")  # outside filter_index_range: not a slice of the run
    assert fp() == first
    touch("負極_0204.tif")  # the last slice in range: the scan was exported again
    second = fp()
    assert second != first
    write_slice(folder / "負極_0210.tif", np.zeros((8, 8), np.uint8))  # a file added
    third = fp()
    assert third != second
    os.rename(tmp_path / "B", tmp_path / "C")  # a battery renamed
    assert fp() != third
    # The pre-run check reads the first scan only, the one discover() finds first.
    assert first_scan(tmp_path, settings, rng).source == discover(tmp_path, "inspect", settings, rng)[0].source
    (tmp_path / "empty").mkdir()
    assert first_scan(tmp_path / "empty", settings, rng) is None
