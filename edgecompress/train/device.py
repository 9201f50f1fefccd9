"""Where training and evaluation run: a ``--device`` name resolved once, batches moved there, and mixed precision's dtype.

Every training stage and evaluation takes the device from :func:`resolve_device`, so ``auto`` means the
same everywhere and a GPU asked for on a machine without one is refused before any work. Under torchrun
each process takes the GPU of its ``LOCAL_RANK``.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ..errors import EdgeCompressError
from .distributed import launched_by_torchrun, local_rank

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` (a GPU when torch sees one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; a one-line EdgeCompressError otherwise.

    Under torchrun with several processes, ``auto`` and ``cuda`` are the GPU of the process's ``LOCAL_RANK``.
    """
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return resolve_device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise EdgeCompressError(f"unknown --device {name!r}; choose {DEVICE_CHOICES}")
    if device.type == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}, but no GPU is visible"
        raise EdgeCompressError(f"--device {name} needs a CUDA GPU, but torch {torch.__version__} is {build}; "
                                "pass --device cpu (or auto), or install a CUDA build of torch on a machine with a GPU")
    count = torch.cuda.device_count()
    if launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1:
        return _process_gpu(name, device, count)
    if device.index is not None and device.index >= count:
        raise EdgeCompressError(f"--device {name}: torch sees {count} GPU(s), cuda:0 to cuda:{count - 1}; pass one of those")
    return device


def _process_gpu(name: str, device: torch.device, count: int) -> torch.device:
    """The GPU of this torchrun process: the one of its LOCAL_RANK."""
    if device.index not in (None, local_rank()):
        raise EdgeCompressError(f"--device {name} would put every torchrun process on one GPU; pass --device cuda (or auto): "
                                "each process takes the GPU of its LOCAL_RANK")
    index = local_rank()
    if index >= count:
        raise EdgeCompressError(f"torchrun process LOCAL_RANK {index} has no GPU of its own: torch sees {count}; start at most {count} "
                                "processes per machine (--nproc_per_node, --gpus), or pass --device cpu")
    return torch.device("cuda", index)


def map_tensors(data: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """``data`` with ``fn`` applied to every tensor in it (nested lists, tuples and dicts kept as they are)."""
    if isinstance(data, Tensor):
        return fn(data)
    if isinstance(data, (list, tuple)):
        return type(data)(map_tensors(item, fn) for item in data)
    if isinstance(data, dict):
        return {key: map_tensors(value, fn) for key, value in data.items()}
    return data


def to_device(data: Any, device: torch.device) -> Any:
    """Every tensor of ``data`` (a batch, detection targets as a tensor or a list, a state dict) on ``device``.

    The copy to a GPU is asynchronous from pinned memory (see :func:`pin_memory`), synchronous otherwise.
    """
    return map_tensors(data, lambda tensor: tensor.to(device, non_blocking=device.type == "cuda"))


GPU_LOADER_WORKERS = 8
CPU_LOADER_WORKERS = 2


def loader_workers(workers: int | None, device: torch.device) -> int:
    """How many processes load batches (``--workers``): ``workers`` when given. By default, of this process's share of
    the machine's CPUs (all of them, or its part under torchrun): on a GPU up to 8, loading the next batches while the GPU
    trains; on the CPU up to 2, none with a single CPU. On the CPU, loading in the training process slowed an epoch of
    the digits baseline on 2 cores more than 2 workers competing with the training did (README, ``--workers``)."""
    if workers is not None:
        return workers
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    share = cpus // int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if device.type == "cuda":
        return max(1, min(GPU_LOADER_WORKERS, share))
    return min(CPU_LOADER_WORKERS, share) if share > 1 else 0


def pin_memory(loaders: Iterable[Any], device: torch.device) -> None:
    """Turn on pinned (page-locked) batches in the DataLoaders among ``loaders`` when ``device`` is a GPU: copies
    to it are then asynchronous. A DataLoader reads the flag when an epoch's iterator starts."""
    for loader in loaders:
        if isinstance(loader, DataLoader):
            loader.pin_memory = device.type == "cuda"


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision's dtype on ``device``: bf16 where the GPU supports it, else fp16; None on the CPU, where it is not applied."""
    if device.type != "cuda":
        return None
    with torch.cuda.device(device):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
