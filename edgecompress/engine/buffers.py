"""CUDA device and pinned host buffers, streams and events from whichever CUDA package is installed, as a registry
of backends (:data:`BUFFER_BACKENDS`): torch with CUDA, cuda-python (``cuda.bindings.runtime``, or ``cuda.cudart``
before cuda-python 12.6), pycuda (the one on the Jetson Nano's Python 3.6). A new backend is one
:class:`BufferBackend` subclass and one :func:`register_buffer_backend`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import EdgeCompressError

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
