"""Model training: ``fit`` with its learning-rate schedule, optional sparsity penalty, parameter groups and checkpoints,
on the device :func:`resolve_device` names."""

from .device import resolve_device
from .loop import TrainConfig, TrainHistory, bn_l1, fit

__all__ = ["TrainConfig", "TrainHistory", "bn_l1", "fit", "resolve_device"]
