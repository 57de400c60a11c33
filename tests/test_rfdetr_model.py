"""RF-DETR model: one epoch of rfdetr's own training, a checkpoint that reloads safely,
predictions mapped back to slice pixels."""

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from anodect.crops import CropSet
from anodect.rfdetr.dataset import DatasetSettings
from anodect.rfdetr.model import CheckpointError, Detection, Detector, TrainSettings, train
from anodect.rfdetr.stage import PREDICTION_COLUMNS, load_detector, make_dataset, predict_scan, to_slice_boxes

from conftest import small_disk


def _crop_set(context=16):
    rois = np.array([[32, 112, 74, 144], [183, 112, 225, 144]])
    h, w = 32 + 2 * context, 42 + 2 * context
    return CropSet("s1", np.zeros((3, 2, h, w), np.uint8), np.array([204, 205, 207]),
                   np.array(["a", "b", "c"]), np.array(["left", "right"]), rois, (0.0, 255.0), context)


def test_crop_boxes_map_to_slice_pixels_clipped_to_their_roi():
    cs = _crop_set()
    none = Detection(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    dets = [none] * 6
    dets[3] = Detection(np.array([[20, 18, 30, 25],    # inside the right ROI
                                  [10, 10, 20, 20],    # half in the context border: clipped
                                  [0, 0, 12, 12]],     # wholly in the border: dropped
                                 np.float32), np.array([0.9, 0.5, 0.7], np.float32), np.array([0, 0, 0]))
    table = to_slice_boxes(dets, cs, context=16)
    assert list(table.columns) == PREDICTION_COLUMNS[1:-1]
    assert table[["slice_index", "roi"]].values.tolist() == [[205, "right"], [205, "right"]]
    x0, y0 = 183 - 16, 112 - 16
    assert table.iloc[0][["x1", "y1", "x2", "y2"]].tolist() == [x0 + 20, y0 + 18, x0 + 30, y0 + 25]
    assert table.iloc[1][["x1", "y1", "x2", "y2"]].tolist() == [183, 112, x0 + 20, y0 + 20]
    # A model trained without context (the original's) sees bare ROIs: offsets are the ROI corner.
    table = to_slice_boxes(dets, cs, context=0)
    assert table.iloc[0][["x1", "y1"]].tolist() == [183 + 20, 112 + 18]


@pytest.fixture(scope="module")
def trained(tiny_training, tmp_path_factory):
    tt = tiny_training
    out = tmp_path_factory.mktemp("rfdetr")
    annotated = list(zip(tt["records"]["train_defect"], tt["crops"]["train_defect"]))
    make_dataset(annotated, tt["crops"]["train_normal"], tt["annotations"],
                 DatasetSettings(synthetic_crops=12, background_crops=4), "anode crack", out / "dataset")
    # Offline: random weights, so epochs_from_random (issue #27: the demo in minutes) caps the 3 epochs at 1.
    settings = TrainSettings(resolution=64, epochs=3, epochs_from_random=1, pretrain_weights=None, batch_size=4,
                             num_queries=10, group_detr=2, device="cpu")
    meta = train(out / "dataset", settings, out / "model", threads=2, class_label="anode crack")
    return out, meta


@pytest.mark.slow
def test_one_epoch_gives_a_checkpoint_that_loads_and_predicts(trained, tiny_training, tmp_path):
    out, meta = trained
    assert (out / "model" / "checkpoint.pth").is_file()
    assert meta["context"] == 16 and meta["settings"]["resolution"] == 64 and meta["dataset_id"]
    assert meta["start_weights"]["kind"] == "random" and meta["epochs_run"] == 1
    assert json.loads((out / "model" / "model.json").read_text())["checkpoint_sha256"] == meta["checkpoint_sha256"]
    detector = load_detector(out / "model" / "checkpoint.pth", {"device": "cpu", "batch_size": 8})
    assert detector.context == 16
    scan = tiny_training["crops"]["inspect"][0]
    everything = predict_scan(detector, scan, tmp_path / "all.csv", floor=0.0, threads=2)
    # The floor is applied, not assumed: half the boxes lie below the median confidence.
    floor = float(everything["confidence"].median())
    table = predict_scan(detector, scan, tmp_path / "p.csv", floor=floor, threads=2)
    assert list(pd.read_csv(tmp_path / "p.csv").columns) == PREDICTION_COLUMNS
    assert 0 < len(table) < len(everything) and (table["confidence"] >= floor).all()
    assert len(table) == int((everything["confidence"] >= floor).sum())
    cs = CropSet.load(scan)
    assert set(table["slice_index"]) <= set(cs.slice_indices.tolist())
    # The detector looks at its input: different crops, different confidences.
    per_slice = everything.groupby("slice_index")["confidence"].apply(lambda c: tuple(np.sort(c.to_numpy())))
    assert per_slice.nunique() > 1
    for roi, rows in table.groupby("roi"):
        x0, y0, x1, y1 = cs.roi_boxes[list(cs.roi_names).index(roi)]
        assert (rows["x1"] >= x0).all() and (rows["x2"] <= x1).all()
        assert (rows["y1"] >= y0).all() and (rows["y2"] <= y1).all()
    # Batched and one-by-one predictions agree.
    crops = cs.crops.reshape(-1, *cs.crops.shape[-2:])[:4]
    batched = detector.predict(crops, 0.0)
    detector.batch_size = 1
    single = detector.predict(crops, 0.0)
    for a, b in zip(batched, single):
        np.testing.assert_allclose(np.sort(a.confidence), np.sort(b.confidence), atol=1e-4)


class _Boom:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.slow
def test_checkpoints_are_loaded_without_unpickling_and_checked(trained, tmp_path):
    out, _ = trained
    evil = tmp_path / "evil.pth"
    witness = tmp_path / "unpickled"
    torch.save({"model": {}, "args": _Boom(witness)}, evil, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(CheckpointError, match="evil.pth"):
        Detector(evil, "cpu")
    assert not witness.exists()
    copy = tmp_path / "m"
    copy.mkdir()
    (copy / "checkpoint.pth").write_bytes((out / "model" / "checkpoint.pth").read_bytes()[:-10] + b"0" * 10)
    (copy / "model.json").write_text((out / "model" / "model.json").read_text())
    with pytest.raises(CheckpointError, match="differs"):
        Detector(copy / "checkpoint.pth", "cpu")
    with pytest.raises(CheckpointError, match="not found"):
        Detector(tmp_path / "missing.pth", "cpu")


@pytest.mark.slow
def test_training_can_start_from_a_checkpoint(trained, tmp_path):
    out, first = trained
    settings = TrainSettings(resolution=64, epochs=1, batch_size=4, num_queries=10, group_detr=2, device="cpu",
                             pretrain_weights=str(out / "model" / "checkpoint.pth"))
    meta = train(out / "dataset", settings, tmp_path / "model", threads=2, class_label="anode crack")
    assert meta["settings"]["pretrain_weights"].endswith("checkpoint.pth")
    assert meta["checkpoint_sha256"] != first["checkpoint_sha256"]
    with pytest.raises(CheckpointError, match="not found"):
        train(out / "dataset", TrainSettings(pretrain_weights=str(tmp_path / "absent.pth")), tmp_path / "m2",
              threads=2, class_label="anode crack")


@pytest.mark.slow
def test_a_full_disk_during_training_is_reported_as_such(trained, tmp_path):
    # torch.save says only "unexpected pos ..." when the disk fills; the user must read "no space".
    out, _ = trained
    settings = TrainSettings(resolution=64, epochs=1, batch_size=4, num_queries=10, group_detr=2, device="cpu")
    with small_disk(tmp_path / "small", "8m") as small:
        with pytest.raises(OSError, match=f"cannot write {small}/model: no space left on the device"):
            train(out / "dataset", settings, small / "model", threads=2, class_label="anode crack")
        assert list((small / "model").iterdir()) == []  # the run folder is removed, no partial checkpoint


def _rfdetr_checkpoint(config_class, path, seed=1, **fields):
    """A checkpoint in rfdetr's file layout (weights under "model", its args as a namespace),
    with random weights of ``config_class``'s architecture, made without any download."""
    import argparse

    from rfdetr._namespace import _namespace_from_configs
    from rfdetr.config import TrainConfig
    from rfdetr.models.lwdetr import build_model

    torch.manual_seed(seed)
    args = _namespace_from_configs(config_class(pretrain_weights=None, device="cpu", **fields),
                                   TrainConfig(dataset_dir=None, output_dir="output"))
    # build_model fetches DINOv2 only for random initialisation; naming the release skips it.
    args.pretrain_weights = config_class.model_fields["pretrain_weights"].default
    net = build_model(args)
    plain = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, list, type(None)))}
    torch.save({"model": net.state_dict(), "args": argparse.Namespace(**plain)}, path)
    return net.state_dict()


def _encoder(state):
    return {k: v for k, v in state.items() if k.startswith("backbone.0.encoder.")}


def test_auto_starts_from_rfdetrs_release_in_its_cache(tmp_path, monkeypatch):
    from rfdetr.config import RFDETRNanoConfig

    from anodect.rfdetr.model import build, release_file, resolve_start

    monkeypatch.setenv("RF_HOME", str(tmp_path))
    settings = TrainSettings(resolution=64, num_queries=10, group_detr=2, device="cpu")
    assert settings.pretrain_weights == "auto" and release_file("nano") == tmp_path / "rf-detr-nano.pth"
    release = _encoder(_rfdetr_checkpoint(RFDETRNanoConfig, tmp_path / "rf-detr-nano.pth"))
    start = resolve_start(settings)
    assert (start.kind, start.path) == ("coco", str(tmp_path / "rf-detr-nano.pth"))
    assert "found in rfdetr's cache" in start.note and len(start.sha256) == 64
    built = _encoder(build(settings, "cpu", start).model.model.state_dict())
    assert len(release) > 50 and all(torch.equal(built[k], v) for k, v in release.items())
    random = _encoder(build(TrainSettings(pretrain_weights=None, resolution=64, num_queries=10, group_detr=2),
                            "cpu").model.model.state_dict())
    same = [k for k, v in release.items() if k.endswith(".weight") and v.dim() > 1 and torch.equal(random[k], v)]
    assert not same, same


def test_auto_without_release_or_network_trains_from_random_weights_and_says_so(tmp_path, monkeypatch, caplog):
    from anodect.rfdetr.model import resolve_start

    monkeypatch.setenv("RF_HOME", str(tmp_path / "empty"))
    with caplog.at_level("WARNING", logger="anodect.rfdetr.model"):
        start = resolve_start(TrainSettings())
    assert (start.kind, start.path) == ("random", None)
    assert "rf-detr-nano.pth" in start.note and "could not be downloaded" in start.note
    assert "RANDOM weights" in caplog.text and "untrained" in caplog.text
    with pytest.raises(CheckpointError, match="download: rfdetr's COCO release rf-detr-small.pth"):
        resolve_start(TrainSettings(size="small", pretrain_weights="download"))
    assert resolve_start(TrainSettings(pretrain_weights=None)).note == "rfdetr.pretrain_weights: null"


def test_learning_rates_follow_the_starting_weights():
    from anodect.rfdetr.model import StartWeights, rate_kwargs

    random, coco = StartWeights("random", None, None, ""), StartWeights("coco", "r.pth", "0" * 64, "")
    assert rate_kwargs(TrainSettings(), random) == {"lr": 5e-4, "lr_encoder": 5e-4, "lr_vit_layer_decay": 1.0,
                                                     "lr_component_decay": 1.0}
    assert rate_kwargs(TrainSettings(), coco) == {}  # rfdetr's own fine-tuning rates
    assert rate_kwargs(TrainSettings(lr=1e-3, layer_decay=0.9), coco) == {
        "lr": 1e-3, "lr_vit_layer_decay": 0.9, "lr_component_decay": 0.9}


@pytest.mark.slow
def test_the_original_tools_base_checkpoint_loads_offline(tmp_path, monkeypatch):
    # The original fine-tuned RFDETRBase and saved checkpoint_best_total.pth; Base builds from random
    # weights only after a DINOv2 download, so this checks that a Base file loads with the hub cut off.
    from rfdetr.config import RFDETRBaseConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = tmp_path / "models" / "rf_detr" / "checkpoint_best_total.pth"
    path.parent.mkdir(parents=True)
    saved = _rfdetr_checkpoint(RFDETRBaseConfig, path, num_classes=1)
    detector = Detector(path, "cpu", batch_size=2)
    assert type(detector.model).__name__ == "RFDETRBase" and detector.context == 0
    loaded = detector.model.model.model.state_dict()
    assert all(torch.equal(loaded[k].cpu(), v) for k, v in _encoder(saved).items())
    crops = np.random.default_rng(0).integers(0, 255, (3, 128, 167), dtype=np.uint8)
    dets = detector.predict(crops, floor=0.0)
    assert len(dets) == 3 and all(d.xyxy.shape[1] == 4 and len(d.confidence) > 0 for d in dets)
