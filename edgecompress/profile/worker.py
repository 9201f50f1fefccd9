"""Time one ONNX model on the CPU in a fresh process and print the measurements as JSON.

Run as ``python -m edgecompress.profile MODEL --shape 1,3,64,64 [--runtime openvino] ...`` (the package's
``__main__``); a fresh process per model keeps one model's allocations out of the next one's memory figure.

The runtimes are those of :mod:`edgecompress.profile.runtimes`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import psutil

from ..errors import EdgeCompressError
from .runtimes import RUNTIMES, load_runner
from .tegrastats import TegrastatsSampler

def reset_peak_rss() -> None:
    """Reset the kernel's resident-memory high-water mark (Linux; elsewhere the mark since start is used)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def peak_rss_bytes() -> int:
    """High-water mark of this process's resident memory: VmHWM on Linux, ru_maxrss on macOS, else current RSS."""
    try:
        with open("/proc/self/status") as handle:
            line = next(line for line in handle if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return psutil.Process().memory_info().rss
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS


def _progress(enabled: bool, total: int):
    """A rich bar in the project's look, hidden unless asked for (and when EDGECOMPRESS_QUIET=1)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..progress import console

    return Progress(
        TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, disable=not enabled or os.environ.get("EDGECOMPRESS_QUIET") == "1",
    )


def measure(model: str, shape: tuple[int, ...], warmup: int, runs: int, threads: int | None, seed: int,
            progress: bool, runtime: str = "onnxruntime", tegrastats_ms: int = 0) -> dict:
    """Load ``model`` in ``runtime`` (a name of :data:`RUNTIMES` or a runner's import path), warm it up, time ``runs`` single-batch inferences.

    Returns the per-run times (ms), the timed loop's wall time (s), the peak resident memory increase (MB) and,
    with ``tegrastats_ms`` on a Jetson, what tegrastats sampled during the timed loop.
    """
    reset_peak_rss()
    before = psutil.Process().memory_info().rss
    run = load_runner(RUNTIMES[runtime].runner if runtime in RUNTIMES else runtime)(model, shape, threads, seed)
    for _ in range(warmup):
        run()
    times_ms = []
    with _progress(progress, runs) as bar, TegrastatsSampler(tegrastats_ms, enabled=tegrastats_ms > 0) as board:
        shown = runtime.rpartition(":")[2].removesuffix("_runner")  # a runner's import path shows as its function's name
        task = bar.add_task(f"profiling {os.path.basename(model)} ({shown})", total=runs)
        started = time.perf_counter()
        for _ in range(runs):
            start = time.perf_counter()
            run()
            times_ms.append((time.perf_counter() - start) * 1e3)
            bar.advance(task)
        wall_s = time.perf_counter() - started
    return {"times_ms": times_ms, "wall_s": wall_s, "peak_memory_mb": max(peak_rss_bytes() - before, 0) / 2**20,
            "tegrastats": board.summary()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m edgecompress.profile", description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--shape", required=True, help="comma-separated input shape, e.g. 1,3,224,224")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0, help="inference threads (0: the runtime's default)")
    parser.add_argument("--runtime", default="onnxruntime", help="a registered runtime name, or the runner's import path (module:function)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--tegrastats-ms", type=int, default=0, help="sample tegrastats at this interval during the timed runs (0: off)")
    args = parser.parse_args(argv)
    shape = tuple(int(dim) for dim in args.shape.split(","))
    try:
        result = measure(args.model, shape, args.warmup, args.runs, args.threads or None, args.seed, args.progress, args.runtime,
                         args.tegrastats_ms)
    except EdgeCompressError as error:  # the runner's one line, which the parent reports
        raise SystemExit(str(error)) from None
    json.dump(result, sys.stdout)
