"""Model training: ``fit`` with its learning-rate schedule, optional sparsity penalty, parameter groups and checkpoints,
on the device :func:`resolve_device` names; :func:`distilling` adds a frozen teacher's outputs to the loss."""

from .device import resolve_device
from .distill import distilling
from .loop import TrainConfig, TrainHistory, bn_l1, fit

__all__ = ["TrainConfig", "TrainHistory", "bn_l1", "distilling", "fit", "resolve_device"]
