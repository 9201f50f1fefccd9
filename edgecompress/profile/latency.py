"""Pipeline stage "profile": CPU latency and memory of exported models (onnxruntime or OpenVINO), each in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.table import Table

from ..errors import EdgeCompressError
from .runtimes import Runtime, get_runtime

_SOURCE_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class LatencyStats:
    """Single-input latency over ``runs`` timed inferences, and what the model costs in memory and on disk."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    runs: int
    peak_memory_mb: float  # peak RSS increase from creating the session and running it
    file_size_bytes: int


def _stats(times_ms: list[float], peak_memory_mb: float, file_size_bytes: int) -> LatencyStats:
    times = np.asarray(times_ms)
    return LatencyStats(
        median_ms=float(np.median(times)), p90_ms=float(np.percentile(times, 90)), mean_ms=float(times.mean()),
        min_ms=float(times.min()), runs=len(times), peak_memory_mb=float(peak_memory_mb),
        file_size_bytes=file_size_bytes,
    )


def profile_onnx(
    onnx_path: str | Path,
    *,
    input_shape: tuple[int, ...],
    warmup: int = 10,
    runs: int = 100,
    threads: int | None = None,
    progress: bool = False,
    seed: int = 0,
    runtime: str = "onnxruntime",
) -> LatencyStats:
    """Time ``onnx_path`` on the CPU with ``runtime`` (a name of :data:`~edgecompress.profile.runtimes.RUNTIMES`) in a fresh Python process.

    Inputs are seeded standard-normal float data, so models profiled with the same seed see the same input.
    """
    times, peak = _measure(Path(onnx_path), input_shape, warmup, runs, threads, progress, seed, runtime)
    return _stats(times, peak, Path(onnx_path).stat().st_size)


def _measure(
    onnx_path: Path, input_shape: tuple[int, ...], warmup: int, runs: int, threads: int | None, progress: bool, seed: int,
    runtime: str = "onnxruntime",
) -> tuple[list[float], float]:
    """Run the worker once; returns its per-run times (ms) and peak memory (MB)."""
    measured = run_worker(onnx_path, input_shape, warmup=warmup, runs=runs, threads=threads, progress=progress, seed=seed, runtime=runtime)
    return measured["times_ms"], measured["peak_memory_mb"]


def run_worker(
    model_path: str | Path, input_shape: tuple[int, ...], *, warmup: int, runs: int, threads: int | None = None,
    progress: bool = False, seed: int = 0, runtime: str | Runtime = "onnxruntime", tegrastats_ms: int = 0,
) -> dict:
    """Time ``model_path`` in ``runtime`` in a fresh worker process (:mod:`.worker`); returns what the worker measured:
    ``times_ms``, ``wall_s``, ``peak_memory_mb`` and ``tegrastats`` (a summary with ``tegrastats_ms`` on a Jetson, else None).
    ``runtime`` is a registered name or a :class:`Runtime` record (one not registered, such as onnxruntime's CUDA provider)."""
    model_path = Path(model_path)
    runner = runtime.runner if isinstance(runtime, Runtime) else get_runtime(runtime).runner
    runtime = runtime.name if isinstance(runtime, Runtime) else runtime
    if not model_path.is_file():
        raise EdgeCompressError(f"model to profile not found: {model_path}; run the export or engine stage first")
    if runs < 1 or warmup < 0:
        raise EdgeCompressError(f"runs must be >= 1 and warmup >= 0 (got runs={runs}, warmup={warmup})")
    command = [
        sys.executable, "-m", "edgecompress.profile", str(model_path),  # the worker (profile/__main__.py)
        "--shape", ",".join(str(dim) for dim in input_shape), "--warmup", str(warmup), "--runs", str(runs),
        "--threads", str(threads or 0), "--seed", str(seed), "--runtime", runner, "--tegrastats-ms", str(tegrastats_ms),
        *(["--progress"] if progress else []),
    ]
    # The worker imports edgecompress from this source tree even when the package is not installed, and the
    # runner's module from where this process finds it.
    path = [str(_SOURCE_ROOT), *(entry for entry in sys.path if entry and os.path.isdir(entry))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(path))}
    done = subprocess.run(
        command, stdout=subprocess.PIPE, stderr=None if progress else subprocess.PIPE, text=True, env=env
    )
    if done.returncode != 0:
        detail = (done.stderr or "").strip().splitlines()
        raise EdgeCompressError(
            f"profiling {model_path} with {runtime} failed ({detail[-1] if detail else f'exit {done.returncode}'}); "
            f"check that the input shape {','.join(map(str, input_shape))} (--shape, or --input-shape of a build) matches the model's input"
        )
    return json.loads(done.stdout)


def compare_models(
    models: dict[str, str | Path],
    input_shape: tuple[int, ...],
    *,
    warmup: int = 10,
    runs: int = 100,
    rounds: int = 3,
    threads: int | None = None,
    progress: bool = False,
    seed: int = 0,
    runtime: str = "onnxruntime",
) -> dict[str, LatencyStats]:
    """Profile several models with identical settings, input and ``runtime``, interleaved over ``rounds`` rounds.

    Each round runs every model once (``runs`` timed runs in a fresh process); a model's figures
    pool its runs of all rounds, so a transient slowdown of the machine hits every model alike
    instead of skewing the one that happened to be running.
    """
    times: dict[str, list[float]] = {name: [] for name in models}
    peaks: dict[str, float] = {name: 0.0 for name in models}
    for _ in range(rounds):
        for name, path in models.items():
            round_times, peak = _measure(Path(path), input_shape, warmup, runs, threads, progress, seed, runtime)
            times[name] += round_times
            peaks[name] = max(peaks[name], peak)
    return {name: _stats(times[name], peaks[name], Path(path).stat().st_size) for name, path in models.items()}


def stats_table(stats: dict[str, LatencyStats], title: str = "onnxruntime CPU latency") -> Table:
    """A rich table of :func:`compare_models` results, with speed-up against the first model."""
    table = Table(title=title)
    for column in ("model", "median ms", "p90 ms", "min ms", "speed-up", "peak MB", "size MB"):
        table.add_column(column, justify="left" if column == "model" else "right")
    baseline = next(iter(stats.values())).median_ms if stats else 1.0
    for name, row in stats.items():
        table.add_row(
            name, f"{row.median_ms:.2f}", f"{row.p90_ms:.2f}", f"{row.min_ms:.2f}",
            f"{baseline / row.median_ms:.2f}x", f"{row.peak_memory_mb:.1f}", f"{row.file_size_bytes / 2**20:.2f}",
        )
    return table
