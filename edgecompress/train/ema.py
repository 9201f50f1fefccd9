"""Exponential moving average (EMA) of a model's weights, as YOLO trainers keep one for evaluation and export.

Built on torch's :class:`~torch.optim.swa_utils.AveragedModel` (a copy of the model whose parameters and
floating-point buffers, BatchNorm's running statistics included, are averaged) with a decay that ramps up:

    EMA_0 = W_0  (the weights training starts from)
    EMA_n = d_n * EMA_{n-1} + (1 - d_n) * W_n,   d_n = decay * (1 - exp(-n / ramp))

after optimizer step n. Early on d_n is small, so the average forgets the starting weights quickly; after a
few ``ramp`` steps d_n approaches ``decay`` and the average spans about ``1 / (1 - decay)`` steps. Integer
buffers (BatchNorm's batch counter) are copied, not averaged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

# YOLO trainers' constants: decay 0.9999, ramp 2000 steps
EMA_DECAY = 0.9999
EMA_RAMP_STEPS = 2000.0


def ema_decay(step: int, decay: float = EMA_DECAY, ramp: float = EMA_RAMP_STEPS) -> float:
    """d_n of the module docstring: the weight the average keeps at optimizer step ``step`` (from 1)."""
    return decay * (1.0 - math.exp(-step / ramp))


def weight_ema(model: nn.Module, decay: float = EMA_DECAY, ramp: float = EMA_RAMP_STEPS) -> AveragedModel:
    """A moving average of ``model``, starting at its current weights (EMA_0); call ``update_parameters(model)``
    after every optimizer step. ``state_dict()`` holds the averaged weights and the step count, so a resumed run
    continues the same average."""

    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], steps: Tensor) -> None:
        weight = ema_decay(int(steps), decay, ramp)
        for mean, value in zip(averaged, current):
            if mean.is_floating_point():
                mean.lerp_(value, 1.0 - weight)
            else:
                mean.copy_(value)

    average = AveragedModel(model, multi_avg_fn=update, use_buffers=True)
    average.update_parameters(model)  # EMA_0 = W_0; from here on n_averaged counts the optimizer steps
    return average.eval()
