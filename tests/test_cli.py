"""The CLI: targets table, and bad input gives one line and exit status 2."""

from typer.testing import CliRunner

from edgecompress.cli import app

runner = CliRunner()


def test_targets_lists_the_registry():
    result = runner.invoke(app, ["targets"])
    assert result.exit_code == 0
    assert "jetson-nano" in result.output and "sm_53" in result.output and "jetson-agx-orin" in result.output


def test_unknown_target_exits_2(tmp_path):
    result = runner.invoke(app, ["build", "--target", "jetson-banana", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "jetson-banana" in result.output and "edgecompress targets" in result.output


def test_missing_data_exits_2_and_writes_nothing(tmp_path):
    result = runner.invoke(app, ["build", "--target", "cpu", "--data", str(tmp_path / "nope.yaml"), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "nope.yaml" in result.output
    assert not list((tmp_path / "runs").rglob("*.pt"))


def test_empty_calibration_folder_exits_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["build", "--target", "cpu", "--quick", "--calib", str(empty), "--runs-dir", str(tmp_path / "runs"), "--from", "qat"])
    assert result.exit_code == 2
    assert "no images" in result.output


def test_unknown_stage_for_from_exits_2(tmp_path):
    result = runner.invoke(app, ["build", "--from", "polish", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2 and "polish" in result.output


def test_untraceable_model_exits_2_before_training(tmp_path):
    source = tmp_path / "dynamic.py"
    source.write_text(
        "import torch.nn as nn\n"
        "class Dynamic(nn.Module):\n"
        "    def __init__(self, num_classes=10):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 8, 3)\n"
        "    def forward(self, x):\n"
        "        return self.conv(x) if x.sum() > 0 else x\n"
    )
    result = runner.invoke(app, ["build", "--quick", "--model", f"{source}:Dynamic", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "trace" in result.output.lower()
    assert not list((tmp_path / "runs").rglob("model.pt"))


def test_malformed_label_exits_2_naming_file_and_line(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
        Image.new("RGB", (64, 64)).save(tmp_path / "images" / split / "a.jpg")
        (tmp_path / "labels" / split / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n" + ("3 0.5 0.5 0.2\n" if split == "val" else ""))
    (tmp_path / "data.yaml").write_text(f"path: {tmp_path}\ntrain: images/train\nval: images/val\nnames: ['a', 'b', 'c', 'd']\n")
    result = runner.invoke(app, ["build", "--quick", "--data", str(tmp_path / "data.yaml"), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "a.txt:2" in result.output


def test_bad_settings_fail_before_any_stage_runs(tmp_path):
    for option, value, message in [("--prune-ratio", "1.5", "ratio"), ("--calib-method", "foo", "calib-method"), ("--criterion", "taylor", "criterion")]:
        result = runner.invoke(app, ["build", option, value, "--runs-dir", str(tmp_path / "runs")])
        assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "runs").exists()
