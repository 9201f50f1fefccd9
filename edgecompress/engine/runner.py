"""Run and time a serialized TensorRT engine from Python, and time a torch module the same way.

Both write the shared latency report (``edgecompress.latency/1``, built by :func:`.trtexec_reports.make_report`):
host latency is ``perf_counter`` around H2D + execute + D2H + synchronize, GPU compute is CUDA events around the
execute alone, GPU memory the drop in ``cudaMemGetInfo``'s free bytes from before the engine loads to after its
context and buffers exist.

TensorRT Python API, as documented:
- 8.5 and later (the only API of 10.x and 11.x): I/O tensors by name, ``num_io_tensors``, ``get_tensor_name``,
  ``get_tensor_mode``, ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``
  (https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/python-api-docs.html,
  https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-8x-to-10x-python-api-patterns.html).
- 8.2 to 8.4 (JetPack 4.6 on the Jetson Nano has 8.2): bindings by index, ``num_bindings``, ``binding_is_input``,
  ``set_binding_shape``, ``execute_async_v2`` (https://docs.nvidia.com/deeplearning/tensorrt/archives/tensorrt-821/api/python_api/infer/Core/ExecutionContext.html).
- CUDA graphs: enqueue once before capturing so TensorRT's deferred updates are done, then capture one enqueue
  (https://docs.nvidia.com/deeplearning/tensorrt/latest/performance/best-practices.html#cuda-graphs).
- ``deserialize_cuda_engine`` returns None for a plan built by another TensorRT version or for another GPU.

Device buffers come from the registry of backends in :mod:`.buffers` (torch with CUDA, cuda-python, pycuda);
the timing loop is :mod:`.timing`'s.
"""

from __future__ import annotations

import importlib
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import EdgeCompressError
from .buffers import BUFFER_BACKENDS, MIB, BufferBackend, DeviceBuffer, HostBuffer, register_buffer_backend, select_backend
from .engine_meta import sidecar_path
from .tensorrt_build import check_engine_here
from .timing import Timings, time_torch_module, timing_loop
from .trtexec_reports import make_report, model_entry

# The buffer backends and the torch timing live in .buffers and .timing; the runner is their one entry point.
__all__ = ["BUFFER_BACKENDS", "BufferBackend", "EngineRunner", "Timings", "register_buffer_backend", "select_backend",
           "time_torch_module", "timing_loop"]


# ---- TensorRT I/O: named tensors (8.5+) or bindings (8.2-8.4) -------------------------------------------------------


@dataclass
class TensorSpec:
    """One engine input or output as the engine declares it (-1 for a dynamic dimension)."""

    name: str
    index: int
    is_input: bool
    shape: tuple[int, ...]
    dtype: np.dtype


class NamedTensorIO:
    """TensorRT 8.5 and later: tensors by name, addresses set on the context, ``execute_async_v3``."""

    @staticmethod
    def supports(engine: Any) -> bool:
        return hasattr(engine, "num_io_tensors")

    def __init__(self, trt: Any, engine: Any, context: Any) -> None:
        self.trt, self.engine, self.context = trt, engine, context

    def tensors(self) -> list[TensorSpec]:
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        return [TensorSpec(name, i, self.engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT,
                           tuple(self.engine.get_tensor_shape(name)), _numpy_dtype(self.trt, self.engine.get_tensor_dtype(name), name))
                for i, name in enumerate(names)]

    def optimal_shape(self, spec: TensorSpec) -> tuple[int, ...]:
        return tuple(self.engine.get_tensor_profile_shape(spec.name, 0)[1])

    def set_input_shape(self, spec: TensorSpec, shape: tuple[int, ...]) -> bool:
        return self.context.set_input_shape(spec.name, shape)

    def shape(self, spec: TensorSpec) -> tuple[int, ...]:
        return tuple(self.context.get_tensor_shape(spec.name))

    def bind(self, spec: TensorSpec, pointer: int) -> None:
        self.context.set_tensor_address(spec.name, pointer)

    def execute(self, stream_handle: int) -> bool:
        return self.context.execute_async_v3(stream_handle)


class BindingIO:
    """TensorRT 8.2 to 8.4: bindings by index, a pointer list, ``execute_async_v2``."""

    @staticmethod
    def supports(engine: Any) -> bool:
        return hasattr(engine, "num_bindings")

    def __init__(self, trt: Any, engine: Any, context: Any) -> None:
        self.trt, self.engine, self.context = trt, engine, context
        self.pointers = [0] * engine.num_bindings

    def tensors(self) -> list[TensorSpec]:
        return [TensorSpec(self.engine.get_binding_name(i), i, self.engine.binding_is_input(i),
                           tuple(self.engine.get_binding_shape(i)),
                           _numpy_dtype(self.trt, self.engine.get_binding_dtype(i), self.engine.get_binding_name(i)))
                for i in range(self.engine.num_bindings)]

    def optimal_shape(self, spec: TensorSpec) -> tuple[int, ...]:
        return tuple(self.engine.get_profile_shape(0, spec.index)[1])

    def set_input_shape(self, spec: TensorSpec, shape: tuple[int, ...]) -> bool:
        return self.context.set_binding_shape(spec.index, shape)

    def shape(self, spec: TensorSpec) -> tuple[int, ...]:
        return tuple(self.context.get_binding_shape(spec.index))

    def bind(self, spec: TensorSpec, pointer: int) -> None:
        self.pointers[spec.index] = pointer

    def execute(self, stream_handle: int) -> bool:
        return self.context.execute_async_v2(bindings=self.pointers, stream_handle=stream_handle)


TENSOR_IO_APIS = (NamedTensorIO, BindingIO)  # the first that supports the engine is used


def _numpy_dtype(trt: Any, dtype: Any, name: str) -> np.dtype:
    try:
        return np.dtype(trt.nptype(dtype))
    except TypeError:
        raise EdgeCompressError(f"engine tensor {name} is {dtype}, which numpy has no type for; "
                                "export the model with float32/float16 inputs and outputs") from None


def tensorrt_module() -> Any:
    """The ``tensorrt`` package, or a one-line error saying how to get it."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        raise EdgeCompressError("the tensorrt Python package is not installed; run on the device (JetPack ships it) "
                                "or pip install tensorrt on an x86 machine with an NVIDIA GPU") from None


class EngineRunner:
    """A deserialized engine with its context, device buffers and stream, ready for :meth:`infer` and :meth:`time`."""

    def __init__(self, engine_path: str | Path, device: int = 0, backend: str | None = None) -> None:
        self.engine_path = Path(engine_path)
        if not self.engine_path.is_file():
            raise EdgeCompressError(f"engine not found: {self.engine_path}; build it with the bundle's build_engine.sh")
        if Path(sidecar_path(self.engine_path)).is_file():  # built by edgecompress: another TensorRT or GPU is refused before loading
            check_engine_here(self.engine_path)
        trt = self.trt = tensorrt_module()
        self.backend = select_backend(backend)(device)
        used_before = self.backend.memory_used()
        self.logger = _error_logger(trt)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            detail = f" ({self.logger.errors[-1].splitlines()[0]})" if self.logger.errors else ""
            raise EdgeCompressError(
                f"{self.engine_path} was built by another TensorRT version or for another GPU, and TensorRT "
                f"{trt.__version__} on {self.backend.device_name()} cannot load it{detail}; rebuild it on this device "
                "with the bundle's build_engine.sh")
        self.context = self.engine.create_execution_context()
        api = next((api for api in TENSOR_IO_APIS if api.supports(self.engine)), None)
        if api is None:
            raise EdgeCompressError(f"TensorRT {trt.__version__} has neither named I/O tensors nor bindings; "
                                    "use TensorRT 8.2 or later")
        self.io = api(trt, self.engine, self.context)
        self.tensors = self.io.tensors()
        self._buffers: dict[str, tuple[DeviceBuffer, HostBuffer]] = {}
        self._launch: Callable[[], None] | None = None
        self._shapes: dict[str, tuple[int, ...]] = {}
        self.set_input_shapes({})
        self.gpu_memory_mb = (self.backend.memory_used() - used_before) / MIB

    # -- shapes and buffers

    @property
    def inputs(self) -> list[TensorSpec]:
        return [spec for spec in self.tensors if spec.is_input]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [spec for spec in self.tensors if not spec.is_input]

    def set_input_shapes(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Fix every input's shape (dynamic dimensions from ``shapes``, else the optimisation profile's optimum) and
        size the buffers for it."""
        for spec in self.inputs:
            shape = tuple(shapes.get(spec.name, spec.shape))
            if any(dim < 0 for dim in shape):
                shape = self.io.optimal_shape(spec)
            if shape != self._shapes.get(spec.name):
                if self.io.set_input_shape(spec, shape) is False:
                    raise EdgeCompressError(f"input {spec.name} of {self.engine_path} cannot take shape {shape}; "
                                            "use a shape inside the engine's optimisation profile")
                self._shapes[spec.name] = shape
                self._launch = None  # a captured graph holds the old shapes
        for spec in self.tensors:
            shape = self.io.shape(spec)
            if any(dim < 0 for dim in shape):
                raise EdgeCompressError(f"output {spec.name} of {self.engine_path} has a data-dependent shape {shape}; "
                                        "EngineRunner needs outputs whose size the input shapes fix")
            self._shapes[spec.name] = shape
            nbytes = int(np.prod(shape, dtype=np.int64)) * spec.dtype.itemsize
            held = self._buffers.get(spec.name)
            if held is None or held[0].nbytes < nbytes:
                self._buffers[spec.name] = (self.backend.device_buffer(nbytes), self.backend.host_buffer(nbytes))
                self._launch = None
            self.io.bind(spec, self._buffers[spec.name][0].pointer)

    def _host_view(self, spec: TensorSpec) -> np.ndarray:
        shape = self._shapes[spec.name]
        nbytes = int(np.prod(shape, dtype=np.int64)) * spec.dtype.itemsize
        return self._buffers[spec.name][1].array[:nbytes].view(spec.dtype).reshape(shape)

    # -- running

    def _enqueue(self) -> None:
        if not self.io.execute(self.backend.stream_handle):
            raise EdgeCompressError(f"TensorRT failed to enqueue {self.engine_path}; see the TensorRT log above")

    def _step(self, start: Any, end: Any, cuda_graph: bool = False) -> None:
        """One inference: H2D of every input, the engine (between the events), D2H of every output, synchronize."""
        for spec in self.inputs:
            device, host = self._buffers[spec.name]
            self.backend.copy_in(device, host)
        if start is not None:
            self.backend.record(start)
        (self._launch if cuda_graph else self._enqueue)()
        if end is not None:
            self.backend.record(end)
        for spec in self.outputs:
            device, host = self._buffers[spec.name]
            self.backend.copy_out(host, device)
        self.backend.synchronize()

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the engine once on ``inputs`` (name -> array); returns copies of every output."""
        names = {spec.name for spec in self.inputs}
        if set(inputs) != names:
            raise EdgeCompressError(f"{self.engine_path.name} takes inputs {sorted(names)}, got {sorted(inputs)}")
        self.set_input_shapes({name: tuple(array.shape) for name, array in inputs.items()})
        for spec in self.inputs:
            if tuple(inputs[spec.name].shape) != self._shapes[spec.name]:
                raise EdgeCompressError(f"input {spec.name} must have shape {self._shapes[spec.name]}, "
                                        f"got {tuple(inputs[spec.name].shape)}")
            np.copyto(self._host_view(spec), inputs[spec.name], casting="same_kind")
        self._step(None, None)
        return {spec.name: self._host_view(spec).copy() for spec in self.outputs}

    def time(self, iterations: int = 100, warmup: int = 10, duration_s: float | None = None,
             cuda_graph: bool = False, seed: int = 0) -> dict:
        """A latency report of the engine on seeded random inputs (see the module docstring for what is timed)."""
        rng = np.random.default_rng(seed)
        for spec in self.inputs:
            view = self._host_view(spec)
            view[...] = (rng.standard_normal(view.shape) if view.dtype.kind == "f"
                         else rng.integers(0, 2, view.shape)).astype(view.dtype)
        if cuda_graph and self._launch is None:
            self._enqueue()  # TensorRT's deferred updates happen outside the capture
            self.backend.synchronize()
            self._launch = self.backend.capture(self._enqueue)
        timings = timing_loop(lambda start, end: self._step(start, end, cuda_graph), iterations, warmup, duration_s,
                              self.backend)
        first = self.inputs[0] if self.inputs else None
        batch = int(self._shapes[first.name][0]) if first is not None and self._shapes[first.name] else 1
        return make_report(
            model=model_entry(self.engine_path, "engine"),
            runtime={"name": "tensorrt", "version": str(self.trt.__version__), "device": f"cuda:{self.backend.index}",
                     "precision": None},
            machine={"cpu": platform.processor() or platform.machine() or None, "gpu": self.backend.device_name()},
            inputs=[{"name": spec.name, "shape": list(self._shapes[spec.name]), "dtype": spec.dtype.name}
                    for spec in self.inputs],
            settings={"warmup": warmup, "iterations": len(timings.host_ms), "duration_s": duration_s, "threads": None,
                      "cuda_graph": cuda_graph, "batch": batch},
            host_ms=timings.host_ms,
            gpu_compute_ms=timings.gpu_ms,
            throughput_ips=batch * len(timings.host_ms) / timings.wall_s,
            memory_mb={"peak_host": None, "gpu": self.gpu_memory_mb},
            source=f"edgecompress EngineRunner ({self.backend.name} buffers)",
        )

    def close(self) -> None:
        """Free the buffers, context and engine before the backend's context goes."""
        self._launch = None
        self._buffers.clear()
        self.context = self.engine = None
        self.io = None
        self.backend.close()

    def __enter__(self) -> EngineRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _error_logger(trt: Any) -> Any:
    """A ``trt.ILogger`` that keeps the error messages (``.errors``), so a failed load can say why."""

    class ErrorLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, message: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(str(message))

    return ErrorLogger()
