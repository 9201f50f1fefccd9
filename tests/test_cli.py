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
