"""Output polish: the report on stdout and unwrapped, tables readable in 80 columns, a silent profiling worker,
progress helpers, and the lint verdict for a float model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import torch
from onnx import TensorProto, helper
from torch import nn
from typer.testing import CliRunner

import edgecompress.cli as cli
from edgecompress.progress import status, track

runner = CliRunner()
LONG_ROW = "| baseline | " + " | ".join(f"{i:.4f}" for i in range(30)) + " |"  # far wider than 80 columns


def test_build_prints_the_report_on_stdout_unwrapped(tmp_path, monkeypatch):
    report = f"# edgecompress report: unit\n\n{LONG_ROW}\n"
    (tmp_path / "report.md").write_text(report)
    monkeypatch.setattr(cli, "run_build", lambda config: tmp_path)
    result = runner.invoke(cli.app, ["build", "--target", "cpu"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert result.stdout == report  # `edgecompress build ... | cat` gets report.md as written
    assert f"done: {tmp_path}/report.md" in result.stderr and "edgecompress report" not in result.stderr


def test_targets_table_is_readable_in_80_columns():
    from edgecompress.targets import list_targets

    result = runner.invoke(cli.app, ["targets"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in result.stdout
    header = next(line for line in lines if line.startswith("target"))
    assert header.split() == ["target", "arch", "JetPack", "TRT", "int8", "DLA", "memory", "precision"]
    for target in list_targets():  # one whole line per target
        row = next(line for line in lines if line.startswith(target.name + " "))
        assert (target.tensorrt or "–") in row.split() and target.precision in row.split()


def _save(tmp_path: Path, op: str) -> Path:
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], name=f"{op.lower()}0")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    path = tmp_path / f"{op}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_check_verdicts(tmp_path):
    result = runner.invoke(cli.app, ["check", str(_save(tmp_path, "Relu")), "--target", "jetson-orin-nano"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "ok in float (no Q/DQ): 0 errors, 0 warnings, 1 note" in result.stdout
    assert "no Q/DQ in this model" in result.stdout
    result = runner.invoke(cli.app, ["check", str(_save(tmp_path, "Unique")), "--target", "jetson-orin-nano"], env={"COLUMNS": "200"})
    assert result.exit_code == 1 and "unsupported-op" in result.stdout and "errors found: 1 error" in result.stdout


def _tiny_onnx(path: Path) -> Path:
    from edgecompress.export import export_onnx

    return export_onnx(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval(), torch.randn(1, 3, 8, 8), path)


def test_profiling_worker_prints_no_runtime_warning(tmp_path, capfd):
    from edgecompress.profile import compare_models

    path = _tiny_onnx(tmp_path / "tiny.onnx")
    capfd.readouterr()
    stats = compare_models({"a": path, "b": path}, (1, 3, 8, 8), warmup=1, runs=3, rounds=1, progress=True)  # worker stderr -> ours
    assert stats["a"].runs == 3
    err = capfd.readouterr().err
    assert "RuntimeWarning" not in err and "sys.modules" not in err, err


def test_worker_entry_runs_cleanly_even_after_the_package_imported_the_worker(tmp_path):
    """The trap of ``python -m package.module``: runpy warns when the module is already imported. The entry is
    ``python -m edgecompress.profile`` (profile/__main__.py), which no module imports."""
    path = _tiny_onnx(tmp_path / "tiny.onnx")
    code = ("import runpy, sys, edgecompress.profile.worker\n"
            f"sys.argv = ['edgecompress.profile', {str(path)!r}, '--shape', '1,3,8,8', '--runs', '2', '--warmup', '0']\n"
            "runpy.run_module('edgecompress.profile', run_name='__main__', alter_sys=True)\n")
    done = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "RuntimeWarning" not in done.stderr, done.stderr
    assert '"times_ms"' in done.stdout


def test_track_and_status_show_progress_or_stay_quiet(monkeypatch, capsys):
    for quiet in ("1", "0"):
        monkeypatch.setenv("EDGECOMPRESS_QUIET", quiet)
        assert list(track(range(5), "evaluating")) == [0, 1, 2, 3, 4]
        assert list(track(iter("abc"), "calibrating", keep=True)) == ["a", "b", "c"]  # no len: n/?
        with status("planning the pruning"):
            pass
    assert capsys.readouterr().out == ""  # progress never touches stdout
