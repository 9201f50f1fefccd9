"""Where latency reports come from: a model timed here (``edgecompress profile MODEL``) or files imported
(``edgecompress profile --import FILE.json``): a report already in the schema (the deploy/ C++ runner's) or
trtexec's ``--exportTimes`` / ``--exportProfile`` / ``--exportLayerInfo`` files.

App level: it joins the profiler (ONNX, OpenVINO IR) with the engine package (TensorRT engines, trtexec files),
which sits above the profiler in the core.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Callable

from ..errors import EdgeCompressError
from ..profile import FORMATS, LatencyReport, profile_layers, profile_model
from ..profile.machine import machine_info
from ..profile.tegrastats import TegrastatsSampler

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
TENSORRT_NEEDED = ("timing a TensorRT engine needs TensorRT's Python bindings and an NVIDIA GPU: on a Jetson they come with "
                   "JetPack (sudo apt install python3-libnvinfer), elsewhere pip install 'edgecompress[tensorrt]' "
                   "(https://docs.nvidia.com/deeplearning/tensorrt/latest/installing-tensorrt/installing.html); "
                   "or time the .onnx here")


def profile_engine(path: Path, *, iterations: int, warmup: int, shape: tuple[int, ...] | None = None,
                   stage: str | None = None, target: str | None = None, tegrastats_ms: int = 100) -> LatencyReport:
    """Time a serialized TensorRT engine with :class:`edgecompress.engine.runner.EngineRunner` on GPU 0 (needs TensorRT
    and a GPU), sampling tegrastats meanwhile on a Jetson; the machine record adds the CPU model, power mode and clocks."""
    if importlib.util.find_spec("tensorrt") is None:
        raise EdgeCompressError(f"{path}: {TENSORRT_NEEDED}")
    from ..engine.runner import EngineRunner

    with EngineRunner(path) as runner:
        if shape is not None:
            if len(runner.inputs) != 1:
                raise EdgeCompressError(f"{path} has {len(runner.inputs)} inputs; --shape sets the shape of an engine with one input")
            runner.set_input_shapes({runner.inputs[0].name: tuple(shape)})
        with TegrastatsSampler(tegrastats_ms) as board:
            data = runner.time(iterations=iterations, warmup=warmup)
    data["model"]["stage"] = stage
    data["machine"] = {**machine_info(target), "gpu": data["machine"].get("gpu")}
    data["tegrastats"] = board.summary()
    return LatencyReport.from_dict(data, path)


def profile_file(model: str | Path, *, runtime: str | None = None, device: str | None = None, shape: tuple[int, ...] | None = None,
                 iterations: int = 100, warmup: int = 10, threads: int | None = None, stage: str | None = None,
                 target: str | None = None, progress: bool = False, layers: bool = False) -> LatencyReport:
    """Time ``model`` by its kind: an .onnx or OpenVINO .xml in a fresh worker (:func:`~edgecompress.profile.profile_model`),
    a TensorRT .engine/.plan with the engine runner on the GPU. ``runtime`` and ``device`` default to the file's own
    (onnxruntime on the CPU for ONNX, OpenVINO for an IR, TensorRT on cuda for an engine). With ``layers``, the report
    also holds each layer's time from the runtime's own profiler (:func:`~edgecompress.profile.profile_layers`, CPU runtimes)."""
    path = Path(model)
    suffix = path.suffix.lower()
    if suffix == ".json":
        raise EdgeCompressError(f"{path} is a JSON file; to read a latency report or a trtexec export use --import {path}")
    if layers and (suffix in ENGINE_SUFFIXES or device not in (None, "cpu")):
        raise EdgeCompressError(f"{path}: --layers profiles layers on the CPU (onnxruntime, OpenVINO); for an engine's layers run trtexec "
                                "with --exportProfile and --exportLayerInfo and pass those files with --import")
    if suffix in ENGINE_SUFFIXES:
        if not path.is_file():
            raise EdgeCompressError(f"{path} not found; pass the engine file trtexec or `edgecompress build` wrote")
        if runtime not in (None, "tensorrt") or device not in (None, "cuda"):
            raise EdgeCompressError(f"{path}: an engine runs in TensorRT on its GPU (--runtime tensorrt --device cuda); drop the other --runtime/--device")
        return profile_engine(path, iterations=iterations, warmup=warmup, shape=shape, stage=stage, target=target)
    if suffix not in FORMATS:
        known = ", ".join([*FORMATS, *ENGINE_SUFFIXES])
        raise EdgeCompressError(f"{path}: cannot time a {suffix or 'extensionless'} file; pass one of {known} (or --import FILE.json)")
    runtime = runtime or FORMATS[suffix].runtimes[0]
    report = profile_model(path, runtime=runtime, device=device or "cpu", shape=shape, iterations=iterations, warmup=warmup,
                           threads=threads, stage=stage, target=target, progress=progress)
    if layers:
        profiled = profile_layers(path, runtime=runtime, shape=tuple(report.inputs[0]["shape"]), threads=threads)
        report.layers, report.settings["layer_runs"] = profiled.report_layers(), profiled.runs
    return report


def _is_trtexec_times(data: Any) -> bool:
    return isinstance(data, list) and bool(data) and isinstance(data[0], dict) and "computeMs" in data[0]


def _is_trtexec_profile(data: Any) -> bool:
    return isinstance(data, list) and bool(data) and isinstance(data[0], dict) and set(data[0]) == {"count"}


# What an imported JSON file is, recognised by its shape (trtexec's files as samples/common/sampleReporting.cpp writes them).
IMPORT_KINDS: dict[str, Callable[[Any], bool]] = {
    "report": lambda data: isinstance(data, dict) and "schema" in data,
    "times": _is_trtexec_times,
    "profile": _is_trtexec_profile,
    "layer_info": lambda data: isinstance(data, dict) and "Layers" in data,
}
IMPORT_FIX = ("pass a latency report (edgecompress.latency/1: `edgecompress profile --json`, the deploy/ runner) or trtexec's "
              "--exportTimes, --exportProfile or --exportLayerInfo file")


def import_kind(path: Path) -> str:
    """The kind of an import file (a key of :data:`IMPORT_KINDS`); a missing, unreadable or unknown file is a one-line error."""
    if path.suffix.lower() != ".json":
        raise EdgeCompressError(f"{path}: imports are .json files; {IMPORT_FIX}")
    if not path.is_file():
        raise EdgeCompressError(f"{path} not found; {IMPORT_FIX}")
    try:
        data = json.loads(path.read_text(), strict=False)  # trtexec writes layer names unescaped
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise EdgeCompressError(f"{path} is not valid JSON ({error}); {IMPORT_FIX}") from None
    kind = next((kind for kind, matches in IMPORT_KINDS.items() if matches(data)), None)
    if kind is None:
        raise EdgeCompressError(f"{path} is neither a latency report nor a trtexec export; {IMPORT_FIX}")
    return kind


def import_report(files: list[str | Path], *, model: str | Path | None = None, stage: str | None = None,
                  target: str | None = None, precision: str | None = None, batch: int | None = None) -> LatencyReport:
    """One latency report from imported files: a schema report alone (checked, passed through), or trtexec's exports
    (times, optionally its per-layer profile and layer info) of the engine or ONNX ``model``."""
    by_kind: dict[str, Path] = {}
    for file in map(Path, files):
        kind = import_kind(file)
        if kind in by_kind:
            raise EdgeCompressError(f"{by_kind[kind]} and {file} are both {kind} files; import one report at a time")
        by_kind[kind] = file
    if "report" in by_kind:
        if len(by_kind) > 1:
            raise EdgeCompressError(f"{by_kind['report']} is a complete latency report; import it alone, without {', '.join(str(p) for k, p in by_kind.items() if k != 'report')}")
        return LatencyReport.load(by_kind["report"])
    if "times" not in by_kind:
        raise EdgeCompressError(f"{', '.join(map(str, by_kind.values()))}: the latencies are in trtexec's --exportTimes file; import it too (--import times.json)")
    if model is None:
        raise EdgeCompressError("name what trtexec timed: edgecompress profile MODEL.engine (or the .onnx it was built from) --import times.json ...")
    model = Path(model)
    from ..engine.trtexec_reports import TrtexecReportError, latency_report_from_trtexec

    engine = model.suffix.lower() in ENGINE_SUFFIXES
    try:
        data = latency_report_from_trtexec(
            str(by_kind["times"]), str(by_kind["profile"]) if "profile" in by_kind else None,
            str(by_kind["layer_info"]) if "layer_info" in by_kind else None,
            engine_path=str(model) if engine else None, model_path=None if engine else str(model),
            target=target, precision=precision, batch=batch, stage=stage)
    except TrtexecReportError as error:
        raise EdgeCompressError(str(error)) from None
    return LatencyReport.from_dict(data, by_kind["times"])
