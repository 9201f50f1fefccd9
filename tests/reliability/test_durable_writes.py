"""Writes survive crashes: files and folders are flushed before they are renamed into place, a folder is
replaced as a whole or not at all, and a crash between the steps of a folder swap is recovered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgecompress import artifacts
from edgecompress.artifacts import atomic_dir, atomic_path, read_marker, recover_dir, replace_dir, write_json, write_marker
from edgecompress.errors import EdgeCompressError
from edgecompress.quantize_job import check_out_folder


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def _old_folder(root: Path) -> Path:
    folder = root / "out"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("old a")
    (folder / "sub" / "b.txt").write_text("old b")
    return folder


def test_atomic_path_flushes_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b))[1])
    write_json(tmp_path / "manifest.json", {"a": 1})
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"]
    assert events[0][1].endswith(".tmp") and events[1][1] == str(tmp_path / "manifest.json") and events[2][1] == str(tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text()) == {"a": 1}


def test_atomic_path_leaves_the_old_file_when_the_block_fails(tmp_path):
    write_marker(tmp_path / ".fingerprint", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / ".fingerprint") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert read_marker(tmp_path / ".fingerprint") == "old"
    assert [p.name for p in tmp_path.iterdir()] == [".fingerprint"]


def test_markers_read_back_or_none(tmp_path):
    assert write_marker(tmp_path / "m", "abc123") == tmp_path / "m"
    assert read_marker(tmp_path / "m") == "abc123"
    assert read_marker(tmp_path / "missing") is None
    (tmp_path / "garbled").write_bytes(b"\xff\xfe\x00garbage")
    assert read_marker(tmp_path / "garbled") is None


def test_atomic_dir_replaces_a_folder_as_a_whole(tmp_path):
    folder = _old_folder(tmp_path)
    with atomic_dir(folder) as new:
        assert new.parent == tmp_path and new != folder and not any(new.iterdir())
        assert _tree(folder) == {"a.txt": "old a", "sub/b.txt": "old b"}  # readers still see the old folder
        (new / "c.txt").write_text("new c")
    assert _tree(folder) == {"c.txt": "new c"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary or old folder left
    assert folder.stat().st_mode & 0o777 == 0o755
    with atomic_dir(tmp_path / "fresh") as new:  # a folder that did not exist yet
        (new / "x").write_text("x")
    assert _tree(tmp_path / "fresh") == {"x": "x"}


def test_failure_inside_atomic_dir_leaves_the_old_folder(tmp_path):
    folder = _old_folder(tmp_path)
    with pytest.raises(EdgeCompressError):
        with atomic_dir(folder) as new:
            (new / "model.pt").write_text("half")
            raise EdgeCompressError("export failed")
    assert _tree(folder) == {"a.txt": "old a", "sub/b.txt": "old b"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_replace_dir_moves_a_prepared_folder_in(tmp_path):
    folder = _old_folder(tmp_path)
    partial = tmp_path / ".partial" / "out"
    partial.mkdir(parents=True)
    (partial / "manifest.json").write_text("{}")
    assert replace_dir(partial, folder) == folder
    assert _tree(folder) == {"manifest.json": "{}"} and not partial.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".partial", "out"]


CRASH = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from edgecompress.artifacts import atomic_dir
    folder, crash_at, after = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "after"
    real, calls = os.rename, []

    def rename(source, target):
        calls.append(target)
        if len(calls) == crash_at and not after:
            os._exit(9)  # killed: no cleanup runs
        real(source, target)
        if len(calls) == crash_at:
            os._exit(9)

    os.rename = rename
    with atomic_dir(folder) as new:
        (new / "c.txt").write_text("new c")
""")


@pytest.mark.parametrize("crash_at, after, expected", [
    (1, "before", {"a.txt": "old a", "sub/b.txt": "old b"}),  # killed before the old folder moved aside
    (2, "before", {"a.txt": "old a", "sub/b.txt": "old b"}),  # old folder aside, new one not in place: the old comes back
    (2, "after", {"c.txt": "new c"}),  # new one in place, old one not yet deleted: the old one goes
])
def test_a_crash_between_the_steps_is_recovered(tmp_path, crash_at, after, expected):
    folder = _old_folder(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", CRASH, str(folder), str(crash_at), after], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 9, result.stderr
    left = sorted(p.name for p in tmp_path.iterdir())
    assert any(name.startswith(".out.new-") for name in left) or after == "after"
    if crash_at == 2 and after == "before":
        assert "out" not in left and ".out.old" in left  # the window a reader could hit: recovery closes it
    recover_dir(folder)
    assert _tree(folder) == expected
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    with atomic_dir(folder) as new:  # and the next write works as usual
        (new / "d.txt").write_text("d")
    assert _tree(folder) == {"d.txt": "d"}


def test_atomic_dir_recovers_before_it_starts(tmp_path):
    folder = _old_folder(tmp_path)
    os.rename(folder, tmp_path / ".out.old")  # as a crash between the steps leaves it
    (tmp_path / ".out.new-stale").mkdir()
    with pytest.raises(RuntimeError):
        with atomic_dir(folder):
            assert _tree(folder) == {"a.txt": "old a", "sub/b.txt": "old b"}
            raise RuntimeError("stop")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_fsync_covers_every_file_of_a_replaced_folder(tmp_path, monkeypatch):
    synced = []
    real = artifacts._fsync_file
    monkeypatch.setattr(artifacts, "_fsync_file", lambda path: (synced.append(Path(path).name), real(path))[1])
    with atomic_dir(tmp_path / "out") as new:
        (new / "sub").mkdir()
        (new / "model.onnx").write_bytes(b"onnx")  # written directly, not through atomic_path
        (new / "sub" / "x.txt").write_text("x")
    assert sorted(synced) == ["model.onnx", "x.txt"]


def test_quantize_out_must_be_new_empty_or_its_own_output(tmp_path):
    check_out_folder(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_out_folder(tmp_path / "empty")
    previous = tmp_path / "previous"
    previous.mkdir()
    for name in ("model.pt", "model.onnx", "manifest.json"):
        (previous / name).write_text("x")
    check_out_folder(previous)
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "train.py").write_text("x")
    for folder, message in [(tmp_path / "project", "train.py"), (tmp_path / "project" / "train.py", "is a file")]:
        with pytest.raises(EdgeCompressError, match=message):
            check_out_folder(folder)
