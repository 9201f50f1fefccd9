"""A user's task: one module, one registration. Counts bright images: regression scored by mean absolute error."""

from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from edgecompress.tasks import Task, TaskData, register_task


class BrightnessTask(Task):
    name = "brightness"
    primary_metric = "neg_mae"

    def load(self, data: Path, image_size: int, batch_size: int, limit: int | None = None, *, augment: str = "light", seed: int = 0,
             workers: int = 0) -> TaskData:
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(32, 3, image_size, image_size, generator=generator)
        targets = images.mean(dim=(1, 2, 3))
        dataset = TensorDataset(images, targets)
        return TaskData(DataLoader(dataset, batch_size), DataLoader(dataset, batch_size), 1, image_size, ["brightness"])

    def loss(self, model):
        return lambda output, target: torch.nn.functional.mse_loss(torch.as_tensor(output).flatten(), target)

    def evaluate(self, predict, model, loader) -> dict[str, float]:
        errors = [(torch.as_tensor(predict(images)).detach().flatten() - target).abs() for images, target in loader]
        return {"neg_mae": -float(torch.cat(errors).mean())}


register_task(BrightnessTask())
