import pandas as pd

from anodect.cli import main

from conftest import tiny_config, write_config


def test_demo_check_and_discover_commands(tmp_path, capsys):
    config = tiny_config(tmp_path, demo_enabled=True)
    config["demo"].update(n_train_normal=1, n_train_defect=0, n_test=1)
    path = write_config(tmp_path / "config.yaml", config)
    assert main(["demo", "--config", str(path)]) == 0
    assert "20 slices of 2 cells" in capsys.readouterr().out
    config["demo"]["enabled"] = False
    config["training"]["annotated_dir"] = None
    config["rfdetr"] = {"model": "none"}
    path = write_config(tmp_path / "config.yaml", config)
    assert main(["check-config", "--config", str(path)]) == 0
    assert main(["discover", "--config", str(path), "--out", str(tmp_path / "scans.tsv")]) == 0
    sheet = pd.read_csv(tmp_path / "scans.tsv", sep="\t")
    assert sorted(sheet["role"]) == ["inspect", "train_normal"]


def test_a_bad_config_exits_2_with_the_message(tmp_path, capsys):
    config = tiny_config(tmp_path, demo_enabled=False)
    config["input_dir"] = str(tmp_path / "absent")
    path = write_config(tmp_path / "config.yaml", config)
    assert main(["check-config", "--config", str(path)]) == 2
    assert "input_dir: folder" in capsys.readouterr().err
