"""Time one ONNX model on the CPU in a fresh process and print the measurements as JSON.

Run as ``python -m edgecompress.profile.worker MODEL --shape 1,3,64,64 [--runtime openvino] ...``; a fresh
process per model keeps one model's allocations out of the next one's memory figure.

Runtimes: ``onnxruntime`` (CPU execution provider, all graph optimisations) and ``openvino`` (the CPU
plugin, compiled for the static input shape, fp32 inference precision so a float model is timed in
fp32 even on CPUs with bf16; a Q/DQ model runs its int8 kernels).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable

import numpy as np
import psutil

# onnxruntime input element types we can feed random data to.
INPUT_DTYPES: dict[str, type] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}


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


def random_input(shape: tuple[int, ...], dtype: type, seed: int) -> np.ndarray:
    """Fresh standard-normal data, the same for every model profiled with the same seed."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32).astype(dtype)


def _progress(enabled: bool, total: int):
    """A rich bar in the project's look, hidden unless asked for (and when EDGECOMPRESS_QUIET=1)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..progress import console

    return Progress(
        TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, disable=not enabled or os.environ.get("EDGECOMPRESS_QUIET") == "1",
    )


Runner = Callable[[], object]


def onnxruntime_runner(model: str, shape: tuple[int, ...], threads: int | None, seed: int) -> Runner:
    """A closure running ``model`` on onnxruntime's CPU provider with seeded input of ``shape``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].type not in INPUT_DTYPES:
        raise SystemExit(f"profiling needs one float input; {model} has {[(i.name, i.type) for i in inputs]}")
    feed = {inputs[0].name: random_input(shape, INPUT_DTYPES[inputs[0].type], seed)}
    return lambda: session.run(None, feed)


def openvino_runner(model: str, shape: tuple[int, ...], threads: int | None, seed: int) -> Runner:
    """A closure running ``model`` compiled by OpenVINO's CPU plugin for ``shape`` (fp32 precision hint)."""
    try:
        import openvino as ov
    except ImportError:
        raise SystemExit("openvino is not installed; pip install 'edgecompress[openvino]' to profile with it") from None
    core = ov.Core()
    network = core.read_model(model)
    if len(network.inputs) != 1 or not network.input().get_element_type().is_real():
        raise SystemExit(f"profiling needs one float input; {model} has {[str(i) for i in network.inputs]}")
    network.reshape({network.input(): ov.PartialShape(list(shape))})
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
    request = core.compile_model(network, "CPU", config).create_infer_request()
    dtype = np.float16 if network.input().get_element_type() == ov.Type.f16 else np.float32
    feed = random_input(shape, dtype, seed)
    return lambda: request.infer({0: feed})


RUNNERS: dict[str, Callable[[str, tuple[int, ...], int | None, int], Runner]] = {
    "onnxruntime": onnxruntime_runner,
    "openvino": openvino_runner,
}


def measure(model: str, shape: tuple[int, ...], warmup: int, runs: int, threads: int | None, seed: int,
            progress: bool, runtime: str = "onnxruntime") -> dict:
    """Load ``model`` in ``runtime``, warm it up, time ``runs`` single-batch inferences; return times and memory."""
    reset_peak_rss()
    before = psutil.Process().memory_info().rss
    run = RUNNERS[runtime](model, shape, threads, seed)
    for _ in range(warmup):
        run()
    times_ms = []
    with _progress(progress, runs) as bar:
        task = bar.add_task(f"profiling {os.path.basename(model)} ({runtime})", total=runs)
        for _ in range(runs):
            start = time.perf_counter()
            run()
            times_ms.append((time.perf_counter() - start) * 1e3)
            bar.advance(task)
    return {"times_ms": times_ms, "peak_memory_mb": max(peak_rss_bytes() - before, 0) / 2**20}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--shape", required=True, help="comma-separated input shape, e.g. 1,3,224,224")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0, help="inference threads (0: the runtime's default)")
    parser.add_argument("--runtime", choices=sorted(RUNNERS), default="onnxruntime")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    shape = tuple(int(dim) for dim in args.shape.split(","))
    result = measure(args.model, shape, args.warmup, args.runs, args.threads or None, args.seed, args.progress, args.runtime)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
