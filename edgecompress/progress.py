"""One look for every progress bar (training, calibration, profiling)."""

from __future__ import annotations

import os

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


def progress_bar() -> Progress:
    """A rich progress bar showing the task, steps done, elapsed and remaining time and a running loss.

    Set EDGECOMPRESS_QUIET=1 to hide the bars (tests, logs).
    """
    return Progress(
        TextColumn("[bold blue]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=os.environ.get("EDGECOMPRESS_QUIET") == "1",
        transient=False,
    )
