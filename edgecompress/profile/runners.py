"""The built-in runner factories and layer profilers: onnxruntime's CPU and CUDA providers and OpenVINO's CPU plugin
(see :mod:`.runtimes`). A runtime's runner and its layer profiler set up the model alike (threads, precision, input)."""

from __future__ import annotations

import bisect
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import EdgeCompressError
from .runtimes import INPUT_DTYPES, ProfilerTrace, Runner, RuntimeNode, random_input

CUDA_PROVIDER = "CUDAExecutionProvider"
CUDA_FIX = ("pip uninstall onnxruntime && pip install onnxruntime-gpu (a build matching this machine's CUDA and cuDNN: "
            "https://onnxruntime.ai/docs/install/), or profile with --device cpu")

# onnxruntime's element type names (its profiler's input/output_type_shape) and OpenVINO's exec type suffixes, as one short spelling.
ONNXRUNTIME_PRECISIONS = {"float": "f32", "float16": "f16", "bfloat16": "bf16", "double": "f64", "uint8": "u8", "int8": "i8",
                          "int32": "i32", "int64": "i64"}
OPENVINO_PRECISIONS = {"f32", "f16", "bf16", "i8", "u8", "i32", "i64"}


def onnxruntime_runner(model: str, shape: tuple[int, ...], threads: int | None, seed: int) -> Runner:
    """A closure running ``model`` on onnxruntime's CPU provider with seeded input of ``shape``."""
    session, feed = _onnxruntime_session(model, shape, threads, seed, ["CPUExecutionProvider"])
    return lambda: session.run(None, feed)


def onnxruntime_cuda_runner(model: str, shape: tuple[int, ...], threads: int | None, seed: int) -> Runner:
    """A closure running ``model`` on onnxruntime's CUDA provider (GPU 0); each run copies the input in and the outputs back,
    so its time is the host's view (https://onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html)."""
    import onnxruntime as ort

    if CUDA_PROVIDER not in ort.get_available_providers():
        raise EdgeCompressError(f"onnxruntime {ort.__version__} here has no {CUDA_PROVIDER}; {CUDA_FIX}")
    session, feed = _onnxruntime_session(model, shape, threads, seed, [(CUDA_PROVIDER, {"device_id": 0})])
    return lambda: session.run(None, feed)


def onnxruntime_layer_trace(model: str, shape: tuple[int, ...], threads: int | None, seed: int, warmup: int, runs: int) -> ProfilerTrace:
    """Each node's time per run from onnxruntime's profiler (``SessionOptions.enable_profiling``) on the CPU provider.

    Its trace (Chrome trace format, times in µs) has a "Session" event ``model_run`` per run and, within its span, a
    "Node" event ``<node>_kernel_time`` per node run, whose args name the kernel (``op_name``: QLinearConv, FusedConv),
    the execution provider and the output element types (https://onnxruntime.ai/docs/performance/tune-performance/profiling-tools.html).
    """
    with tempfile.TemporaryDirectory(prefix="edgecompress-onnxruntime-trace-") as folder:
        session, feed = _onnxruntime_session(model, shape, threads, seed, ["CPUExecutionProvider"], profile_prefix=os.path.join(folder, "trace"))
        wall_ms = []
        for _ in range(warmup + runs):
            started = time.perf_counter()
            session.run(None, feed)
            wall_ms.append((time.perf_counter() - started) * 1e3)
        events = json.loads(Path(session.end_profiling()).read_text())
    starts = sorted(event["ts"] for event in events if event.get("cat") == "Session" and event.get("name") == "model_run")
    times: list[dict[str, float]] = [{} for _ in starts]
    trace, providers = ProfilerTrace(device=""), set()
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        run = bisect.bisect_right(starts, event["ts"]) - 1
        if run < warmup:
            continue
        name, args = event["name"].removesuffix("_kernel_time"), event.get("args", {})
        element = next(iter((args.get("output_type_shape") or [{}])[0]), None)
        trace.nodes.setdefault(name, RuntimeNode(None, args.get("op_name"), ONNXRUNTIME_PRECISIONS.get(element, element)))
        providers.add(args.get("provider") or "CPUExecutionProvider")
        times[run][name] = times[run].get(name, 0.0) + event["dur"] / 1e3
    trace.runs, trace.device, trace.wall_ms = times[warmup:], ", ".join(sorted(providers)), wall_ms[warmup:]
    return trace


def _onnxruntime_session(model: str, shape: tuple[int, ...], threads: int | None, seed: int, providers: list,
                         profile_prefix: str | None = None):
    """(session, feed): ``model`` on ``providers`` with ``threads`` intra-op threads and one inter-op thread (nodes run one
    after another), all graph optimisations, seeded input of ``shape``; with ``profile_prefix``, profiling into that file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if profile_prefix:
        options.enable_profiling, options.profile_file_prefix = True, profile_prefix
    session = ort.InferenceSession(model, options, providers=providers)
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].type not in INPUT_DTYPES:
        raise EdgeCompressError(f"profiling needs one float input; {model} has {[(i.name, i.type) for i in inputs]}")
    return session, {inputs[0].name: random_input(shape, INPUT_DTYPES[inputs[0].type], seed)}


def openvino_runner(model: str, shape: tuple[int, ...], threads: int | None, seed: int) -> Runner:
    """A closure running ``model`` compiled by OpenVINO's CPU plugin for ``shape`` (fp32 precision hint)."""
    request, feed = _openvino_request(model, shape, threads, seed)
    return lambda: request.infer(feed)


def openvino_layer_trace(model: str, shape: tuple[int, ...], threads: int | None, seed: int, warmup: int, runs: int) -> ProfilerTrace:
    """Each executed node's time per run from OpenVINO's performance counters (the ``PERF_COUNT`` property): after each
    inference the request's profiling info lists every node of the compiled graph with its type, exec type (kernel and
    precision, e.g. ``jit_avx2_I8``) and real time; nodes not run (fused into another) are left out."""
    import openvino as ov

    request, feed = _openvino_request(model, shape, threads, seed, {"PERF_COUNT": True})
    for _ in range(warmup):
        request.infer(feed)
    trace = ProfilerTrace(device="CPU")
    for _ in range(runs):
        started = time.perf_counter()
        request.infer(feed)
        trace.wall_ms.append((time.perf_counter() - started) * 1e3)
        times: dict[str, float] = {}
        for node in request.get_profiling_info():
            if node.status != ov.ProfilingInfo.Status.EXECUTED:
                continue
            suffix = node.exec_type.rpartition("_")[2].lower()
            trace.nodes.setdefault(node.node_name, RuntimeNode(node.node_type, node.exec_type, suffix if suffix in OPENVINO_PRECISIONS else None))
            times[node.node_name] = times.get(node.node_name, 0.0) + node.real_time.total_seconds() * 1e3
        trace.runs.append(times)
    return trace


def _openvino_request(model: str, shape: tuple[int, ...], threads: int | None, seed: int, config: dict | None = None):
    """(infer request, feed): ``model`` reshaped to ``shape`` and compiled by the CPU plugin for latency, fp32 precision hint,
    ``threads`` inference threads and ``config``'s extra properties; seeded input of ``shape``."""
    try:
        import openvino as ov
    except ImportError:
        raise EdgeCompressError("openvino is not installed; pip install 'edgecompress[openvino]' to profile with it") from None
    core = ov.Core()
    network = core.read_model(model)
    if len(network.inputs) != 1 or not network.input().get_element_type().is_real():
        raise EdgeCompressError(f"profiling needs one float input; {model} has {[str(i) for i in network.inputs]}")
    network.reshape({network.input(): ov.PartialShape(list(shape))})
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", **({"INFERENCE_NUM_THREADS": threads} if threads else {}), **(config or {})}
    request = core.compile_model(network, "CPU", config).create_infer_request()
    dtype = np.float16 if network.input().get_element_type() == ov.Type.f16 else np.float32
    return request, {0: random_input(shape, dtype, seed)}
