"""Training on several processes with DistributedDataParallel (DDP), one process per GPU, started by ``torchrun``.

:func:`process_group` joins the processes torchrun started (it reads torchrun's ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``): NCCL on GPUs, gloo on the CPU. Outside torchrun every
helper here is a no-op and a build is one process. Inside, :func:`fit <edgecompress.train.loop.fit>` wraps
the model in DDP (gradients averaged over the processes) and gives each process its share of every batch
(:func:`shard_loader`); the pipeline lets only rank 0 write (:func:`is_main_process`) and hands rank 0's
decisions to the others (:func:`from_main_process`).

BatchNorm: with the sparsity penalty on (sparse training, whose penalty and pruning read the BN gammas),
:func:`synchronised_batchnorm` makes every BN normalise with the statistics of the whole batch over all
processes, as one process would: torch's ``SyncBatchNorm`` on GPUs, and on the CPU, where torch's kernels
for it do not exist, :class:`AllReduceBatchNorm`. Other stages keep each process's own statistics (torch's
default under DDP).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from typing import Any, Callable, ContextManager, Iterable, Iterator, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler, Subset

from ..errors import EdgeCompressError

T = TypeVar("T")

# How long a process waits for the others at a collective before failing. torchrun ends the others within
# seconds when one process dies; the timeout bounds the wait when none dies (a stuck process).
DEFAULT_TIMEOUT = timedelta(minutes=30)


def launched_by_torchrun() -> bool:
    """True in a process torchrun started (it sets ``WORLD_SIZE`` and ``LOCAL_RANK``)."""
    return "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def _initialised() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Processes training together: the process group's size, 1 outside one."""
    return dist.get_world_size() if _initialised() else 1


def rank() -> int:
    """This process's rank in the process group; outside one, torchrun's ``RANK``, else 0."""
    return dist.get_rank() if _initialised() else int(os.environ.get("RANK", 0))


def local_rank() -> int:
    """This process's index on its machine (torchrun's ``LOCAL_RANK``): the GPU it trains on."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    """True on rank 0, the one process that writes artifacts, checkpoints and logs."""
    return rank() == 0


@contextmanager
def process_group(device: torch.device, timeout: timedelta = DEFAULT_TIMEOUT) -> Iterator[None]:
    """Join the processes torchrun started, for the block: NCCL when ``device`` is a GPU, gloo on the CPU.

    A no-op outside torchrun, with one process, or when a process group already exists (the caller's own).
    """
    size = int(os.environ.get("WORLD_SIZE", 1))
    if size == 1 or _initialised():
        yield
        return
    if not dist.is_available():
        raise EdgeCompressError(f"torch {torch.__version__} was built without torch.distributed; run one process, or install a build with it")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    try:
        yield
    finally:
        leave_process_group()


def leave_process_group() -> None:
    """Leave the process group (every process, once the work they share is done): what follows runs on each process
    alone, :func:`rank` still telling rank 0 from the others."""
    if _initialised():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here."""
    if world_size() == 1:
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def from_main_process(compute: Callable[[], T]) -> T:
    """``compute()`` run on rank 0 only, its result (any picklable object) returned on every process."""
    if world_size() == 1:
        return compute()
    box = [compute() if is_main_process() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value: T) -> list[T]:
    """Every process's ``value`` (picklable), in rank order, on every process."""
    if world_size() == 1:
        return [value]
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def shuffle_generator(loader: Iterable) -> torch.Generator | None:
    """The generator ``loader``'s shuffle is drawn from: its RandomSampler's (a DataLoader made with ``shuffle=True`` and a
    ``generator`` gives its sampler that one); None for a loader that does not shuffle or shuffles from torch's global state.
    A loader's own ``generator`` may be another one, which only seeds its worker processes."""
    sampler = getattr(loader, "sampler", None)
    return sampler.generator if isinstance(sampler, RandomSampler) else None


def shard_loader(loader: Iterable) -> Iterable:
    """``loader`` as each process reads it under DDP: a DataLoader over the same dataset whose DistributedSampler
    hands this process every world-th sample of one shuffle all processes share, in batches of
    ``batch_size / world_size``, so the processes' batches together are one batch of ``batch_size``.

    The shuffle's seed is rank 0's loader's shuffle generator's (the pipeline seeds it per stage); :func:`set_epoch` reshuffles
    it. The loader's worker processes and their settings are kept. Returns ``loader`` unchanged with one process.
    """
    world = world_size()
    if world == 1:
        return loader
    if not isinstance(loader, DataLoader) or loader.batch_size is None:
        raise EdgeCompressError(f"training on {world} processes splits every batch over them, which needs a torch DataLoader with a batch_size, "
                                f"got {type(loader).__name__}")
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler):
        shuffle, seed = sampler.shuffle, sampler.seed
    elif isinstance(sampler, (RandomSampler, SequentialSampler)):
        shuffle = isinstance(sampler, RandomSampler)
        generator = shuffle_generator(loader)
        seed = generator.initial_seed() if generator is not None else 0
    else:
        raise EdgeCompressError(f"cannot split a DataLoader with a {type(sampler).__name__} over {world} processes; "
                                "use shuffle=True or a plain DataLoader")
    if loader.batch_size % world:
        raise EdgeCompressError(f"batch size {loader.batch_size} does not split evenly over {world} processes; pass a --batch-size that is a multiple of {world}")
    seed = from_main_process(lambda: seed)  # one shuffle for all, whatever seeded each process's generator
    sampler = DistributedSampler(loader.dataset, num_replicas=world, rank=rank(), shuffle=shuffle, seed=seed)
    return DataLoader(loader.dataset, loader.batch_size // world, sampler=sampler, num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                      pin_memory=loader.pin_memory, drop_last=loader.drop_last, timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                      generator=loader.generator, prefetch_factor=loader.prefetch_factor, persistent_workers=loader.persistent_workers)


def set_epoch(loader: Iterable, epoch: int) -> None:
    """Start ``epoch`` of ``loader``: reshuffle a DistributedSampler's order (the same order on every process, another each
    epoch), and tell a dataset (or the dataset under a Subset) with its own ``set_epoch`` (augmentations drawn per epoch)."""
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    dataset = getattr(loader, "dataset", None)
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    if callable(getattr(dataset, "set_epoch", None)):
        dataset.set_epoch(epoch)


class _SumOverProcesses(torch.autograd.Function):
    """A tensor summed over every process; its gradient is the gradients' sum over the processes (every process's
    loss depends on every process's input through the sum)."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class AllReduceBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm that, in training, normalises with the mean and variance of the whole batch over every
    process, for the gloo backend on the CPU, where torch's SyncBatchNorm does not run. The statistics
    are summed over the processes with a differentiable all-reduce, so gradients flow through them as in
    one process holding the whole batch; running statistics are updated as BatchNorm updates them."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        if not self.training or world_size() == 1:
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        count = torch.tensor(float(input.numel() // input.shape[1]), dtype=torch.float64)
        dist.all_reduce(count)
        mean = _SumOverProcesses.apply(input.sum(dims)) / count
        centred = input - mean.view(shape)
        variance = _SumOverProcesses.apply(centred.square().sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean, factor)
                self.running_var.lerp_(variance * count / max(float(count) - 1, 1.0), factor)
        output = centred * torch.rsqrt(variance + self.eps).view(shape)
        return output * self.weight.view(shape) + self.bias.view(shape) if self.affine else output


def _twin(batchnorm: nn.modules.batchnorm._BatchNorm, cls: type) -> nn.Module:
    """A ``cls`` BatchNorm sharing ``batchnorm``'s parameters and buffers (the same tensors: training one trains the other)."""
    twin = cls(batchnorm.num_features, batchnorm.eps, batchnorm.momentum, batchnorm.affine, batchnorm.track_running_stats)
    for name, value in [*batchnorm.named_parameters(recurse=False), *batchnorm.named_buffers(recurse=False)]:
        setattr(twin, name, value)
    return twin.train(batchnorm.training)


@contextmanager
def synchronised_batchnorm(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """Within the block, every BatchNorm of ``model`` (on ``device``) normalises over all processes' batches:
    torch's SyncBatchNorm on a GPU, :class:`AllReduceBatchNorm` on the CPU. They share the originals' parameters
    and buffers, and the originals are put back afterwards, so the model keeps its classes and its trained values."""
    cls = nn.SyncBatchNorm if device.type == "cuda" else AllReduceBatchNorm
    swapped = [(name, module) for name, module in model.named_modules()
               if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, (nn.SyncBatchNorm, AllReduceBatchNorm))]
    for name, module in swapped:
        _replace(model, name, _twin(module, cls))
    try:
        yield model
    finally:
        for name, module in swapped:
            _replace(model, name, module)


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


@contextmanager
def data_parallel(model: nn.Module, loader: Iterable, device: torch.device, *, sync_batchnorm: bool = False) -> Iterator[tuple[nn.Module, Iterable]]:
    """The module to run and the loader to read while training ``model`` (on ``device``): with several processes,
    ``model`` wrapped in DDP and this process's shard of ``loader`` (:func:`shard_loader`), BatchNorms synchronised
    if ``sync_batchnorm``; with one, the two unchanged. Train ``model``'s own parameters: DDP shares them."""
    if world_size() == 1:
        yield model, loader
        return
    shards = shard_loader(loader)
    with synchronised_batchnorm(model, device) if sync_batchnorm else nullcontext():
        yield DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None), shards


def gradient_sync(module: nn.Module, enabled: bool) -> ContextManager:
    """For gradient accumulation: with ``enabled`` False, a DDP module keeps this backward's gradients local
    (DDP's ``no_sync``); the next synchronised backward averages what accumulated."""
    return nullcontext() if enabled or not isinstance(module, DistributedDataParallel) else module.no_sync()


def torchrun_command(nproc: int, args: list[str]) -> list[str]:
    """The command that reruns ``python -m edgecompress ARGS`` under torchrun, as ``nproc`` processes on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "edgecompress", *args]
