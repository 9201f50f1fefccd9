"""A latency report of one ONNX model or OpenVINO IR, timed in a fresh worker process (``edgecompress profile``)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import EdgeCompressError
from .latency import run_worker
from .latency_report import LatencyReport
from .machine import machine_info
from .runtimes import ONNXRUNTIME_CUDA, Runtime, get_runtime


@dataclass(frozen=True)
class ModelFormat:
    """A model file kind timed in the worker: the schema's format name, the runtimes that read it, how to list its inputs."""

    name: str
    runtimes: tuple[str, ...]
    inputs: Callable[[Path], list[dict[str, Any]]]


def onnx_inputs(path: Path) -> list[dict[str, Any]]:
    """Name, shape (``None`` for a symbolic dimension) and dtype of each graph input of an ONNX file (weights not loaded)."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as error:  # onnx raises DecodeError and others for a file that is not ONNX
        raise EdgeCompressError(f"{path} is not a readable ONNX model ({type(error).__name__}); pass an .onnx file exported by edgecompress or torch.onnx") from None
    weights = {initializer.name for initializer in graph.initializer}
    inputs = []
    for value in graph.input:
        if value.name in weights:
            continue
        tensor = value.type.tensor_type
        shape = [dim.dim_value if dim.HasField("dim_value") else None for dim in tensor.shape.dim]
        inputs.append({"name": value.name, "shape": shape, "dtype": tensor_dtype_to_np_dtype(tensor.elem_type).name})
    return inputs


def openvino_ir_inputs(path: Path) -> list[dict[str, Any]]:
    """Name, shape and element type of each ``Parameter`` layer of an OpenVINO IR .xml (the IR's documented layout:
    https://docs.openvino.ai/2024/documentation/openvino-ir-format/operation-sets/operation-specs/infrastructure/parameter-1.html)."""
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise EdgeCompressError(f"{path} is not an OpenVINO IR .xml ({error}); pass the .xml that `ovc` or `mo` wrote, with its .bin beside it") from None
    inputs = []
    for layer in root.iter("layer"):
        if layer.get("type") == "Parameter":
            data = layer.find("data")
            shape = (data.get("shape", "") if data is not None else "").split(",")
            inputs.append({"name": layer.get("name", ""), "dtype": data.get("element_type") if data is not None else None,
                           "shape": [int(dim) if dim.strip().isdigit() else None for dim in shape if dim.strip()]})
    return inputs


FORMATS: dict[str, ModelFormat] = {
    ".onnx": ModelFormat("onnx", ("onnxruntime", "openvino"), onnx_inputs),
    ".xml": ModelFormat("openvino-ir", ("openvino",), openvino_ir_inputs),
}


def _cuda_runtime() -> Runtime:
    """onnxruntime's CUDA provider, checked here before a worker starts."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise EdgeCompressError("--device cuda needs onnxruntime-gpu; pip install onnxruntime-gpu")
    import onnxruntime

    from .runners import CUDA_FIX, CUDA_PROVIDER

    if CUDA_PROVIDER not in onnxruntime.get_available_providers():
        raise EdgeCompressError(f"--device cuda: onnxruntime {onnxruntime.__version__} here has no {CUDA_PROVIDER} "
                                f"(it has {', '.join(onnxruntime.get_available_providers())}); {CUDA_FIX}")
    return ONNXRUNTIME_CUDA


# (runtime, device) -> the runner it times with, and the device name the report records.
DEVICES: dict[tuple[str, str], tuple[Callable[[], Runtime], str]] = {
    ("onnxruntime", "cpu"): (lambda: get_runtime("onnxruntime"), "CPU"),
    ("openvino", "cpu"): (lambda: get_runtime("openvino"), "CPU"),
    ("onnxruntime", "cuda"): (_cuda_runtime, "cuda:0"),
}


def model_format(path: Path) -> ModelFormat:
    """The format of ``path`` by its extension; another extension is a one-line error listing those known."""
    if path.suffix.lower() not in FORMATS:
        raise EdgeCompressError(f"{path}: cannot time a {path.suffix or 'extensionless'} file here; pass one of {', '.join(FORMATS)}")
    return FORMATS[path.suffix.lower()]


def resolve_input_shape(path: Path, inputs: list[dict[str, Any]], shape: tuple[int, ...] | None) -> tuple[int, ...]:
    """``shape`` if given, else the model's one input shape with a symbolic batch dimension taken as 1."""
    if len(inputs) != 1:
        raise EdgeCompressError(f"{path} has {len(inputs)} inputs ({', '.join(i['name'] for i in inputs)}); profiling times models with one float input")
    if shape:
        return tuple(shape)
    declared = [dim or 1 for dim in inputs[0]["shape"][:1]] + inputs[0]["shape"][1:]
    if not declared or any(not dim for dim in declared):
        raise EdgeCompressError(f"{path} declares input {inputs[0]['name']} with shape {declared} (not all fixed); pass --shape, e.g. --shape 1,3,320,320")
    return tuple(declared)


def package_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def profile_model(
    model_path: str | Path, *, runtime: str = "onnxruntime", device: str = "cpu", shape: tuple[int, ...] | None = None,
    iterations: int = 100, warmup: int = 10, threads: int | None = None, seed: int = 0, progress: bool = False,
    stage: str | None = None, target: str | None = None, tegrastats_ms: int = 100,
) -> LatencyReport:
    """Time an ONNX model (onnxruntime or OpenVINO, CPU or onnxruntime's CUDA) or an OpenVINO IR in a fresh process.

    Every check (file, format, runtime, device, shape) happens before the worker starts. On a Jetson tegrastats is
    sampled every ``tegrastats_ms`` during the timed iterations.
    """
    path = Path(model_path)
    if not path.is_file():
        raise EdgeCompressError(f"{path} not found; pass the path of an .onnx model or an OpenVINO .xml")
    fmt = model_format(path)
    if runtime not in fmt.runtimes:
        raise EdgeCompressError(f"{path}: {runtime} cannot time {fmt.name} files; use --runtime {' or '.join(fmt.runtimes)}")
    if (runtime, device) not in DEVICES:
        devices = [d for r, d in DEVICES if r == runtime]
        raise EdgeCompressError(f"{runtime} times on {' or '.join(devices)} here, not {device}; pass --device {devices[0]}"
                                + (" (or --runtime onnxruntime for cuda)" if device == "cuda" else ""))
    if iterations < 1 or warmup < 0:
        raise EdgeCompressError(f"--iterations must be >= 1 and --warmup >= 0 (got {iterations} and {warmup})")
    runner, device_name = DEVICES[(runtime, device)]
    timed_in = runner()
    inputs = fmt.inputs(path)
    input_shape = resolve_input_shape(path, inputs, shape)
    measured = run_worker(path, input_shape, warmup=warmup, runs=iterations, threads=threads, progress=progress, seed=seed,
                          runtime=timed_in, tegrastats_ms=tegrastats_ms)
    inputs[0] = {**inputs[0], "shape": list(input_shape)}
    return LatencyReport.from_times(
        measured["times_ms"], wall_s=measured["wall_s"], peak_host_mb=measured["peak_memory_mb"],
        model={"path": str(path), "bytes": _model_bytes(path), "format": fmt.name, "stage": stage},
        runtime={"name": runtime, "version": package_version(timed_in.package), "device": device_name, "precision": None},
        machine=machine_info(target), inputs=inputs,
        settings={"warmup": warmup, "iterations": iterations, "threads": threads, "batch": input_shape[0] if input_shape else 1},
        tegrastats=measured.get("tegrastats"),
    )


def _model_bytes(path: Path) -> int:
    """Bytes on disk: the file, plus an OpenVINO IR's .bin weights beside it."""
    size = path.stat().st_size
    weights = path.with_suffix(".bin")
    if path.suffix.lower() == ".xml" and weights.is_file():
        size += weights.stat().st_size
    return size
