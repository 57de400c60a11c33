"""RF-DETR training set: annotations placed on crops, battery splits, copy-paste, COCO."""

import json

import numpy as np
import pandas as pd
import pytest

from anodect.groundtruth import Polygon, via_document
from anodect.io import write_json
from anodect.annotations import AnnotatedScan, annotation_files, place_annotations, read_annotation_file
from anodect.rfdetr.dataset import (ANNOTATIONS_FILE, SPLITS, DatasetSettings, Paster, build_dataset,
                                    split_batteries)
from anodect.rfdetr.stage import make_dataset


def _annotated(tt):
    return [AnnotatedScan(rec, tt["sets"][rec["scan_id"]]) for rec in tt["records"]["train_defect"]]


def _truth_in_crops(tt):
    """The generator's truth boxes as crop boxes (both corners, exclusive max)."""
    truth = pd.read_csv(tt["root"] / "truth" / "boxes.csv")
    truth = truth[(truth["split"] == "train_defect") & truth["slice_index"].between(204, 211)]
    rois = {r["name"]: r for r in tt["rois"]}
    out = {}
    for row in truth.itertuples():
        roi = rois[row.roi]
        x0, y0 = roi["x_min"] - 16, roi["y_min"] - 16
        box = (max(row.x1, roi["x_min"]) - x0, max(row.y1, roi["y_min"]) - y0,
               min(row.x2, roi["x_max"]) - x0, min(row.y2, roi["y_max"]) - y0)
        out.setdefault((row.battery_id, row.slice_index, row.roi), []).append(box)
    return out


def test_via_polygons_land_on_their_slice_and_roi_as_the_truth_says(tiny_training):
    tt = tiny_training
    scans = _annotated(tt)
    placed, report = place_annotations(annotation_files(tt["annotations"]), tt["annotations"], scans)
    assert report.unmatched == [] and report.matched == len(placed) > 0
    truth = _truth_in_crops(tt)
    battery = {s.record["scan_id"]: s.record["battery_id"] for s in scans}
    got = {}
    for ann in placed:
        roi = str(tt["sets"][ann.scan_id].roi_names[ann.roi])
        got.setdefault((battery[ann.scan_id], ann.slice_index, roi), []).append(ann.box)
    assert got.keys() == truth.keys()
    for key, boxes in got.items():
        for mine, theirs in zip(sorted(boxes), sorted(truth[key])):
            assert np.abs(np.subtract(mine, theirs)).max() <= 1, key
    for ann in placed:  # boxes never leave the ROI (16 px context on each side)
        h, w = tt["sets"][ann.scan_id].crops.shape[-2:]
        x1, y1, x2, y2 = ann.box
        assert 16 <= x1 < x2 <= w - 16 and 16 <= y1 < y2 <= h - 16


def test_coco_annotations_and_renamed_files_place_like_via(tiny_training, tmp_path):
    tt = tiny_training
    scans = _annotated(tt)
    via_placed, _ = place_annotations(annotation_files(tt["annotations"]), tt["annotations"], scans)
    coco = json.loads((tt["root"] / "truth" / "coco.json").read_text())
    keep = {i["id"] for i in coco["images"] if i["split"] == "train_defect"}
    coco["images"] = [i for i in coco["images"] if i["id"] in keep]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    folder = tmp_path / "coco"
    write_json(folder / "all.json", coco)
    coco_placed, report = place_annotations(annotation_files(folder), folder, scans)
    assert report.unmatched == []
    key = lambda a: (a.scan_id, a.slice_index, a.roi, a.box)  # noqa: E731
    coco_keys, via_keys = sorted(map(key, coco_placed)), sorted(map(key, via_placed))
    assert [k[:3] for k in coco_keys] == [k[:3] for k in via_keys]
    # VIA stores integer points, COCO two decimals: boxes agree to a pixel.
    assert np.abs(np.subtract([k[3] for k in coco_keys], [k[3] for k in via_keys])).max() <= 1

    # VIA keys renamed to converted PNGs, as the original's annotators had them, in the battery's folder.
    first = scans[0].record
    polys = read_annotation_file(next(annotation_files(tt["annotations"] / first["battery_path"]).__iter__()))
    renamed = {}
    for p in polys:
        name = p.file_name.replace(".tif", ".png").replace(first["battery_id"], "scan")
        renamed.setdefault(name, []).append(Polygon(name, p.xs, p.ys))
    other = tmp_path / "via" / first["battery_path"] / "labels.json"
    write_json(other, via_document(renamed))
    placed, report = place_annotations(annotation_files(tmp_path / "via"), tmp_path / "via", scans)
    assert report.unmatched == [] and len(placed) == sum(a.scan_id == first["scan_id"] for a in via_placed)


def test_unmatched_and_off_roi_polygons_are_reported(tiny_training, tmp_path):
    scans = _annotated(tiny_training)
    write_json(tmp_path / "a.json", via_document({
        "nobody_0999.tif": [Polygon("nobody_0999.tif", (1, 5, 5), (1, 1, 5))],
        f"{scans[0].crops.paths[0].rsplit('/', 1)[-1]}": [Polygon("x", (0, 3, 3), (0, 0, 3))],
    }))
    placed, report = place_annotations(annotation_files(tmp_path), tmp_path, scans)
    assert placed == [] and report.outside_rois == 1
    assert len(report.unmatched) == 1 and "nobody_0999.tif" in report.unmatched[0]


@pytest.mark.parametrize("n", [1, 2, 3, 6, 10])
def test_batteries_split_whole_seeded_and_order_free(n):
    names = [f"b{i}" for i in range(n)]
    split = split_batteries(names, (0.7, 0.2, 0.1), seed=4)
    assert split == split_batteries(list(reversed(names)), (0.7, 0.2, 0.1), seed=4)
    assert set(split) == set(names) and set(split.values()) <= set(SPLITS)
    counts = {s: sum(v == s for v in split.values()) for s in SPLITS}
    assert counts["train"] >= 1
    if n >= 2:
        assert counts["valid"] >= 1
    if n == 10:
        assert counts == {"train": 7, "valid": 2, "test": 1}


def _dataset(tt, **settings):
    scans = _annotated(tt)
    placed, _ = place_annotations(annotation_files(tt["annotations"]), tt["annotations"], scans)
    annotated = {s.crops.scan_id: s.crops for s in scans}
    normal = {r["scan_id"]: tt["sets"][r["scan_id"]] for r in tt["records"]["train_normal"]}
    return placed, annotated, normal, build_dataset(placed, annotated, normal, DatasetSettings(**settings))


@pytest.mark.parametrize("paste", ["difference", "pixels"])
def test_synthetic_crops_change_pixels_only_inside_their_boxes_in_the_roi(tiny_training, paste):
    placed, annotated, normal, (images, split_of) = _dataset(
        tiny_training, synthetic_crops=30, background_crops=6, paste=paste, seed=2)
    synthetic = [(s, i) for s in SPLITS for i in images[s] if i.kind == "synthetic"]
    assert len(synthetic) >= 15
    sizes = {(a.box[2] - a.box[0], a.box[3] - a.box[1]) for a in placed}
    for split, img in synthetic:
        cs = normal[img.scan_id]
        pos = int(np.flatnonzero(cs.slice_indices == img.slice_index)[0])
        roi = list(cs.roi_names).index(img.roi)
        changed = img.pixels.astype(int) != cs.crops[pos, roi]
        inside = np.zeros_like(changed)
        for x1, y1, x2, y2 in img.boxes:
            assert (x2 - x1, y2 - y1) in sizes  # a real defect's box, moved
            assert 16 + 3 <= x1 and x2 <= changed.shape[1] - 16 - 3
            assert 16 + 3 <= y1 and y2 <= changed.shape[0] - 16 - 3
            inside[y1:y2, x1:x2] = True
        assert changed.any() and not (changed & ~inside).any()
        assert split_of[img.scan_id] == split
        for source in img.sources:  # defects pasted in a split come from that split's batteries
            assert split_of[source.split(":")[0]] == split


def test_paster_skips_a_defect_larger_than_the_roi():
    class Big:
        box = (0, 0, 60, 10)

        def mask(self, shape):
            return np.ones(shape, bool)

    paster = Paster(DatasetSettings(), np.random.default_rng(0), (16, 16, 58, 48))
    target = np.zeros((64, 74), np.uint8)
    assert paster.paste(target, target.copy(), Big(), [], np.zeros((0, 3))) is None


def test_dataset_folder_has_one_category_and_battery_disjoint_splits(tiny_training, tmp_path):
    tt = tiny_training
    annotated = [(r, p) for r, p in zip(tt["records"]["train_defect"], tt["crops"]["train_defect"])]
    manifest = make_dataset(annotated, tt["crops"]["train_normal"], tt["annotations"],
                            DatasetSettings(synthetic_crops=20, background_crops=5), "anode crack",
                            tmp_path / "ds")
    seen = {}
    for split in SPLITS:
        doc = json.loads((tmp_path / "ds" / split / ANNOTATIONS_FILE).read_text())
        assert doc["categories"] == [{"id": 1, "name": "anode crack", "supercategory": "defect"}]
        assert {a["category_id"] for a in doc["annotations"]} <= {1}
        for img in doc["images"]:
            assert (tmp_path / "ds" / split / img["file_name"]).is_file()
        seen[split] = doc
    boxes = pd.read_csv(tmp_path / "ds" / "boxes.csv")
    for scan_id, rows in boxes.groupby("scan_id"):
        assert rows["split"].nunique() == 1, scan_id
        assert rows["split"].iloc[0] == manifest["splits"][scan_id]
    assert sum(len(d["annotations"]) for d in seen.values()) == boxes["x1"].notna().sum()
    assert manifest["valid_reuses_train"] is False
    again = make_dataset(annotated, tt["crops"]["train_normal"], tt["annotations"],
                         DatasetSettings(synthetic_crops=20, background_crops=5), "anode crack", tmp_path / "ds2")
    assert again["dataset_id"] == manifest["dataset_id"]  # seeded: same inputs, same images


def test_rendered_cracks_join_the_set_boxed_by_their_footprint_inside_the_roi(tiny_training):
    """rendered_crops: cracks drawn into normal crops by anodect.synthesis, beside the pasted ones;
    the pixels change inside the boxes alone, and the pasted and background crops stay as they were."""
    tt = tiny_training
    scans = _annotated(tt)
    placed, _ = place_annotations(annotation_files(tt["annotations"]), tt["annotations"], scans)
    annotated = {a.record["scan_id"]: a.crops for a in scans}
    normal = {sid: cs for sid, cs in tt["sets"].items()
              if sid in {r["scan_id"] for r in tt["records"]["train_normal"]}}
    base = DatasetSettings(synthetic_crops=12, background_crops=4)
    before, _ = build_dataset(placed, annotated, normal, base)
    after, _ = build_dataset(placed, annotated, normal, DatasetSettings(synthetic_crops=12, background_crops=4,
                                                                        rendered_crops=30))
    rendered = [i for split in SPLITS for i in after[split] if i.kind == "rendered"]
    assert len(rendered) >= 20 and all(i.boxes for i in rendered)
    for split in SPLITS:
        kept = [i for i in after[split] if i.kind != "rendered"]
        assert [i.file_name for i in kept] == [i.file_name for i in before[split]]
        assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(kept, before[split]))
    for img in rendered:
        cs = normal[img.scan_id]
        p = int(np.flatnonzero(cs.slice_indices == img.slice_index)[0])
        r = list(cs.roi_names).index(img.roi)
        changed = img.pixels.astype(int) != cs.crops[p, r]
        inside = np.zeros_like(changed)
        for x1, y1, x2, y2 in img.boxes:
            inside[max(0, y1 - 3):y2 + 3, max(0, x1 - 3):x2 + 3] = True  # the blur's reach below a grey level
        rx1, ry1, rx2, ry2 = cs.roi_in_crop(r)
        in_roi = np.zeros_like(changed)
        in_roi[ry1:ry2, rx1:rx2] = True
        assert (changed & in_roi).any() and not (changed & in_roi & ~inside).any(), img.file_name
        assert all(rx1 <= x1 < x2 <= rx2 and ry1 <= y1 < y2 <= ry2 for x1, y1, x2, y2 in img.boxes)


def test_one_annotated_battery_validates_on_train_and_says_so(tiny_training, tmp_path):
    tt = tiny_training
    annotated = [(tt["records"]["train_defect"][0], tt["crops"]["train_defect"][0])]
    manifest = make_dataset(annotated, tt["crops"]["train_normal"], tt["annotations"],
                            DatasetSettings(synthetic_crops=10, background_crops=3), "anode crack", tmp_path / "ds")
    assert manifest["valid_reuses_train"] is True
    assert manifest["counts"]["valid"]["boxes"] > 0


def test_a_crops_file_of_another_scan_is_refused(tiny_training, tmp_path):
    tt = tiny_training
    records, crops = tt["records"]["train_defect"], tt["crops"]["train_defect"]
    with pytest.raises(ValueError, match="crops file holds scan"):
        make_dataset([(records[0], crops[1])], tt["crops"]["train_normal"], tt["annotations"],
                     DatasetSettings(), "anode crack", tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
