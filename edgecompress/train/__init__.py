"""Model training: ``fit`` with its learning-rate schedule, optional sparsity penalty, parameter groups and checkpoints."""

from .loop import TrainConfig, TrainHistory, bn_l1, fit

__all__ = ["TrainConfig", "TrainHistory", "bn_l1", "fit"]
