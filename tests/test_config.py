import copy
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from anodect.config import ConfigError, load_config, roi_problems, rois_from_config, validate_schema
from anodect.patchcore.legacy import write_flat_index, write_params
from anodect.preflight import check_config
from anodect.planning import decision_params, model_settings, sources
from anodect.registry import get as plugin

from conftest import REPO, write_slice

# The original tool's README config, verbatim in content.
ORIGINAL = """
output_dir_model_rf_detr: models/rf_detr
output_dir_model_patchcore: models/patchcore
output_inference_dir: results
input_dir: data/raw/input_data
export_ai_csv_files: false

roi_config:
  - x_min: 127
    x_max: 294
    y_min: 448
    y_max: 576
    name: "left"
  - x_min: 733
    x_max: 900
    y_min: 448
    y_max: 576
    name: "right"

rf_detr_checkpoint: checkpoint_best_total.pth
class_label: anode crack
patchcore_threshold: 2.5
rf_detr_threshold: 0.8
resize_size: [168, 128]
filter_index_range:
  min: 215
  max: 222
"""


def model_choice(config, model):
    return plugin(model).choice(config)


def rfdetr_checkpoint(config):
    return plugin("rfdetr").choice(config).path


def patchcore_params(config, stage):
    return model_settings(config, "patchcore", f"{stage}_patchcore")


def rfdetr_params(config, stage):
    if stage == "dataset":
        return dict(config["rfdetr"]["dataset"])
    return model_settings(config, "rfdetr", f"{stage}_rfdetr")


def _original(tmp_path, image_size=1024):
    config = yaml.safe_load(ORIGINAL)
    config["input_dir"] = str(tmp_path / "input")
    # The original's users bring their model files too (models/patchcore, original format).
    models = tmp_path / "models" / "patchcore"
    models.mkdir(parents=True)
    write_params(models / "patchcore_params.pkl", {
        "backbone.name": "resnet50", "layers_to_extract_from": ["layer2", "layer3"], "input_shape": (3, 167, 128),
        "pretrain_embed_dimension": 4096, "target_embed_dimension": 1024, "patchsize": 3, "patchstride": 1})
    write_flat_index(models / "nnscorer_search_index.faiss", np.zeros((336, 1024), np.float32))
    config["output_dir_model_patchcore"] = str(models)
    rf_models = tmp_path / "models" / "rf_detr"
    rf_models.mkdir(parents=True)
    (rf_models / "checkpoint_best_total.pth").write_bytes(b"only its presence is checked here")
    config["output_dir_model_rf_detr"] = str(rf_models)
    for i in range(214, 224):
        write_slice(tmp_path / "input" / "[B1]" / "[Z軸]" / f"[B1]_負極_{i:04d}.tif",
                    np.zeros((image_size, image_size), np.uint8))
    return config


def test_original_config_is_accepted_as_is(tmp_path):
    config = check_config(_original(tmp_path))
    assert config["patchcore_threshold"] == 2.5
    assert config["discovery"]["axis_folder"] == "Z軸"
    assert config["demo"]["enabled"] is False
    assert [s.role for s in sources(config)] == ["inspect"]
    assert model_choice(config, "patchcore").kind == "original"
    assert model_choice(config, "rfdetr").kind == "original"
    assert rfdetr_checkpoint(config) == str(tmp_path / "models" / "rf_detr" / "checkpoint_best_total.pth")


def test_a_missing_rfdetr_checkpoint_names_the_way_out(tmp_path):
    config = _original(tmp_path)
    config["output_dir_model_rf_detr"] = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"RF-DETR checkpoint .*nowhere.* not found .*rfdetr.model: none"):
        check_config(copy.deepcopy(config))
    config["rfdetr"] = {"model": "none"}
    assert model_choice(check_config(config), "rfdetr").kind == "none"
    config["rfdetr"] = {"model": "train", "resolution": 200}
    with pytest.raises(ConfigError) as err:
        check_config(config)
    assert "rfdetr.model: 'train' needs training.annotated_dir" in str(err.value)
    assert "rfdetr.resolution: 200 is not a multiple of 32" in str(err.value)


def test_shipped_config_is_valid():
    config = load_config(REPO / "config" / "config.yaml")
    assert config["demo"]["enabled"] is True
    assert [r.name for r in rois_from_config(config)] == ["left", "right"]


def test_problems_are_reported_together_naming_their_keys(tmp_path):
    config = _original(tmp_path, image_size=800)
    config["filter_index_range"] = {"min": 222, "max": 215}
    with pytest.raises(ConfigError) as err:
        check_config(config)
    text = str(err.value)
    assert "filter_index_range: min (222) is greater than max (215)" in text
    config["filter_index_range"] = {"min": 215, "max": 222}
    with pytest.raises(ConfigError) as err:
        check_config(config)
    text = str(err.value)
    assert "roi_config[0] (left)" not in text  # x 127..294 fits an 800-wide image
    assert "roi_config[1] (right)" in text and "outside the 800x800" in text and "input_dir" in text


def test_missing_and_empty_input_folders(tmp_path):
    config = yaml.safe_load(ORIGINAL)
    config["input_dir"] = str(tmp_path / "absent")
    with pytest.raises(ConfigError, match="input_dir: folder .*absent.* not found"):
        check_config(copy.deepcopy(config))
    (tmp_path / "empty").mkdir()
    config["input_dir"] = str(tmp_path / "empty")
    with pytest.raises(ConfigError, match=r"input_dir: no slice found .*215\.\.222 \(filter_index_range\)"):
        check_config(config)


def test_schema_errors_name_the_key():
    config = yaml.safe_load(ORIGINAL)
    config["roi_config"][0]["x_min"] = "127"
    config["unknown_key"] = 1
    with pytest.raises(ConfigError) as err:
        validate_schema(config)
    assert "roi_config[0].x_min" in str(err.value) and "unknown_key" in str(err.value)


def test_roi_rules():
    from anodect.config import Roi
    assert roi_problems([Roi("a", 10, 10, 5, 20)], None)[0].startswith("roi_config[0] (a): empty box")
    assert "same width x height" in roi_problems([Roi("a", 0, 0, 10, 10), Roi("b", 0, 0, 12, 10)], None)[0]
    assert "duplicate ROI name" in roi_problems([Roi("a", 0, 0, 10, 10), Roi("a", 20, 0, 30, 10)], None)[0]
    assert roi_problems([Roi("a", 0, 0, 10, 10)], (10, 10)) == []
    assert "outside" in roi_problems([Roi("a", 0, 0, 11, 10)], (10, 10))[0]


def test_demo_folders_are_not_required_to_exist(tmp_path):
    config = load_config(REPO / "config" / "config.yaml")
    config["demo"]["out_dir"] = str(tmp_path / "demo")
    config["input_dir"] = str(tmp_path / "demo" / "scans" / "test")
    config["training"] = {"normal_dir": str(tmp_path / "demo" / "scans" / "train_normal"),
                          "annotated_dir": str(tmp_path / "demo" / "scans" / "train_defect"),
                          "annotations_dir": str(tmp_path / "demo" / "annotations" / "train_defect")}
    check_config(config)
    assert all(s.generated for s in sources(config))


def test_model_folders_are_checked_up_front(tmp_path):
    config = _original(tmp_path)
    config["patchcore"] = {"model": "original"}
    config["output_dir_model_patchcore"] = str(tmp_path / "models" / "elsewhere")
    with pytest.raises(ConfigError, match=r"output_dir_model_patchcore: .* lacks nnscorer_search_index.faiss, "
                                          r"patchcore_params.pkl"):
        check_config(copy.deepcopy(config))
    config["patchcore"] = {"model": str(tmp_path / "frozen")}
    with pytest.raises(ConfigError, match=r"patchcore.model: .*frozen lacks model.json, memory_bank.npy"):
        check_config(copy.deepcopy(config))
    config["patchcore"] = {"model": "train"}
    with pytest.raises(ConfigError, match="needs training.normal_dir"):
        check_config(config)


def test_a_broken_slice_regex_names_the_key(tmp_path):
    config = _original(tmp_path)
    config["discovery"] = {"slice_regex": "_(\\d{4}\\.tif"}
    with pytest.raises(ConfigError, match="discovery.slice_regex"):
        check_config(config)


def test_threads_and_model_choice_do_not_reach_job_params():
    config = load_config(REPO / "config" / "config.yaml")
    train, score = patchcore_params(config, "train"), patchcore_params(config, "score")
    assert "threads" not in train and "threads" not in score and "model" not in train
    assert set(score) == {"batch_size", "device", "weights_path", "download_weights"}
    assert train["coreset_fraction"] == 0.1 and train["layers"] == ["blocks.2"]  # as config.yaml sets it


def test_each_job_depends_only_on_its_own_settings():
    config = load_config(REPO / "config" / "config.yaml")

    changed = copy.deepcopy(config)
    changed["patchcore_threshold"] = 3.5
    changed["rfdetr"]["threads"] += 1
    changed["rfdetr"]["score_floor"] = 0.2
    assert decision_params(changed, "rfdetr") == decision_params(config, "rfdetr")
    assert decision_params(changed, "patchcore") != decision_params(config, "patchcore")
    assert rfdetr_params(changed, "train") == rfdetr_params(config, "train")
    assert rfdetr_params(changed, "dataset") == rfdetr_params(config, "dataset")
    assert rfdetr_params(changed, "predict") != rfdetr_params(config, "predict")


def test_config_readme_explains_every_schema_key():
    from anodect.config import SCHEMA_PATH

    readme = (REPO / "config" / "README.md").read_text(encoding="utf-8")
    schema = yaml.safe_load(Path(SCHEMA_PATH).read_text(encoding="utf-8"))

    def leaves(node, prefix=""):
        for key, sub in (node.get("properties") or {}).items():
            path = f"{prefix}.{key}" if prefix else key
            if isinstance(sub, dict) and sub.get("properties"):
                yield from leaves(sub, path)
            else:
                yield path

    # A key is explained in its own row, or inside its parent's row (`rfdetr.early_stopping`: `{enabled, ...}`).
    missing = [k for k in leaves(schema) if f"`{k}`" not in readme
               and not (f"`{k.rsplit('.', 1)[0]}`" in readme and k.rsplit(".", 1)[-1] in readme)]
    assert not missing, missing


def test_auto_threshold_needs_a_model_that_set_one(tmp_path):
    """The original tool's model sets no threshold; a model folder without auto_threshold neither."""
    config = _original(tmp_path)
    config["patchcore_threshold"] = "auto"
    with pytest.raises(ConfigError, match="patchcore_threshold: auto needs a PatchCore model trained by anodect"):
        check_config(copy.deepcopy(config))
    folder = tmp_path / "frozen"
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps({"format": "anodect-patchcore/1", "backbone": "efficientnet_lite0"}))
    (folder / "memory_bank.npy").write_bytes(b"")
    config["patchcore"] = {"model": str(folder)}
    with pytest.raises(ConfigError, match="set no automatic volume threshold"):
        check_config(copy.deepcopy(config))
    config["patchcore_threshold"] = 4.0
    check_config(config)


def test_settings_classes_default_to_the_schemas_defaults():
    """Code that builds settings directly gets what the pipeline gets: a settings class built from
    the schema's defaults equals the class's own defaults (the coreset fraction once said 0.1 here
    and 0.01 there; RF-DETR's epochs 20 here and 8 there)."""
    from anodect.config import schema_defaults
    from anodect.discovery import DiscoverySettings
    from anodect.patchcore.model import PatchCoreSettings
    from anodect.patchcore.volume import VolumeSettings
    from anodect.rfdetr.dataset import DatasetSettings
    from anodect.rfdetr.model import TrainSettings
    from anodect.tracking import TrackingSettings

    defaults = schema_defaults()
    sections = {PatchCoreSettings: defaults["patchcore"], VolumeSettings: defaults["patchcore"]["volume"],
                TrainSettings: defaults["rfdetr"], DatasetSettings: defaults["rfdetr"]["dataset"],
                DiscoverySettings: defaults["discovery"]}
    for cls, section in sections.items():
        assert cls.from_config(section) == cls(), cls.__name__
    tracking = {k: defaults["decisions"][k] for k in ("min_consecutive_slices", "max_gap", "link_margin")}
    assert TrackingSettings(**tracking) == TrackingSettings()


def test_job_params_are_the_keys_the_schema_marks_for_the_job():
    """One list of what shapes a model: the schema's x-jobs. The settings classes hold exactly those keys,
    so a key added to a class and not marked (or marked and not used) fails here."""
    from dataclasses import fields

    from anodect.config import schema_defaults
    from anodect.patchcore.model import PatchCoreSettings
    from anodect.rfdetr.model import TrainSettings

    config = schema_defaults()
    assert set(patchcore_params(config, "train")) == {f.name for f in fields(PatchCoreSettings)}
    folded = {"patience", "min_delta"}  # rfdetr.early_stopping's sub-keys, flattened in TrainSettings
    assert set(rfdetr_params(config, "train")) == {f.name for f in fields(TrainSettings)} - folded
    assert set(rfdetr_params(config, "predict")) == {"score_floor", "predict_batch_size", "trust_checkpoint",
                                                      "device"}


def test_the_schema_reads_the_same_with_libyaml_and_pure_python():
    import yaml

    from anodect.config import SCHEMA_PATH, load_schema

    text = Path(SCHEMA_PATH).read_text(encoding="utf-8")
    assert load_schema() == yaml.load(text, Loader=yaml.SafeLoader)
    schema = load_schema()
    schema["properties"].clear()  # a caller's change stays its own
    assert load_schema()["properties"]


def test_every_problem_that_can_be_found_is_in_one_message_each_once(tmp_path):
    """A schema error, a reversed range, a missing input folder and an ROI outside two training
    folders' images: one message, each problem once (the ROI's naming both folders)."""
    config = _original(tmp_path, image_size=800)  # the right ROI (x 733..900) is outside 800 px
    config["training"] = {"normal_dir": str(tmp_path / "input"), "annotated_dir": str(tmp_path / "input")}
    config["input_dir"] = str(tmp_path / "absent")
    config["filter_index_range"] = {"min": 222, "max": 215}
    config["rf_detr_threshold"] = "high"
    with pytest.raises(ConfigError) as err:
        check_config(config)
    text = str(err.value)
    assert "rf_detr_threshold: 'high' is not of type 'number'" in text
    assert "filter_index_range: min (222) is greater than max (215)" in text
    assert f"input_dir: folder {str(tmp_path / 'absent')!r} not found" in text
    assert text.count("roi_config[1] (right)") == 1
    assert "(image size from training.normal_dir, training.annotated_dir)" in text
    assert "no slice found" not in text  # the folders are looked at without the reversed range


def test_a_problem_with_a_value_the_users_file_left_out_says_where_it_came_from(tmp_path):
    from anodect.preflight import defaulted_keys

    mine = tmp_path / "mine.yaml"
    mine.write_text("roi_config: []\n")
    defaulted = defaulted_keys(REPO / "config" / "config.yaml", [str(mine)], {"seed": 3})
    assert "input_dir" in defaulted and "roi_config" not in defaulted and "seed" not in defaulted
    assert defaulted_keys(REPO / "config" / "config.yaml", []) == {}
    config = _original(tmp_path)
    config["input_dir"] = str(tmp_path / "absent")
    with pytest.raises(ConfigError, match=r"input_dir: folder .* not found \[input_dir is not in your config "
                                          r"file: this value is .*config\.yaml's\]"):
        check_config(config, defaulted=defaulted)


def test_model_files_are_checked_before_any_job(tmp_path):
    """A truncated memory bank, a hostile params pickle and a faiss file that is no flat index are
    named by the config check, not by a scoring job after the crops ran."""
    import hashlib
    import os
    import pickle

    config = _original(tmp_path)
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    np.save(frozen / "memory_bank.npy", np.zeros((50, 8), np.float32))
    whole = hashlib.sha256((frozen / "memory_bank.npy").read_bytes()).hexdigest()
    (frozen / "model.json").write_text(json.dumps({"format": "anodect-patchcore/1", "bank_sha256": whole}))
    with open(frozen / "memory_bank.npy", "r+b") as fh:
        fh.truncate(1000)
    config["patchcore"] = {"model": str(frozen)}
    config["patchcore_threshold"] = 3.0
    with pytest.raises(ConfigError, match=r"patchcore.model: .*memory_bank.npy does not match the sha256"):
        check_config(copy.deepcopy(config))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    original = Path(config["output_dir_model_patchcore"])
    (original / "patchcore_params.pkl").write_bytes(pickle.dumps(Evil()))
    (original / "nnscorer_search_index.faiss").write_bytes(b"IxHN" + bytes(60))
    config["patchcore"] = {"model": "original"}
    with pytest.raises(ConfigError) as err:
        check_config(config)
    assert "refused: the pickle asks to import" in str(err.value)
    assert "is not a flat L2 index" in str(err.value)


def test_a_pod_study_without_truth_or_listed_cells_stops_before_any_job(tmp_path):
    from anodect.planning import pod_enabled

    config = _original(tmp_path)
    assert not pod_enabled(check_config(copy.deepcopy(config)))  # a user's scans: off unless asked
    config["pod"] = {"enabled": True}
    with pytest.raises(ConfigError, match=r"pod.cells: auto .* no truth .*pod.enabled: false"):
        check_config(copy.deepcopy(config))
    config["pod"] = {"enabled": True, "cells": ["[B1]"]}
    assert pod_enabled(check_config(config))
