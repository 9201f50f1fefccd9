"""Layer surgery: physically slice a layer's weights to the kept channels.

A registry keyed by module type; each entry names the attribute holding the size of each prunable
dimension ("out", "in") and a function that slices the module in place with fresh Parameters, so
the pruned model is a plain, smaller nn.Module that torch.save() stores whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import nn

from ..errors import EdgeCompressError

CutFn = Callable[[nn.Module, Mapping[str, torch.Tensor]], None]


@dataclass(frozen=True)
class Surgery:
    dims: dict[str, str]  # dimension name -> attribute holding its size
    cut: CutFn  # cut(module, {dim: kept indices}) slices the module in place


SURGERIES: dict[type[nn.Module], Surgery] = {}


def register_surgery(module_type: type[nn.Module], dims: dict[str, str]) -> Callable[[CutFn], CutFn]:
    """Register how to slice ``module_type``; ``dims`` maps "out"/"in" to the attribute with its size."""

    def decorator(fn: CutFn) -> CutFn:
        SURGERIES[module_type] = Surgery(dims, fn)
        return fn

    return decorator


def surgery_for(module: nn.Module) -> Surgery:
    for cls in type(module).__mro__:
        if cls in SURGERIES:
            return SURGERIES[cls]
    raise EdgeCompressError(
        f"no surgery registered for {type(module).__name__}; register one with "
        "edgecompress.prune.register_surgery or list the module in ignore"
    )


def dimension_size(module: nn.Module, dim: str) -> int:
    return int(getattr(module, surgery_for(module).dims[dim]))


def _parameter(old: nn.Parameter, value: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(value.clone(), requires_grad=old.requires_grad)


@register_surgery(nn.Conv2d, {"out": "out_channels", "in": "in_channels"})
def cut_conv2d(conv: nn.Conv2d, keep: Mapping[str, torch.Tensor]) -> None:
    """Dense conv: slice filters (out) and their input channels (in). Depthwise: both at once."""
    weight = conv.weight.detach()
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    same = "out" in keep and "in" in keep and torch.equal(keep["out"], keep["in"])
    if conv.groups > 1 and not (depthwise and same):
        raise EdgeCompressError(f"cannot cut a grouped conv ({conv}) except identically in and out when depthwise")
    if "out" in keep:
        weight = weight[keep["out"]]
        if conv.bias is not None:
            conv.bias = _parameter(conv.bias, conv.bias.detach()[keep["out"]])
        conv.out_channels = len(keep["out"])
    if "in" in keep:
        weight = weight if depthwise else weight[:, keep["in"]]
        conv.in_channels = len(keep["in"])
    if depthwise:
        conv.groups = conv.in_channels
    conv.weight = _parameter(conv.weight, weight)


@register_surgery(nn.BatchNorm2d, {"out": "num_features"})
def cut_batchnorm(bn: nn.BatchNorm2d, keep: Mapping[str, torch.Tensor]) -> None:
    """Slice gamma, beta and the running statistics."""
    index = keep["out"]
    if bn.affine:
        bn.weight = _parameter(bn.weight, bn.weight.detach()[index])
        bn.bias = _parameter(bn.bias, bn.bias.detach()[index])
    if bn.running_mean is not None:
        bn.running_mean = bn.running_mean[index].clone()
        bn.running_var = bn.running_var[index].clone()
    bn.num_features = len(index)


@register_surgery(nn.Linear, {"out": "out_features", "in": "in_features"})
def cut_linear(linear: nn.Linear, keep: Mapping[str, torch.Tensor]) -> None:
    weight = linear.weight.detach()
    if "out" in keep:
        weight = weight[keep["out"]]
        if linear.bias is not None:
            linear.bias = _parameter(linear.bias, linear.bias.detach()[keep["out"]])
        linear.out_features = len(keep["out"])
    if "in" in keep:
        weight = weight[:, keep["in"]]
        linear.in_features = len(keep["in"])
    linear.weight = _parameter(linear.weight, weight)
