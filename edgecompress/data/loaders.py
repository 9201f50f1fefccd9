"""The DataLoaders every task hands out: a seeded shuffle for training, a fixed order for evaluation, and the same
batches whatever the number of worker processes.

Workers (``workers > 0``) load and augment batches in parallel and are kept between epochs (``persistent_workers``).
The batches do not depend on them: the shuffle is drawn in the main process from its own generator, and an
augmenting dataset draws each sample from its seed, epoch and index (:class:`~.augment.EpochSeeded`), whose epoch
reaches the kept workers through shared memory. Worker processes are seeded from the loader's own generator
(torch's ``random`` and ``torch`` seeds, and numpy's global state by :func:`seed_worker`), never from the global one,
so the training's own random draws are the same with and without workers.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler


def seed_worker(worker_id: int) -> None:
    """A worker's numpy global state seeded from its torch seed (the loader's base seed plus the worker's id), which torch
    sets per worker while numpy's state would otherwise be a copy of the parent's in every worker."""
    np.random.seed(torch.initial_seed() % 2**32)


def _worker_options(workers: int, seed: int) -> dict:
    options = {"num_workers": workers, "generator": torch.Generator().manual_seed(seed)}
    if workers:
        options.update(persistent_workers=True, worker_init_fn=seed_worker)
    return options


def training_loader(dataset: Dataset, batch_size: int, *, seed: int = 0, workers: int = 0, collate_fn: Callable | None = None,
                    drop_last: bool = False) -> DataLoader:
    """Shuffled batches of ``dataset``: the order drawn from a generator seeded with ``seed`` (the sampler's, see
    :func:`~edgecompress.train.distributed.shuffle_generator`), loaded by ``workers`` processes (0: in this one)."""
    shuffle = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    return DataLoader(dataset, batch_size, sampler=shuffle, collate_fn=collate_fn, drop_last=drop_last, **_worker_options(workers, seed))


def evaluation_loader(dataset: Dataset, batch_size: int, *, workers: int = 0, collate_fn: Callable | None = None) -> DataLoader:
    """Batches of ``dataset`` in its order, loaded by ``workers`` processes (0: in this one)."""
    return DataLoader(dataset, batch_size, collate_fn=collate_fn, **_worker_options(workers, 0))
