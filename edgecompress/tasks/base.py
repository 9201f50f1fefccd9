"""What every task provides: loaders of its data, its model contract, loss, distillation term, metric and bundled dataset."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..errors import EdgeCompressError
from ..eval.predict import Predict

Loss = Callable[[object, Tensor], Tensor]
Distillation = Callable[[object, object], Tensor]


@dataclass
class TaskData:
    """Loaders and facts of a dataset."""

    train: DataLoader
    val: DataLoader
    num_classes: int
    image_size: int
    names: list[str]


def limit_dataset(dataset: Dataset, limit: int | None) -> Dataset:
    """At most ``limit`` samples, evenly spread (an ImageFolder is sorted by class)."""
    if not limit or limit >= len(dataset):
        return dataset
    return Subset(dataset, np.linspace(0, len(dataset) - 1, limit).round().astype(int).tolist())


class Task(ABC):
    """A task: turns a data spec into loaders, checks a model fits it, gives the training loss and measures the metric.

    ``evaluate`` takes a prediction function (a PyTorch module or an onnxruntime session, see
    :mod:`edgecompress.eval.predict`), so the same metric is measured before and after every stage
    and on the exported ONNX.
    """

    name: str
    primary_metric: str

    @abstractmethod
    def load(self, data: Path, image_size: int, batch_size: int, limit: int | None = None, *, augment: str = "light", seed: int = 0,
             workers: int = 0) -> TaskData:
        """Training and validation loaders of the dataset at ``data`` (at most ``limit`` training samples); the training
        samples augmented at level ``augment`` (see :data:`~edgecompress.data.AUGMENTATIONS`) drawn from ``seed``,
        the validation samples never. ``workers`` processes load the batches (0: the calling one); the batches must
        not depend on it (:func:`~edgecompress.data.loaders.training_loader` and ``evaluation_loader`` see to that)."""

    def default_data(self, root: Path, *, train_images: int, val_images: int, image_size: int, seed: int) -> Path:
        """The task's bundled dataset, generated (or reused) under ``root``; returns what ``load`` takes."""
        raise EdgeCompressError(f"task {self.name} has no bundled dataset; pass --data PATH")

    def check_model(self, model: nn.Module) -> None:
        """Raise a one-line EdgeCompressError naming the fix when ``model`` does not fit this task."""

    @abstractmethod
    def loss(self, model: nn.Module) -> Loss:
        """The loss the training engine minimises: ``loss(outputs, targets) -> scalar``."""

    def distillation_loss(self, model: nn.Module) -> Distillation:
        """The term that pulls ``model``'s outputs towards a teacher's on the same batch (``--distill``):
        ``distillation(student_outputs, teacher_outputs) -> scalar``, exactly zero when the two are equal, in the units
        of :meth:`loss`, so a weight of 1 weighs the teacher as much as the labels. A task without one refuses ``--distill``."""
        raise EdgeCompressError(f"task {self.name} has no distillation loss; build with --no-distill")

    def prepare(self, model: nn.Module, data: TaskData) -> None:
        """Fit what the model needs from the data before training from scratch; nothing by default."""

    def export_module(self, model: nn.Module) -> nn.Module:
        """The module exported (ONNX) and deployed in place of ``model``: ``model`` itself by default; a task
        may append the fixed post-processing its deployed layout needs (it must stay float)."""
        return model

    @abstractmethod
    def evaluate(self, predict: Predict, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """Metrics of ``predict`` on ``loader``, ``primary_metric`` among them; ``model`` supplies the facts decoding needs."""
