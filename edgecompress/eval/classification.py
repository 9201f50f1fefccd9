"""Top-1 accuracy for classifiers."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader


def classification_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows of ``logits [N,C]`` whose arg-max equals ``labels [N]``."""
    if labels.numel() == 0:
        return 0.0
    return (logits.argmax(dim=1) == labels).float().mean().item()


@torch.no_grad()
def evaluate_classification(model: nn.Module, loader: DataLoader, device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy of ``model`` (put in eval mode) over every batch of ``loader``."""
    model.eval().to(device)
    correct = total = 0
    for images, labels in loader:
        predictions = model(images.to(device)).argmax(dim=1).cpu()
        correct += int((predictions == labels).sum())
        total += labels.numel()
    return correct / total if total else 0.0
