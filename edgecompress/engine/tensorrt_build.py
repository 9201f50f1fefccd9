"""Build a TensorRT engine in-process with the TensorRT Python API, when this machine matches the target.

API as documented (https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-patterns.html):
trt.Builder -> create_network -> trt.OnnxParser -> create_builder_config -> set_flag(trt.BuilderFlag.*)
-> build_serialized_network. Explicit quantization only: int8 comes from the Q/DQ nodes of the ONNX.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..artifacts import atomic_path
from ..errors import EdgeCompressError
from .target import Target
from .trtexec import DEFAULT_WORKSPACE_MIB, recipe_for


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


def build_with_tensorrt(
    target: Target, onnx_path: Path, engine_path: Path, *, precision: str, workspace_mib: int = DEFAULT_WORKSPACE_MIB
) -> Path:
    """Build and save a serialized engine for ``target`` on this machine (its GPU must be the target's)."""
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
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(api.network_flags(trt))
    _parse_onnx(trt, network, logger, onnx_path)
    config = builder.create_builder_config()
    api.set_workspace(trt, config, workspace_mib << 20)
    _add_batch_one_profile(builder, network, config)
    for flag in recipe.builder_flags[precision]:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgeCompressError(f"TensorRT failed to build {onnx_path} for {target.name}; rerun with verbose logs")
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    return engine_path
