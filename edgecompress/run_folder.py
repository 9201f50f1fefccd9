"""A build's run folder: named safely, marked as ours, locked while a build uses it, cleaned only inside.

The tool deletes nothing outside a run folder it created (it holds the marker file ``.edgecompress-run``),
and inside it only its own stage folders, ``.partial/`` and marker files. A second build of the same run
is refused while the first holds the lock (an OS file lock: it is released when its process dies,
even by SIGKILL).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .artifacts import write_text
from .errors import EdgeCompressError

MARKER = ".edgecompress-run"
LOCK = ".lock"
PARTIAL = ".partial"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_run_name(name: str) -> str:
    """A run name is one plain path component: letters, digits and ``-_.``, starting with a letter or digit."""
    if not NAME.fullmatch(name or ""):
        raise EdgeCompressError(f"run name {name!r} must be one folder name of letters, digits, '-', '_' and '.' "
                                "(no '/', not '.' or '..'); pass another --name")
    return name


def run_name_from(text: str) -> str:
    """A valid run name made from free text (a model path, say): other characters become '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._") or "run"


def claim(run_dir: Path) -> None:
    """Make ``run_dir`` a run folder of ours: create it with the marker, or accept one that has the marker.

    An existing folder without the marker is someone else's (a project, a data set): refused unless empty.
    """
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    if run_dir.exists() and not run_dir.is_dir():
        raise EdgeCompressError(f"{run_dir} exists and is not a folder; pass another --name or --runs-dir")
    run_dir.mkdir(exist_ok=True)
    if (run_dir / MARKER).is_file():
        return
    if any(run_dir.iterdir()):
        raise EdgeCompressError(f"{run_dir} exists and was not made by edgecompress (no {MARKER} file); pass another --name or --runs-dir")
    write_text(run_dir / MARKER, json.dumps({"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid()}) + "\n")


_HELD_LOCKS: set = set()  # the open lock files of this process, which a forked child must not keep


def _drop_inherited_locks() -> None:
    """In a forked child (a DataLoader worker): close the parent's lock files, so the lock goes with the parent. A flock
    belongs to the open file, which fork shares: a worker outliving a killed build would otherwise keep its run locked."""
    for handle in list(_HELD_LOCKS):
        handle.close()
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


@contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock for the block; another holder makes this a one-line error naming its PID."""
    import fcntl

    handle = open(run_dir / LOCK, "a+")
    _HELD_LOCKS.add(handle)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise EdgeCompressError(f"run {run_dir} is being built by another process (PID {holder}); wait for it or pass another --name") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        _HELD_LOCKS.discard(handle)
        handle.close()  # closing releases the lock


def discard_unresumable(run_dir: Path, stage_names: tuple[str, ...]) -> None:
    """After a failure keep what a rerun can use (finished stages, training checkpoints); remove only our own leftovers.

    A run folder left with nothing of a build in it is removed, and only if it is ours (it has the marker).
    """
    if not (run_dir / MARKER).is_file():
        return
    partial = run_dir / PARTIAL
    for folder in partial.glob("*"):
        if folder.name in stage_names and not (folder / "checkpoint.pt").is_file():
            shutil.rmtree(folder)
    if partial.is_dir() and not any(partial.iterdir()):
        partial.rmdir()
    ours = {MARKER, LOCK}
    if all(entry.name in ours for entry in run_dir.iterdir()):
        for name in ours:
            (run_dir / name).unlink(missing_ok=True)
        run_dir.rmdir()
