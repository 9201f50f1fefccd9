"""Where a model's time goes: per-layer times from the runtime's own profiler, slowest first.

Each registered runtime with a layer profiler (:mod:`.runtimes`; built in: onnxruntime's session profiler, OpenVINO's
performance counters) reports the time of every node it ran, run by run. A runtime runs a rewritten graph: it fuses
nodes (a conv with its bias and activation, Q/DQ pairs into one integer kernel), renames them (``Conv_token_4``,
``Conv/WithoutBiases``, ``Conv_output_0_nchwc``) and adds its own (layout reorders, transposes). So each node it ran
is traced back to the ONNX node it comes from: the longest ONNX node name, or name of a node's output, that starts
the runtime's name and is followed by its end, ``_`` or ``/``. A layer's row adds up its runtime nodes of one type
and kernel; a node the runtime added is a row under its own name. A row's time is the median over the timed runs of
its time in each run; its share is of all rows' sum.

The profiler runs in this process, with the session settings (threads included) of the whole-model timing.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EdgeCompressError
from .measure import model_format, package_version, resolve_input_shape
from .runtimes import RUNTIMES, ProfilerTrace, get_runtime, load_runner

# Enough runs for a steady median per layer, few enough to profile every model of a build in each runtime.
DEFAULT_WARMUP, DEFAULT_RUNS = 3, 10
SEPARATORS = "_/"


@dataclass(frozen=True)
class LayerTime:
    """One layer as the runtime ran it: its name (the ONNX node's, or the runtime's for a node it added), type, kernel
    (``QLinearConv``, ``jit_avx2_I8``: where int8 and float differ), precision, median time and share of the total."""

    name: str
    type: str | None
    kernel: str | None
    precision: str | None
    time_ms: float
    percent: float


@dataclass(frozen=True)
class LayerProfile:
    """The layers of one model in one runtime, slowest first, and how they were profiled."""

    model: str
    runtime: str
    version: str | None
    device: str  # as the runtime names it: onnxruntime's execution provider, OpenVINO's plugin
    threads: int | None  # None: the runtime's default
    warmup: int
    runs: int
    layers: tuple[LayerTime, ...]
    run_ms: float | None = None  # median wall time of the profiled runs, in the same process: what the layers add up to, plus overhead

    @property
    def total_ms(self) -> float:
        """The layers' median times added up: the model's time as its profiler sees it, without the runtime's overhead between nodes."""
        return sum(layer.time_ms for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "layers": [asdict(layer) for layer in self.layers]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerProfile:
        return cls(**{**data, "layers": tuple(LayerTime(**layer) for layer in data["layers"])})

    def report_layers(self) -> list[dict[str, Any]]:
        """The layers as a latency report's ``layers`` (schema ``edgecompress.latency/1``)."""
        return [{"name": layer.name, "time_ms": layer.time_ms, "percent": layer.percent, "type": layer.type,
                 "precision": layer.precision, "kernel": layer.kernel} for layer in self.layers]


def profile_layers(model_path: str | Path, *, runtime: str = "onnxruntime", shape: tuple[int, ...] | None = None, threads: int | None = None,
                   warmup: int = DEFAULT_WARMUP, runs: int = DEFAULT_RUNS, seed: int = 0) -> LayerProfile:
    """Per-layer times of an ONNX model (or an OpenVINO IR in openvino) in ``runtime``'s profiler on the CPU, on seeded
    random input of ``shape`` (default: the model's, a symbolic batch taken as 1): the median of ``runs`` runs after
    ``warmup``, with ``threads`` inference threads (None: the runtime's default, as the whole-model timing)."""
    path = Path(model_path)
    if not path.is_file():
        raise EdgeCompressError(f"{path} not found; pass the path of an .onnx model or an OpenVINO .xml")
    fmt = model_format(path)
    if fmt.name != "onnx" and runtime not in fmt.runtimes:  # every registered runtime reads ONNX
        raise EdgeCompressError(f"{path}: {runtime} cannot profile {fmt.name} files; use runtime {' or '.join(fmt.runtimes)}")
    registered = get_runtime(runtime)
    if registered.layer_profiler is None:
        with_one = [name for name, other in RUNTIMES.items() if other.layer_profiler]
        raise EdgeCompressError(f"runtime {runtime} has no layer profiler registered, so it times whole models only; "
                                f"profile layers in {' or '.join(with_one)}, or register one (register_runtime(..., layer_profiler=...))")
    if runs < 1 or warmup < 0:
        raise EdgeCompressError(f"layer profiling needs runs >= 1 and warmup >= 0 (got runs={runs}, warmup={warmup})")
    shape = tuple(shape) if shape else resolve_input_shape(path, fmt.inputs(path), None)
    trace = load_runner(registered.layer_profiler)(str(path), shape, threads, seed, warmup, runs)
    return LayerProfile(model=str(path), runtime=runtime, version=package_version(registered.package), device=trace.device,
                        threads=threads, warmup=warmup, runs=runs, layers=layer_rows(trace, source_nodes(path)),
                        run_ms=statistics.median(trace.wall_ms) if trace.wall_ms else None)


def source_nodes(path: Path) -> dict[str, tuple[str, str]]:
    """For an ONNX file: each node's name and each node output's name -> (node name, op type); empty for other formats."""
    if path.suffix.lower() != ".onnx":
        return {}
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    sources: dict[str, tuple[str, str]] = {}
    for node in graph.node:
        for name in (*node.output, node.name):  # a node's own name wins over an output of the same name
            if name:
                sources[name] = (node.name or node.output[0], node.op_type)
    return sources


def source_of(runtime_name: str, sources: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    """The (ONNX node, op type) a runtime's node comes from: the longest name in ``sources`` that starts ``runtime_name``
    and ends at its end or before a ``_`` or ``/``; None for a node the runtime added."""
    ends = [len(runtime_name)] + [index for index in range(len(runtime_name) - 1, 0, -1) if runtime_name[index] in SEPARATORS]
    return next((sources[runtime_name[:end]] for end in ends if runtime_name[:end] in sources), None)


def layer_rows(trace: ProfilerTrace, sources: dict[str, tuple[str, str]]) -> tuple[LayerTime, ...]:
    """The trace's nodes grouped into layers (see the module doc), slowest first."""
    groups: dict[tuple[str, str | None, str | None, str | None], list[str]] = {}
    for name, node in trace.nodes.items():
        layer, op_type = source_of(name, sources) or (name, None)
        groups.setdefault((layer, node.type or op_type or node.kernel, node.kernel, node.precision), []).append(name)
    medians = {key: float(np.median([sum(run.get(name, 0.0) for name in names) for run in trace.runs])) for key, names in groups.items()}
    total = sum(medians.values()) or 1.0
    rows = [LayerTime(name, op_type, kernel, precision, time_ms, 100 * time_ms / total)
            for (name, op_type, kernel, precision), time_ms in medians.items()]
    return tuple(sorted(rows, key=lambda row: -row.time_ms))
