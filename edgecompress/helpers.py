"""Small torch helpers every core package shares: a model's device, eval mode without gradients, output tensors."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without parameters)."""
    return next((parameter.device for parameter in model.parameters()), torch.device("cpu"))


@contextmanager
def evaluating(model: nn.Module, grad: bool = False) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode (without gradients unless ``grad``), then restore every submodule's own mode."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.set_grad_enabled(grad):
            yield model
    finally:
        for module, training in modes:
            module.training = training


def output_tensors(output: Any) -> list[torch.Tensor]:
    """Every tensor of a (nested list/tuple/dict) model output, in order."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (list, tuple)):
        return [tensor for item in output for tensor in output_tensors(item)]
    if isinstance(output, dict):
        return [tensor for item in output.values() for tensor in output_tensors(item)]
    return []
