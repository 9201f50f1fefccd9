"""A build killed with SIGKILL in the middle of a stage resumes where it stopped and ends with the same report."""

from __future__ import annotations

import json
import signal
import time

from .conftest import build_args, edgecompress, start


def _results(run_dir) -> list[dict]:
    """What a report says about each model, less the timings (they differ between any two runs)."""
    keep = ("model", "metrics_torch", "metrics_onnx", "params", "macs", "onnx_max_abs_error")
    return [{key: row[key] for key in keep} for row in json.loads((run_dir / "report.json").read_text())["models"]]


def test_sigkill_during_training_then_rerun_gives_the_same_report(tiny_project, tmp_path):
    reference = edgecompress(*build_args(tiny_project, tmp_path / "a", "--name", "run", "--epochs", "3"))
    assert reference.returncode == 0, reference.stderr

    runs = tmp_path / "b"
    killed = start(*build_args(tiny_project, runs, "--name", "run", "--epochs", "3"))
    checkpoint = runs / "run" / ".partial" / "baseline" / "checkpoint.pt"
    deadline = time.time() + 300
    while not checkpoint.is_file() and time.time() < deadline:  # one epoch done, the next one running
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL and checkpoint.is_file() and not (runs / "run" / "baseline").exists()

    resumed = edgecompress(*build_args(tiny_project, runs, "--name", "run", "--epochs", "3"))
    assert resumed.returncode == 0, resumed.stderr
    baseline = json.loads((runs / "run" / "baseline" / "manifest.json").read_text())
    assert [row["epoch"] for row in baseline["metrics"]["epochs"]] == [1, 2, 3]
    assert _results(runs / "run") == _results(tmp_path / "a" / "run")
