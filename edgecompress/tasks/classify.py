"""Image classification on an ImageFolder layout; metric: top-1 accuracy."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..errors import EdgeCompressError
from ..eval import classification_accuracy
from ..eval.predict import Predict
from ..progress import track
from ..train.distill import softmax_kl
from .base import Distillation, Loss, Task, TaskData, limit_dataset


def _logits(output) -> torch.Tensor:
    return torch.as_tensor(output[0] if isinstance(output, (list, tuple)) else output)


class ClassificationTask(Task):
    """Image classification on an ImageFolder layout (``train/`` and ``val/`` of class folders); metric: top-1 accuracy."""

    name = "classify"
    primary_metric = "top1"
    distillation_temperature = 4.0
    """Softens both distributions so the teacher's ranking of the wrong classes is learnt too (Hinton et al. 2015)."""

    def load(self, data: Path, image_size: int, batch_size: int, limit: int | None = None, *, augment: str = "light", seed: int = 0,
             workers: int = 0) -> TaskData:
        from ..data.imagefolder import ImageFolderDataset
        from ..data.loaders import evaluation_loader, training_loader

        root = Path(data)
        train_dir, val_dir = root / "train", root / "val"
        if not train_dir.is_dir() or not val_dir.is_dir():
            raise EdgeCompressError(f"{root} needs train/ and val/ folders of class sub-folders (ImageFolder layout)")
        train = ImageFolderDataset(train_dir, image_size, augment=augment, seed=seed)
        val = ImageFolderDataset(val_dir, image_size)
        return TaskData(
            train=training_loader(limit_dataset(train, limit), batch_size, seed=seed, workers=workers),
            val=evaluation_loader(limit_dataset(val, limit), batch_size, workers=workers),
            num_classes=len(train.classes),
            image_size=image_size,
            names=list(train.classes),
        )

    def loss(self, model: nn.Module) -> Loss:
        return lambda logits, labels: F.cross_entropy(torch.as_tensor(logits), labels)

    def distillation_loss(self, model: nn.Module) -> Distillation:
        """Hinton et al.'s knowledge distillation: T^2 KL(softmax(teacher / T) || softmax(student / T)), averaged over the
        batch, T = ``distillation_temperature``; the T^2 keeps its gradients on the cross-entropy's scale."""
        temperature = self.distillation_temperature
        return lambda student, teacher: softmax_kl(_logits(student), _logits(teacher), temperature=temperature).mean()

    @torch.no_grad()
    def evaluate(self, predict: Predict, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        logits, labels = [], []
        for images, batch_labels in track(loader, "evaluating"):
            logits.append(_logits(predict(images)))
            labels.append(batch_labels.to(logits[-1].device))  # the metric on the model's device
        return {"top1": classification_accuracy(torch.cat(logits), torch.cat(labels))}
