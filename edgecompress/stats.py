"""Model size and compute: parameter count and multiply-accumulates of one forward pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .helpers import evaluating


@dataclass(frozen=True)
class ModelStats:
    params: int
    macs: int


def model_stats(model: nn.Module, example_input: torch.Tensor) -> ModelStats:
    """Count parameters and the MACs of one eval-mode forward on ``example_input`` (MACs = FLOPs // 2,
    as counted by torch's FlopCounterMode over convs and matmuls)."""
    counter = FlopCounterMode(display=False)
    with evaluating(model), counter:
        model(example_input)
    return ModelStats(params=sum(p.numel() for p in model.parameters()), macs=counter.get_total_flops() // 2)
