"""One look for every progress display (training, calibration, evaluation, export, profiling), all on stderr.

Set EDGECOMPRESS_QUIET=1 to hide them (tests, logs). Loops use :func:`track`, steps without a count
:func:`status`, the training loop :func:`progress_bar` with its running loss.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.errors import LiveError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)

T = TypeVar("T")


def quiet() -> bool:
    """True when EDGECOMPRESS_QUIET=1 hides every progress display."""
    return os.environ.get("EDGECOMPRESS_QUIET") == "1"


def progress_bar(*, loss: bool = True, transient: bool = False) -> Progress:
    """A rich progress bar showing the task, steps done, elapsed and remaining time and (``loss=True``) a running loss.

    With ``loss`` every task needs a ``loss`` field (``add_task(..., loss=float("nan"))``). ``transient`` bars
    disappear when done.
    """
    columns: list[ProgressColumn] = [TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if loss:
        columns.append(TextColumn("loss {task.fields[loss]:.4f}"))
    return Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=quiet(), transient=transient)


def track(items: Iterable[T], description: str, total: int | None = None, *, keep: bool = False) -> Iterator[T]:
    """Yield ``items`` while a bar counts them (``total`` defaults to ``len(items)``; unknown shows ``n/?``).

    The bar disappears when the loop ends unless ``keep``: a loop that runs often (evaluation) leaves no trail.
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    bar = progress_bar(loss=False, transient=not keep)
    try:
        bar.start()
    except LiveError:  # inside another display, on a rich that cannot nest them: no bar of its own
        yield from items
        return
    try:
        yield from bar.track(items, total=total, description=description)
    finally:
        bar.stop()


@contextmanager
def status(description: str) -> Iterator[None]:
    """A spinner with ``description`` while one uncounted step runs (tracing a model, planning the pruning)."""
    if quiet():
        yield
        return
    with console.status(f"[bold blue]{description}"):
        yield


@contextmanager
def silenced(enabled: bool = True) -> Iterator[None]:
    """With ``enabled``, hide every log line and progress display of this process for the block (the other processes
    of a distributed build: rank 0 speaks for them). Errors are printed after the block, as usual."""
    before = console.quiet
    console.quiet = before or enabled
    try:
        yield
    finally:
        console.quiet = before
