"""The CPU runtimes models are timed in, registered by name.

A runtime is a *runner factory* ``factory(model_path, shape, threads, seed) -> run`` whose ``run()``
does one inference on seeded random input. Each timing happens in a fresh worker process, so a
runtime is registered by the factory's import path (``"package.module:function"``), which the worker
imports; the module must be importable there (the worker sees the caller's ``sys.path``).

A runtime may also register a *layer profiler* ``profiler(model_path, shape, threads, seed, warmup, runs) ->``
:class:`ProfilerTrace`: each node's time per run as the runtime's own profiler reports it, run in this process
(:mod:`.layer_profile` turns it into per-layer rows). A runtime without one is timed whole only.

Built in: ``onnxruntime`` (CPU execution provider, all graph optimisations) and ``openvino`` (the CPU
plugin, compiled for the static input shape, fp32 inference precision so a float model is timed in
fp32 even on CPUs with bf16; a Q/DQ model runs its int8 kernels), each with its layer profiler.

Not registered (a build's report times on the CPU only): :data:`ONNXRUNTIME_CUDA`, onnxruntime's CUDA execution
provider, which ``edgecompress profile --device cuda`` uses.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import EdgeCompressError

Runner = Callable[[], object]
RunnerFactory = Callable[[str, tuple[int, ...], "int | None", int], Runner]

# onnxruntime input element types we can feed random data to.
INPUT_DTYPES: dict[str, type] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}


@dataclass(frozen=True)
class Runtime:
    """A registered runtime: the runner factory's import path, the Python package it needs and, if it has one,
    its layer profiler's import path."""

    name: str
    runner: str  # "package.module:function"
    package: str  # checked with importlib before any work; pip extra named in the error
    layer_profiler: str | None = None  # "package.module:function"


@dataclass(frozen=True)
class RuntimeNode:
    """What one node of the graph a runtime executes is: its type, the kernel that ran it (``QLinearConv``,
    ``jit_avx2_I8``) and the element type it computes in (``f32``, ``u8``, ``i8``), where the runtime says."""

    type: str | None
    kernel: str | None
    precision: str | None


@dataclass
class ProfilerTrace:
    """What a runtime's profiler reported for one model: each executed node, and its time (ms) in every timed run."""

    device: str  # where the nodes ran, as the runtime names it (an execution provider, a plugin)
    nodes: dict[str, RuntimeNode] = field(default_factory=dict)
    runs: list[dict[str, float]] = field(default_factory=list)
    wall_ms: list[float] = field(default_factory=list)  # each timed run's wall time, measured around the inference call


RUNTIMES: dict[str, Runtime] = {}


def register_runtime(name: str, runner: str, package: str | None = None, layer_profiler: str | None = None) -> Runtime:
    """Register the runner factory at import path ``runner`` (``"module:function"``) as runtime ``name``, with
    its layer profiler at ``layer_profiler`` if it has one."""
    for what, path in (("runner", runner), ("layer_profiler", layer_profiler)):
        if path is not None and ":" not in path:
            raise EdgeCompressError(f"runtime {name}: {what} must be an import path like 'package.module:function', got {path!r}")
    RUNTIMES[name] = Runtime(name, runner, package or name, layer_profiler)
    return RUNTIMES[name]


def get_runtime(name: str) -> Runtime:
    """The runtime registered as ``name``; an unknown name or a missing package is a one-line error."""
    if name not in RUNTIMES:
        raise EdgeCompressError(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIMES)}")
    runtime = RUNTIMES[name]
    if importlib.util.find_spec(runtime.package) is None:
        raise EdgeCompressError(f"runtime {name}: the {runtime.package} package is not installed; pip install 'edgecompress[{name}]' or pip install {runtime.package}")
    return runtime


def load_runner(path: str) -> RunnerFactory:
    """Import the runner factory at ``"module:function"``."""
    module, _, function = path.partition(":")
    return getattr(importlib.import_module(module), function)


def random_input(shape: tuple[int, ...], dtype: type, seed: int) -> np.ndarray:
    """Fresh standard-normal data, the same for every model profiled with the same seed."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32).astype(dtype)


register_runtime("onnxruntime", "edgecompress.profile.runners:onnxruntime_runner",
                 layer_profiler="edgecompress.profile.runners:onnxruntime_layer_trace")
register_runtime("openvino", "edgecompress.profile.runners:openvino_runner", layer_profiler="edgecompress.profile.runners:openvino_layer_trace")

ONNXRUNTIME_CUDA = Runtime("onnxruntime", "edgecompress.profile.runners:onnxruntime_cuda_runner", "onnxruntime")
