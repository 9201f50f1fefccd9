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

Device buffers come from a registry of backends (:data:`BUFFER_BACKENDS`): torch with CUDA, cuda-python
(``cuda.bindings.runtime``, or ``cuda.cudart`` before cuda-python 12.6), pycuda (the one on the Nano's Python 3.6).
"""

from __future__ import annotations

import importlib
import platform
import time as clock
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import EdgeCompressError
from ..helpers import evaluating
from .trtexec_reports import make_report, model_entry

MIB = 2**20


# ---- buffer backends ------------------------------------------------------------------------------------------------


@dataclass
class HostBuffer:
    """Page-locked host memory as a flat uint8 array; ``owner`` keeps the backend's object alive."""

    array: np.ndarray
    owner: Any


@dataclass
class DeviceBuffer:
    """Device memory: its address for TensorRT and the backend's object that owns it."""

    pointer: int
    nbytes: int
    owner: Any


class BufferBackend(ABC):
    """One way to get CUDA memory, copies, a stream and events from Python. One instance per device."""

    name: str = ""
    package: str = ""  # what to install, for the error message
    graphs: bool = True  # can capture a CUDA graph

    @classmethod
    @abstractmethod
    def unavailable(cls) -> str | None:
        """None if this backend can run here, else why not (one short phrase)."""

    def __init__(self, device: int) -> None:
        self.index = device  # the CUDA device number

    @property
    @abstractmethod
    def stream_handle(self) -> int:
        """The ``cudaStream_t`` TensorRT enqueues on."""

    @abstractmethod
    def device_buffer(self, nbytes: int) -> DeviceBuffer: ...

    @abstractmethod
    def host_buffer(self, nbytes: int) -> HostBuffer: ...

    @abstractmethod
    def copy_in(self, device: DeviceBuffer, host: HostBuffer) -> None:
        """Asynchronous host-to-device copy on the stream."""

    @abstractmethod
    def copy_out(self, host: HostBuffer, device: DeviceBuffer) -> None:
        """Asynchronous device-to-host copy on the stream."""

    @abstractmethod
    def event(self) -> Any: ...

    @abstractmethod
    def record(self, event: Any) -> None:
        """Record ``event`` on the stream."""

    @abstractmethod
    def elapsed_ms(self, start: Any, end: Any) -> float:
        """GPU time between two recorded events (both complete: call after :meth:`synchronize`)."""

    @abstractmethod
    def synchronize(self) -> None: ...

    @abstractmethod
    def memory_used(self) -> int:
        """Bytes of device memory in use (total - free of ``cudaMemGetInfo``)."""

    @abstractmethod
    def device_name(self) -> str: ...

    def capture(self, enqueue: Callable[[], None]) -> Callable[[], None]:
        """A launcher of ``enqueue`` captured as a CUDA graph on the stream."""
        raise EdgeCompressError(f"the {self.name} buffer backend cannot capture CUDA graphs; "
                                f"install torch with CUDA or cuda-python, or time without cuda_graph")

    def close(self) -> None:
        """Release what the backend holds beyond its buffers' owners (a context, for pycuda)."""


def _missing(module: str) -> str | None:
    """None if ``module`` imports, else a phrase saying it does not."""
    try:
        importlib.import_module(module)
    except ImportError:
        return "not installed"
    return None


class TorchBackend(BufferBackend):
    """torch's caching allocator, pinned host tensors, ``torch.cuda.Stream`` and timing events."""

    name, package = "torch", "torch with CUDA"

    @classmethod
    def unavailable(cls) -> str | None:
        if _missing("torch"):
            return "not installed"
        import torch

        return None if torch.cuda.is_available() else f"torch {torch.__version__} sees no CUDA device"

    def __init__(self, device: int) -> None:
        import torch

        super().__init__(device)
        self.torch = torch
        self.device = torch.device("cuda", device)
        torch.cuda.set_device(self.device)  # TensorRT uses the current device
        self.stream = torch.cuda.Stream(self.device)

    @property
    def stream_handle(self) -> int:
        return int(self.stream.cuda_stream)

    def device_buffer(self, nbytes: int) -> DeviceBuffer:
        tensor = self.torch.empty(max(nbytes, 1), dtype=self.torch.uint8, device=self.device)
        return DeviceBuffer(tensor.data_ptr(), nbytes, tensor)

    def host_buffer(self, nbytes: int) -> HostBuffer:
        tensor = self.torch.empty(max(nbytes, 1), dtype=self.torch.uint8, pin_memory=True)
        return HostBuffer(tensor.numpy()[:nbytes], tensor)

    def copy_in(self, device: DeviceBuffer, host: HostBuffer) -> None:
        with self.torch.cuda.stream(self.stream):
            device.owner.copy_(host.owner, non_blocking=True)

    def copy_out(self, host: HostBuffer, device: DeviceBuffer) -> None:
        with self.torch.cuda.stream(self.stream):
            host.owner.copy_(device.owner, non_blocking=True)

    def event(self) -> Any:
        return self.torch.cuda.Event(enable_timing=True)

    def record(self, event: Any) -> None:
        event.record(self.stream)

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return float(start.elapsed_time(end))

    def synchronize(self) -> None:
        self.stream.synchronize()

    def memory_used(self) -> int:
        free, total = self.torch.cuda.mem_get_info(self.device)
        return total - free

    def device_name(self) -> str:
        return self.torch.cuda.get_device_name(self.device)

    def capture(self, enqueue: Callable[[], None]) -> Callable[[], None]:
        graph = self.torch.cuda.CUDAGraph()
        with self.torch.cuda.graph(graph, stream=self.stream):
            enqueue()

        def launch() -> None:
            with self.torch.cuda.stream(self.stream):
                graph.replay()

        return launch


def _cudart() -> Any:
    """cuda-python's runtime module: ``cuda.bindings.runtime`` from 12.6, ``cuda.cudart`` before."""
    try:
        return importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        return importlib.import_module("cuda.cudart")


class CudaPythonBackend(BufferBackend):
    """NVIDIA's cuda-python runtime bindings: every call returns ``(error, *values)``."""

    name, package = "cuda-python", "cuda-python"

    @classmethod
    def unavailable(cls) -> str | None:
        try:
            cudart = _cudart()
        except ImportError:
            return "not installed"
        error, count = cudart.cudaGetDeviceCount()
        return None if error == cudart.cudaError_t.cudaSuccess and count > 0 else "no CUDA device"

    def __init__(self, device: int) -> None:
        super().__init__(device)
        self.cudart = _cudart()
        self._call(self.cudart.cudaSetDevice, device)
        self.stream = self._call(self.cudart.cudaStreamCreate)

    def _call(self, function: Callable[..., tuple], *args: Any) -> Any:
        error, *values = function(*args)
        if error != self.cudart.cudaError_t.cudaSuccess:
            message = self.cudart.cudaGetErrorString(error)[1]
            raise RuntimeError(f"{function.__name__}: {message.decode() if isinstance(message, bytes) else message}")
        return values[0] if len(values) == 1 else tuple(values) if values else None

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def device_buffer(self, nbytes: int) -> DeviceBuffer:
        pointer = int(self._call(self.cudart.cudaMalloc, max(nbytes, 1)))
        return DeviceBuffer(pointer, nbytes, _Freed(self, self.cudart.cudaFree, pointer))

    def host_buffer(self, nbytes: int) -> HostBuffer:
        import ctypes

        pointer = int(self._call(self.cudart.cudaMallocHost, max(nbytes, 1)))
        array = np.frombuffer((ctypes.c_uint8 * max(nbytes, 1)).from_address(pointer), dtype=np.uint8)[:nbytes]
        return HostBuffer(array, _Freed(self, self.cudart.cudaFreeHost, pointer))

    def _copy(self, destination: int, source: int, nbytes: int, kind: str) -> None:
        self._call(self.cudart.cudaMemcpyAsync, destination, source, nbytes,
                   getattr(self.cudart.cudaMemcpyKind, kind), self.stream)

    def copy_in(self, device: DeviceBuffer, host: HostBuffer) -> None:
        self._copy(device.pointer, host.array.ctypes.data, device.nbytes, "cudaMemcpyHostToDevice")

    def copy_out(self, host: HostBuffer, device: DeviceBuffer) -> None:
        self._copy(host.array.ctypes.data, device.pointer, device.nbytes, "cudaMemcpyDeviceToHost")

    def event(self) -> Any:
        return self._call(self.cudart.cudaEventCreate)

    def record(self, event: Any) -> None:
        self._call(self.cudart.cudaEventRecord, event, self.stream)

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return float(self._call(self.cudart.cudaEventElapsedTime, start, end))

    def synchronize(self) -> None:
        self._call(self.cudart.cudaStreamSynchronize, self.stream)

    def memory_used(self) -> int:
        free, total = self._call(self.cudart.cudaMemGetInfo)
        return int(total) - int(free)

    def device_name(self) -> str:
        name = self._call(self.cudart.cudaGetDeviceProperties, self.index).name
        return (name.decode() if isinstance(name, bytes) else str(name)).rstrip("\x00")

    def capture(self, enqueue: Callable[[], None]) -> Callable[[], None]:
        mode = self.cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
        self._call(self.cudart.cudaStreamBeginCapture, self.stream, mode)
        enqueue()
        graph = self._call(self.cudart.cudaStreamEndCapture, self.stream)
        executable = self._call(self.cudart.cudaGraphInstantiateWithFlags, graph, 0)
        return lambda: self._call(self.cudart.cudaGraphLaunch, executable, self.stream)


@dataclass
class _Freed:
    """Frees a cuda-python allocation when the buffer that owns it goes."""

    backend: CudaPythonBackend
    free: Callable[[int], tuple]
    pointer: int

    def __del__(self) -> None:
        self.free(self.pointer)


class PycudaBackend(BufferBackend):
    """pycuda on the device's primary context (the one TensorRT's runtime API uses); no CUDA graphs."""

    name, package, graphs = "pycuda", "pycuda", False

    @classmethod
    def unavailable(cls) -> str | None:
        if _missing("pycuda.driver"):
            return "not installed"
        import pycuda.driver as cuda

        cuda.init()
        return None if cuda.Device.count() > 0 else "no CUDA device"

    def __init__(self, device: int) -> None:
        import pycuda.driver as cuda

        super().__init__(device)
        cuda.init()
        self.cuda = cuda
        self.device = cuda.Device(device)
        self.context = self.device.retain_primary_context()
        self.context.push()
        self.stream = cuda.Stream()

    @property
    def stream_handle(self) -> int:
        return int(self.stream.handle)

    def device_buffer(self, nbytes: int) -> DeviceBuffer:
        allocation = self.cuda.mem_alloc(max(nbytes, 1))
        return DeviceBuffer(int(allocation), nbytes, allocation)

    def host_buffer(self, nbytes: int) -> HostBuffer:
        array = self.cuda.pagelocked_empty(max(nbytes, 1), np.uint8)
        return HostBuffer(array[:nbytes], array)

    def copy_in(self, device: DeviceBuffer, host: HostBuffer) -> None:
        self.cuda.memcpy_htod_async(device.owner, host.owner, self.stream)

    def copy_out(self, host: HostBuffer, device: DeviceBuffer) -> None:
        self.cuda.memcpy_dtoh_async(host.owner, device.owner, self.stream)

    def event(self) -> Any:
        return self.cuda.Event()

    def record(self, event: Any) -> None:
        event.record(self.stream)

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return float(end.time_since(start))

    def synchronize(self) -> None:
        self.stream.synchronize()

    def memory_used(self) -> int:
        free, total = self.cuda.mem_get_info()
        return total - free

    def device_name(self) -> str:
        return self.device.name()

    def close(self) -> None:
        self.context.pop()


BUFFER_BACKENDS: dict[str, type[BufferBackend]] = {
    backend.name: backend for backend in (TorchBackend, CudaPythonBackend, PycudaBackend)
}


def register_buffer_backend(backend: type[BufferBackend]) -> None:
    """Add a buffer backend; :func:`select_backend` tries backends in registration order."""
    BUFFER_BACKENDS[backend.name] = backend


def select_backend(name: str | None = None) -> type[BufferBackend]:
    """The backend called ``name``, or the first one usable here; a one-line error naming what to install otherwise."""
    if name is not None:
        if name not in BUFFER_BACKENDS:
            raise EdgeCompressError(f"unknown buffer backend {name!r}; use one of {', '.join(BUFFER_BACKENDS)}")
        reason = BUFFER_BACKENDS[name].unavailable()
        if reason:
            raise EdgeCompressError(f"buffer backend {name} cannot run here ({reason}); install "
                                    f"{BUFFER_BACKENDS[name].package} or leave the backend unset")
        return BUFFER_BACKENDS[name]
    reasons = {}
    for backend in BUFFER_BACKENDS.values():
        reasons[backend.name] = backend.unavailable()
        if reasons[backend.name] is None:
            return backend
    tried = "; ".join(f"{backend}: {reason}" for backend, reason in reasons.items())
    raise EdgeCompressError(f"no CUDA buffer backend can run here ({tried}); install torch with CUDA, cuda-python "
                            "or pycuda on a machine with an NVIDIA GPU")


# ---- the timing loop, shared by engines and torch modules -----------------------------------------------------------


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
