"""The timing loop shared by TensorRT engines and torch modules, and the torch-only timing into the latency report.

Host latency is ``perf_counter`` around one whole step (on a GPU: H2D + execute + D2H + synchronize); GPU compute
is the buffer backend's CUDA events around the execute alone.
"""

from __future__ import annotations

import platform
import time as clock
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import EdgeCompressError
from ..helpers import evaluating
from .buffers import MIB, BufferBackend, TorchBackend
from .trtexec_reports import make_report, model_entry

@dataclass
class Timings:
    host_ms: list[float]
    gpu_ms: list[float] | None
    wall_s: float  # first start to last end of the timed inferences


def timing_loop(step: Callable[[Any, Any], None], iterations: int, warmup: int, duration_s: float | None = None,
                backend: BufferBackend | None = None) -> Timings:
    """Run ``step(start_event, end_event)`` ``warmup`` times, then time at least ``iterations`` runs (and at least
    ``duration_s`` seconds when given). ``step`` records the backend's events around its GPU work and returns
    synchronized; without a backend (on a CPU) it gets ``(None, None)`` and only host time is kept."""
    if iterations < 1 or warmup < 0 or (duration_s is not None and duration_s < 0):
        raise EdgeCompressError(f"iterations must be >= 1, warmup >= 0 and duration_s >= 0 "
                                f"(got {iterations}, {warmup}, {duration_s})")
    events = (backend.event(), backend.event()) if backend is not None else (None, None)
    for _ in range(warmup):
        step(*events)
    host_ms: list[float] = []
    gpu_ms: list[float] = []
    began = clock.perf_counter()
    ended = began
    while len(host_ms) < iterations or (duration_s is not None and ended - began < duration_s):
        start = clock.perf_counter()
        step(*events)
        ended = clock.perf_counter()
        host_ms.append((ended - start) * 1e3)
        if backend is not None:
            gpu_ms.append(backend.elapsed_ms(*events))
    return Timings(host_ms, gpu_ms if backend is not None else None, ended - began)


def time_torch_module(module: Any, example: Any, iterations: int = 100, warmup: int = 10,
                      duration_s: float | None = None, *, model_path: str | Path | None = None) -> dict:
    """A latency report of ``module(example)`` in eval mode without gradients, on the device ``example`` is on.

    On a GPU the forward runs on the torch buffer backend's stream between its events (GPU compute) and host latency
    includes launch and synchronize; on a CPU only host latency (``perf_counter``) is measured.
    """
    import torch

    on_gpu = example.is_cuda
    backend = TorchBackend(example.device.index or 0) if on_gpu else None

    def step(start: Any, end: Any) -> None:
        if backend is None:
            module(example)
            return
        with torch.cuda.stream(backend.stream):
            backend.record(start)
            module(example)
            backend.record(end)
        backend.synchronize()

    with evaluating(module):
        if backend is not None:
            backend.stream.wait_stream(torch.cuda.current_stream(backend.device))  # the example is ready
            torch.cuda.reset_peak_memory_stats(backend.device)
            allocated = torch.cuda.memory_allocated(backend.device)
        timings = timing_loop(step, iterations, warmup, duration_s, backend)
    state_bytes = sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
    batch = int(example.shape[0]) if example.dim() else 1
    dtype = str(example.dtype).removeprefix("torch.")
    return make_report(
        model=model_entry(model_path, "torch") if model_path else
        {"path": f"{type(module).__qualname__} (in memory)", "bytes": state_bytes, "format": "torch", "stage": None},
        runtime={"name": "torch", "version": torch.__version__, "device": str(example.device) if on_gpu else "CPU",
                 "precision": _PRECISIONS.get(dtype)},
        machine={"cpu": platform.processor() or platform.machine() or None,
                 "gpu": backend.device_name() if backend is not None else None},
        inputs=[{"name": "input", "shape": [int(dim) for dim in example.shape], "dtype": dtype}],
        settings={"warmup": warmup, "iterations": len(timings.host_ms), "duration_s": duration_s,
                  "threads": None if on_gpu else torch.get_num_threads(), "cuda_graph": False, "batch": batch},
        host_ms=timings.host_ms,
        gpu_compute_ms=timings.gpu_ms,
        throughput_ips=batch * len(timings.host_ms) / timings.wall_s,
        memory_mb={"peak_host": None,
                   "gpu": (torch.cuda.max_memory_allocated(backend.device) - allocated) / MIB if backend else None},
        source="edgecompress time_torch_module",
    )


_PRECISIONS = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "int8": "int8", "uint8": "int8"}
