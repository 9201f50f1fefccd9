"""Parameter and MAC counts."""

from __future__ import annotations

import torch
from torch import nn

from edgecompress.stats import ModelStats, model_stats


def test_counts_params_and_macs_of_conv_and_linear() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    stats = model_stats(model, torch.randn(1, 3, 8, 8))
    conv_macs, linear_macs = 8 * 3 * 9 * 64, 512 * 10
    assert stats == ModelStats(params=(8 * 27 + 8) + 16 + (512 * 10 + 10), macs=conv_macs + linear_macs)


def test_depthwise_macs_and_training_mode_restored() -> None:
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(4)).train()
    running_mean = model[1].running_mean.clone()
    stats = model_stats(model, torch.randn(2, 4, 5, 5))
    assert stats.macs == 2 * 4 * 9 * 25
    assert model.training and model[1].training and torch.equal(model[1].running_mean, running_mean)
