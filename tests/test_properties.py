"""Property-based tests (hypothesis): discovery and the annotation parsers on random names and random JSON."""

import json
import math
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from anodect.discovery import DiscoverySettings, discover
from anodect.groundtruth import AnnotationError, Polygon
from anodect.annotations import read_annotation_file

SETTINGS = DiscoverySettings()
RANGE = (200, 260)
# The default rule as config/README.md states it, written here independently of discovery's code:
# a name holding 負極 and ending _NNNN.tif or .tiff (any case), in a folder whose name holds Z軸.
DOCUMENTED_RULE = re.compile(r"^(?=.*負極).*_(\d{4})\.tiff?$", re.IGNORECASE)

# File-name pieces a scanner export or a person may produce: brackets, spaces, Japanese, dots, digits.
piece = st.text(st.sampled_from(list("ab Z軸負極正常セル[]()_-.0123456789")), min_size=0, max_size=8)
number = st.integers(0, 9999).map(lambda i: f"{i:04d}")
ext = st.sampled_from([".tif", ".tiff", ".TIF", ".png", ".tif.bak", ""])
name = st.builds(lambda a, marker, n, e: f"{a}{marker}_{n}{e}", piece, st.sampled_from(["負極", "正極", ""]),
                 number, ext).filter(lambda s: s not in ("", ".", "..") and len(s.encode()) < 200)
battery = piece.map(lambda s: s.strip(". ") or "B").filter(lambda s: s not in (".", ".."))
axis = st.sampled_from(["[Z軸]", "Z軸", "[X軸]", "z軸"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(battery, axis, name), min_size=1, max_size=12))
# Always tried, so the matching path is exercised whatever the draw: two slices of one
# scan, a duplicate index in another extension, one out of range, one of the cathode.
@example([("[B1] セル", "[Z軸]", "[B1] セル_負極_0205.tif"), ("[B1] セル", "[Z軸]", "[B1] セル_負極_0206.tiff"),
          ("[B1] セル", "[Z軸]", "[B1] セル_負極_0205.TIF"), ("[B1] セル", "[Z軸]", "[B1] セル_負極_0999.tif"),
          ("B2", "Z軸", "x_正極_0210.tif")])
def test_discovery_finds_exactly_the_matching_slices_whatever_the_names(entries):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for b, a, n in entries:
            path = root / b / a / n
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"not read: read_sizes=False")
        skipped = []
        scans = discover(root, "inspect", SETTINGS, RANGE, read_sizes=False, skipped=skipped)
        expected = {}
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            m = DOCUMENTED_RULE.match(path.name)
            if m and "z軸" in path.parent.name.lower() and RANGE[0] <= int(m.group(1)) <= RANGE[1]:
                expected.setdefault(path.parent, set()).add(int(m.group(1)))
        found = {}
        for scan in scans:
            indices = [s.index for s in scan.slices]
            assert indices == sorted(set(indices))  # sorted, one file per index
            for sl in scan.slices:
                assert Path(sl.path).is_file() and Path(sl.path).parent == Path(scan.source)
            found[Path(scan.source)] = set(indices)
            assert scan.scan_id.isascii() and " " not in scan.scan_id
        assert found == expected
        if entries[0] == ("[B1] セル", "[Z軸]", "[B1] セル_負極_0205.tif"):
            assert [sorted(v) for v in found.values()] == [[205, 206]]  # the example really matches
        assert len({s.scan_id for s in scans}) == len(scans)
        # Discovery is a function of the files: the same answer twice.
        again = discover(root, "inspect", SETTINGS, RANGE, read_sizes=False)
        assert [(s.scan_id, [x.path for x in s.slices]) for s in again] == \
            [(s.scan_id, [x.path for x in s.slices]) for s in scans]


json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20)
coordinate = st.one_of(st.integers(-50, 2000), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3))
polygon = st.fixed_dictionaries({
    "shape_attributes": st.fixed_dictionaries({
        "name": st.sampled_from(["polygon", "rect", "polyline"]),
        "all_points_x": st.lists(coordinate, max_size=6), "all_points_y": st.lists(coordinate, max_size=6)}),
    "region_attributes": st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2)})
via = st.dictionaries(st.text(min_size=1, max_size=10), st.fixed_dictionaries(
    {"filename": st.text(max_size=10), "regions": st.one_of(st.lists(polygon, max_size=3),
                                                            st.dictionaries(st.text(max_size=2), polygon, max_size=3),
                                                            json_value)}), max_size=3)
coco = st.fixed_dictionaries({
    "images": st.lists(st.fixed_dictionaries({"id": st.integers(0, 3), "file_name": st.text(max_size=6)}),
                       max_size=3) | json_value,
    "annotations": st.lists(st.fixed_dictionaries({
        "image_id": st.integers(0, 3),
        "bbox": st.lists(coordinate, min_size=0, max_size=5),
        "segmentation": st.one_of(st.lists(st.lists(coordinate, max_size=8), max_size=2), json_value)}),
        max_size=3) | json_value})


def check_parse(doc) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.json"
        path.write_text(json.dumps(doc, allow_nan=True), encoding="utf-8")
        try:
            polygons = read_annotation_file(path)
        except AnnotationError as exc:
            assert "a.json" in str(exc)  # every refusal names the file
            return
        for p in polygons:
            assert isinstance(p, Polygon) and isinstance(p.file_name, str)
            assert len(p.xs) == len(p.ys) >= 3
            assert all(isinstance(v, float) and math.isfinite(v) for v in p.xs + p.ys)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_value, via, coco))
def test_annotation_parsers_return_clean_polygons_or_name_the_file(doc):
    check_parse(doc)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=64))
def test_annotation_parsers_refuse_random_bytes_by_name(data):
    """Bytes that are not a JSON document are refused, naming the file; bytes that happen to be
    JSON are judged as any document is (clean polygons, or a refusal naming the file)."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        doc = NOT_JSON
    if doc is not NOT_JSON:
        check_parse(doc)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.json"
        path.write_bytes(data)
        with pytest.raises(AnnotationError, match="a.json"):
            read_annotation_file(path)


NOT_JSON = object()
