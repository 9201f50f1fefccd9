"""Model training: ``fit`` with its learning-rate schedule, optional sparsity penalty, parameter groups, checkpoints,
moving average of the weights and per-epoch validation, on the device :func:`resolve_device` names; :func:`distilling`
adds a frozen teacher's outputs to the loss."""

from .device import resolve_device
from .distill import distilling
from .ema import weight_ema
from .history import EpochRecord, TrainHistory, write_train_csv
from .loop import TrainConfig, bn_l1, fit

__all__ = ["EpochRecord", "TrainConfig", "TrainHistory", "bn_l1", "distilling", "fit", "resolve_device", "weight_ema", "write_train_csv"]
