"""Drawn slices in the original layout: one folder per slice, boxes drawn, AI_RESULTS written."""

import numpy as np
import pandas as pd
from PIL import Image

from anodect.decisions import decide
from anodect.render import publish, render_scan
from anodect.tracking import TrackingSettings

from conftest import write_slice


def _scan(tmp_path):
    scan = {"scan_id": "b1_z-00000000", "battery_id": "[B1] cell", "battery_path": "lot 7/[B1] cell",
            "axis": "[Z軸]"}
    folder = tmp_path / "in" / scan["battery_path"] / scan["axis"]
    paths = {}
    for s in range(205, 211):
        paths[s] = str(write_slice(folder / f"[B1] cell_負極_{s:04d}.tif", np.full((64, 64), 100, np.uint8)))
    rows = [(s, "left", 10.0, 20.0, 30.0, 25.0, 0.9, 0.9) for s in range(206, 210)]
    rows.append((205, "left", 40.0, 40.0, 50.0, 45.0, 0.7, 0.7))
    boxes = pd.DataFrame(rows, columns=["slice_index", "roi", "x1", "y1", "x2", "y2", "score", "crop_score"])
    d = decide("rfdetr", scan, boxes, list(paths), paths, TrackingSettings(4, 0, 2))
    return scan, d, paths


def test_each_slice_is_drawn_once_into_anomaly_or_normal(tmp_path):
    scan, d, paths = _scan(tmp_path)
    counts = render_scan(d.slices, d.detections, (0.0, 255.0), "anode crack", tmp_path / "staged")
    assert counts == {"anomaly": 4, "normal": 2, "unreadable": 0}
    anomaly = sorted(p.name for p in (tmp_path / "staged" / "anomaly").iterdir())
    normal = sorted(p.name for p in (tmp_path / "staged" / "normal").iterdir())
    assert anomaly == [f"[B1] cell_負極_{s:04d}.png" for s in range(206, 210)]
    assert normal == ["[B1] cell_負極_0205.png", "[B1] cell_負極_0210.png"]
    drawn = np.asarray(Image.open(tmp_path / "staged" / "anomaly" / anomaly[0]).convert("RGB"))
    assert drawn.shape == (64, 64, 3)
    assert tuple(drawn[22, 10]) == (255, 40, 40)  # the confirmed box's left edge, red as in the original
    assert tuple(drawn[60, 60]) == (100, 100, 100)  # the slice itself is untouched elsewhere
    # The unconfirmed detection on 205 is drawn too (amber), in normal/.
    first = np.asarray(Image.open(tmp_path / "staged" / "normal" / normal[0]).convert("RGB"))
    assert tuple(first[42, 40]) == (255, 190, 0)


def test_publish_lays_out_the_original_folders_and_ai_results(tmp_path):
    scan, d, paths = _scan(tmp_path)
    render_scan(d.slices, d.detections, (0.0, 255.0), "anode crack", tmp_path / "staged")
    out = tmp_path / "results" / "inference_rf_detr"
    publish([scan], {scan["scan_id"]: str(tmp_path / "staged")}, {scan["scan_id"]: (d.slices, d.detections)},
            out, export_csv=True)
    assert len(list((out / "anomaly" / "lot 7" / "[B1] cell" / "[Z軸]").glob("*.png"))) == 4
    assert len(list((out / "normal" / "lot 7" / "[B1] cell" / "[Z軸]").glob("*.png"))) == 2
    csvs = sorted(p.name for p in (out / "AI_RESULTS" / "lot 7" / "[B1] cell").iterdir())
    assert csvs == ["B1 cell_detected.csv", "B1 cell_log.csv"]
    publish([scan], {scan["scan_id"]: str(tmp_path / "staged")}, {scan["scan_id"]: (d.slices, d.detections)},
            out, export_csv=False)
    assert not (out / "AI_RESULTS").exists()


def test_an_unreadable_slice_is_counted_and_the_rest_drawn(tmp_path):
    scan, d, paths = _scan(tmp_path)
    with open(paths[207], "wb") as fh:
        fh.write(b"not a tiff")
    counts = render_scan(d.slices, d.detections, (0.0, 255.0), "anode crack", tmp_path / "staged")
    assert counts == {"anomaly": 3, "normal": 2, "unreadable": 1}


def test_a_no_data_battery_is_told_apart_from_an_ok_one_in_the_original_csvs(tmp_path):
    """Two usable slices (fewer than the 4 a crack needs): NO DATA. The original's header-only
    _log.csv means OK, so the NO DATA battery gets a row whose Result says so."""
    import csv

    scan = {"scan_id": "b2_z-00000000", "battery_id": "[B2] cell", "battery_path": "[B2] cell", "axis": "[Z軸]"}
    ok = {"scan_id": "b3_z-00000000", "battery_id": "[B3] cell", "battery_path": "[B3] cell", "axis": "[Z軸]"}
    none = pd.DataFrame(columns=["slice_index", "roi", "x1", "y1", "x2", "y2", "score", "crop_score"])
    tables, staged = {}, {}
    for record, slices in ((scan, [205, 206]), (ok, list(range(205, 211)))):
        paths = {s: str(write_slice(tmp_path / "in" / record["battery_path"] / f"c_負極_{s:04d}.tif",
                                    np.full((32, 32), 90, np.uint8))) for s in slices}
        d = decide("rfdetr", record, none, slices, paths, TrackingSettings(4, 0, 2))
        render_scan(d.slices, d.detections, (0.0, 255.0), "anode crack", tmp_path / record["scan_id"])
        tables[record["scan_id"]], staged[record["scan_id"]] = (d.slices, d.detections), str(tmp_path / record["scan_id"])
    out = tmp_path / "results" / "inference_rf_detr"
    publish([scan, ok], staged, tables, out, export_csv=True, min_slices=4)

    def rows(battery):
        with open(out / "AI_RESULTS" / f"[{battery}] cell" / f"{battery} cell_log.csv", encoding="utf-8", newline="") as fh:
            return list(csv.reader(fh))

    assert rows("B2") == [["Name", "Result", "NG_countL", "NG_countP", "NG_countE"], ["B2 cell", "NO DATA", "", "", ""]]
    assert rows("B3") == [["Name", "Result", "NG_countL", "NG_countP", "NG_countE"]]  # OK: the header only
