"""Run folders are the tool's own: it deletes nothing outside one it made, and one build at a time uses it."""

from __future__ import annotations

import json
import os
import time

import pytest

from edgecompress.errors import EdgeCompressError
from edgecompress.run_folder import MARKER, check_run_name, claim, locked

from .conftest import build_args, edgecompress, one_line_error, refusal, start


def _tree(root) -> set[str]:
    """Every path under ``root``, less the runs folder's shared data cache (``_data/``: decoded-image checks)."""
    return {str(path.relative_to(root)) for path in root.rglob("*") if "_data" not in path.relative_to(root).parts}


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/abs/path", "../escape", "-dash", "spa ce"])
def test_a_run_name_is_one_plain_folder_name(tiny_project, tmp_path, name):
    runs = tmp_path / "project" / "runs"
    (runs / "other-run").mkdir(parents=True)
    (runs / "other-run" / "model.pt").write_text("someone's result")
    (tmp_path / "project" / "src.py").write_text("print('sources')")
    before = _tree(tmp_path)
    name = name if name != "/abs/path" else str(tmp_path / "project")
    error = one_line_error(refusal(*build_args(tiny_project, runs, "--name", name)))
    assert "run name" in error and "--name" in error
    assert _tree(tmp_path) == before


def test_a_folder_with_foreign_files_is_refused_and_kept(tiny_project, tmp_path):
    runs = tmp_path / "runs"
    (runs / "mine").mkdir(parents=True)
    (runs / "mine" / "notes.txt").write_text("not a run")
    error = one_line_error(edgecompress(*build_args(tiny_project, runs, "--name", "mine")))
    assert "not made by edgecompress" in error
    assert (runs / "mine" / "notes.txt").read_text() == "not a run" and _tree(runs) == {"mine", "mine/notes.txt"}


def test_a_failed_first_stage_removes_only_the_new_run_folder(tiny_project, tmp_path):
    runs = tmp_path / "runs"
    (runs / "other-run").mkdir(parents=True)
    (runs / "other-run" / "report.md").write_text("kept")
    broken = tiny_project / "broken.py"
    broken.write_text("def tiny(num_classes=10):\n    raise ValueError('no such layer')\n")
    args = build_args(tiny_project, runs, "--name", "new")
    args[args.index("--model") + 1] = f"{broken}:tiny"
    result = edgecompress(*args)
    assert result.returncode == 2 and "no such layer" in result.stderr
    assert _tree(runs) == {"other-run", "other-run/report.md"}


def test_a_second_build_of_a_locked_run_exits_2_naming_the_holder(tiny_project, tmp_path):
    runs = tmp_path / "runs"
    run_dir = runs / "busy"
    claim(run_dir)
    with locked(run_dir):
        error = one_line_error(edgecompress(*build_args(tiny_project, runs, "--name", "busy")))
    assert f"PID {os.getpid()}" in error and "another process" in error
    assert _tree(run_dir) == {MARKER, ".lock"}


def test_two_concurrent_builds_leave_one_finished_run_and_one_refusal(tiny_project, tmp_path):
    runs = tmp_path / "runs"
    first = start(*build_args(tiny_project, runs, "--name", "same"))
    lock = runs / "same" / ".lock"
    deadline = time.time() + 120
    while not (lock.is_file() and lock.read_text().strip()) and time.time() < deadline:
        time.sleep(0.1)
    second = edgecompress(*build_args(tiny_project, runs, "--name", "same"))
    first_out, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_err
    assert f"PID {first.pid}" in one_line_error(second)
    assert json.loads((runs / "same" / "report.json").read_text())["models"]
    assert (runs / "same" / "config.json").is_file() and not (runs / "same" / ".partial").exists()


def test_names_and_claims_in_python():
    assert check_run_name("yolo-mbv2_cpu.v2") == "yolo-mbv2_cpu.v2"
    with pytest.raises(EdgeCompressError, match="run name"):
        check_run_name("..")


def test_a_forked_child_does_not_keep_the_run_locked(tmp_path):
    """A DataLoader worker is a fork of the build: it must not hold the run's lock once the build is gone (killed)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    started = context.Event()
    with locked(tmp_path):
        child = context.Process(target=_signal_then_sleep, args=(started,))
        child.start()
        assert started.wait(30)  # the child runs (its fork handlers have run)
    try:
        with locked(tmp_path):  # the build let go; its child still runs
            assert child.is_alive()
    finally:
        child.kill()
        child.join()


def _signal_then_sleep(started) -> None:
    started.set()
    time.sleep(30)
