"""Build a TensorRT engine in-process with the TensorRT Python API, when this machine matches the target.

API as documented (https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-patterns.html):
trt.Builder -> create_network -> trt.OnnxParser -> create_builder_config -> set_flag(trt.BuilderFlag.*)
-> build_serialized_network. Explicit quantization only: int8 comes from the Q/DQ nodes of the ONNX.
The same IBuilderConfig calls exist in 8.2, 10.x and 11.x (python/docstrings/infer/pyCoreDoc.h at tags 8.2.1, v10.3.0
and v11.1 of https://github.com/NVIDIA/TensorRT): ``create_timing_cache(bytes)``/``set_timing_cache(cache,
ignore_mismatch)``/``get_timing_cache().serialize()``, ``profiling_verbosity = ProfilingVerbosity.DETAILED``,
``default_device_type = DeviceType.DLA`` with ``DLA_core`` and ``BuilderFlag.GPU_FALLBACK``; the engine inspector is
``engine.create_engine_inspector().get_engine_information(LayerInformationFormat.JSON)``.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..artifacts import atomic_path, write_text
from ..errors import EdgeCompressError
from . import engine_meta
from .target import Target
from .trtexec import check_dla_core, recipe_for


@dataclass(frozen=True)
class NetworkApi:
    """The Python-API differences between TensorRT majors that trtexec hides."""

    network_flags: Callable[[Any], int]
    set_workspace: Callable[[Any, Any, int], None]


def _pool_limit(trt: Any, config: Any, size: int) -> None:
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, size)


def _max_workspace(trt: Any, config: Any, size: int) -> None:
    config.max_workspace_size = size  # TensorRT 8.x; set_memory_pool_limit only exists from 8.4


NETWORK_APIS: dict[int, NetworkApi] = {
    # ONNX networks need the explicit-batch flag in TensorRT 8; it is the default (and only) mode from 10.
    8: NetworkApi(lambda trt: 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH), _max_workspace),
    10: NetworkApi(lambda trt: 0, _pool_limit),
    11: NetworkApi(lambda trt: 0, _pool_limit),
}


def tensorrt_version() -> str | None:
    """Version of the importable ``tensorrt`` package, or None."""
    if importlib.util.find_spec("tensorrt") is None:
        return None
    import tensorrt

    return str(tensorrt.__version__)


def local_gpu_arch() -> str | None:
    """Compute capability of the first CUDA GPU here as "sm_XY", or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return f"sm_{major}{minor}"


def why_not_local(target: Target) -> str | None:
    """None if this machine can build the target's engine; otherwise the reason, for the bundle README."""
    version = tensorrt_version()
    if version is None:
        return "The `tensorrt` Python package is not installed on the machine that ran edgecompress."
    arch = local_gpu_arch()
    if arch != target.gpu_arch:
        return f"This machine's GPU is {arch or 'absent'}, the target's is {target.gpu_arch}."
    if int(version.split(".")[0]) != target.tensorrt_major:
        return f"This machine has TensorRT {version}, the target runs TensorRT {target.tensorrt}."
    return None


def _parse_onnx(trt: Any, network: Any, logger: Any, onnx_path: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgeCompressError(f"TensorRT cannot parse {onnx_path}: {errors}; check the export opset and ops")


def default_timing_cache(gpu_arch: str | None, version: str | None) -> Path:
    """This user's timing cache for one GPU architecture and TensorRT release (``$XDG_CACHE_HOME/edgecompress/timing``)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgecompress" / "timing"
    return root / engine_meta.timing_cache_name(gpu_arch, version)


def check_engine_here(engine_path: str | Path) -> dict:
    """Refuse an engine built with another TensorRT release or GPU than this machine's, before loading it."""
    try:
        return engine_meta.check_engine(str(engine_path), tensorrt_version(), local_gpu_arch())
    except engine_meta.MismatchError as exc:
        raise EdgeCompressError(str(exc)) from None


def _attach_timing_cache(config: Any, path: Path) -> None:
    """Start from the saved timing cache (TensorRT verifies it was made on this device) so rebuilds skip re-timing."""
    cache = config.create_timing_cache(path.read_bytes() if path.is_file() else b"")
    if not config.set_timing_cache(cache, False):
        raise EdgeCompressError(f"TensorRT refused the timing cache {path} (made on another GPU?); delete it and rebuild")


def _use_dla(trt: Any, config: Any, dla_core: int) -> None:
    """Layers the DLA supports run on core ``dla_core``; the rest fall back to the GPU (not an error)."""
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = dla_core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def _add_batch_one_profile(builder: Any, network: Any, config: Any) -> None:
    """A dynamic-batch ONNX needs an optimisation profile; pin every dynamic dimension to 1 (batch-1 latency)."""
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    dynamic = [tensor for tensor in inputs if any(dim < 0 for dim in tensor.shape)]
    if not dynamic:
        return
    profile = builder.create_optimization_profile()
    for tensor in dynamic:
        shape = tuple(1 if dim < 0 else dim for dim in tensor.shape)
        profile.set_shape(tensor.name, shape, shape, shape)
    config.add_optimization_profile(profile)


@dataclass(frozen=True)
class BuiltEngine:
    """What a local build wrote: the engine, its sidecar record, its layer information and the timing cache."""

    engine: Path
    record: Path
    layers: Path
    timing_cache: Path


def build_with_tensorrt(
    target: Target,
    onnx_path: Path,
    engine_path: Path,
    *,
    precision: str,
    workspace_mib: int | None = None,
    dla_core: int | None = None,
    timing_cache: Path | None = None,
) -> BuiltEngine:
    """Build and save a serialized engine for ``target`` on this machine (its GPU must be the target's).

    Beside ``engine_path``: ``<engine>.json`` (TensorRT release and GPU, checked before use) and ``<stem>.layers.json``
    (the engine inspector's detailed JSON, read by the int8 proof). The timing cache, by default this user's for this
    GPU and TensorRT release, is loaded first and saved back.
    """
    import tensorrt as trt

    major = int(trt.__version__.split(".")[0])
    api, recipe = NETWORK_APIS.get(major), recipe_for(target)
    if api is None:
        raise EdgeCompressError(f"TensorRT {trt.__version__} is not supported; install TensorRT 8.x, 10.x or 11.x")
    if precision == "fp16" and recipe.fp16_needs_autocast:
        raise EdgeCompressError(
            "TensorRT 11 has no fp16 flag: convert the ONNX with `python -m modelopt.onnx.autocast` first, "
            "or build from the deployment bundle's build_engine.sh"
        )
    check_dla_core(target, dla_core)
    arch = local_gpu_arch()
    cache_path = Path(timing_cache) if timing_cache else default_timing_cache(arch, trt.__version__)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(api.network_flags(trt))
    _parse_onnx(trt, network, logger, onnx_path)
    config = builder.create_builder_config()
    api.set_workspace(trt, config, (workspace_mib or target.workspace_mib) << 20)
    _add_batch_one_profile(builder, network, config)
    for flag in recipe.builder_flags[precision]:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector then reports each layer's types
    if dla_core is not None:
        _use_dla(trt, config, dla_core)
    _attach_timing_cache(config, cache_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgeCompressError(f"TensorRT failed to build {onnx_path} for {target.name}; rerun with verbose logs")
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache_path) as tmp:
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    layers = write_text(engine_path.with_name(f"{engine_path.stem}.layers.json"),
                        engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    device_type = "GPU" if dla_core is None else f"DLA{dla_core}"
    record = Path(engine_meta.write_sidecar(str(engine_path), trt.__version__, arch, target.name, precision, device_type))
    return BuiltEngine(engine=engine_path, record=record, layers=layers, timing_cache=cache_path)
