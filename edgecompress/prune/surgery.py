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
    size = getattr(module, surgery_for(module).dims[dim])
    return int(size[-1] if isinstance(size, tuple) else size)


def _parameter(old: nn.Parameter, value: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(value.clone(), requires_grad=old.requires_grad)


def _local_indices(keep: torch.Tensor, size: int, groups: int, module: nn.Module) -> torch.Tensor:
    """Kept indices within one group; every group must keep the same local indices."""
    per = size // groups
    local = keep.view(groups, -1) % per if len(keep) % groups == 0 else None
    owner = keep.view(groups, -1) // per if local is not None else None
    if local is None or not (local == local[0]).all() or not (owner == torch.arange(groups)[:, None]).all():
        raise EdgeCompressError(f"cannot cut {module} unevenly across its {groups} groups; plan with edgecompress.prune.plan_pruning")
    return local[0]


def _cut_grouped_weight(layer: nn.Module, keep: Mapping[str, torch.Tensor], first: str, second: str) -> None:
    """Slice a conv-like weight whose dim 0 is the ``first`` dimension and dim 1 the ``second`` one per group."""
    weight, groups = layer.weight.detach(), layer.groups
    depthwise = groups > 1 and groups == layer.in_channels == layer.out_channels
    if depthwise:
        if not ("out" in keep and "in" in keep and torch.equal(keep["out"], keep["in"])):
            raise EdgeCompressError(f"a depthwise conv ({layer}) must lose the same input and output channels")
        weight = weight[keep["out"]]
    else:
        sizes = {"out": layer.out_channels, "in": layer.in_channels}
        if first in keep:
            weight = weight[keep[first]]
        if second in keep:
            weight = weight[:, _local_indices(keep[second], sizes[second], groups, layer)]
        if first in keep and groups > 1:
            _local_indices(keep[first], sizes[first], groups, layer)
    if "out" in keep and layer.bias is not None:
        layer.bias = _parameter(layer.bias, layer.bias.detach()[keep["out"]])
    layer.out_channels = len(keep.get("out", range(layer.out_channels)))
    layer.in_channels = len(keep.get("in", range(layer.in_channels)))
    if depthwise:
        layer.groups = layer.in_channels
    layer.weight = _parameter(layer.weight, weight)


CONV_DIMS = {"out": "out_channels", "in": "in_channels"}


@register_surgery(nn.modules.conv._ConvNd, CONV_DIMS)
def cut_conv(conv: nn.Module, keep: Mapping[str, torch.Tensor]) -> None:
    """Conv (1d/2d/3d, any groups): weight is (out, in / groups, *kernel); depthwise convs lose both at once."""
    _cut_grouped_weight(conv, keep, "out", "in")


@register_surgery(nn.modules.conv._ConvTransposeNd, CONV_DIMS)
def cut_conv_transpose(conv: nn.Module, keep: Mapping[str, torch.Tensor]) -> None:
    """Transposed conv: weight is (in, out / groups, *kernel)."""
    _cut_grouped_weight(conv, keep, "in", "out")


@register_surgery(nn.modules.batchnorm._BatchNorm, {"out": "num_features"})
def cut_batchnorm(bn: nn.Module, keep: Mapping[str, torch.Tensor]) -> None:
    """Slice gamma, beta and the running statistics."""
    index = keep["out"]
    if bn.affine:
        bn.weight = _parameter(bn.weight, bn.weight.detach()[index])
        bn.bias = _parameter(bn.bias, bn.bias.detach()[index])
    if bn.running_mean is not None:
        bn.running_mean = bn.running_mean[index].clone()
        bn.running_var = bn.running_var[index].clone()
    bn.num_features = len(index)


def _cut_affine(module: nn.Module, index: torch.Tensor) -> None:
    for name in ("weight", "bias"):
        parameter = getattr(module, name, None)
        if parameter is not None:
            setattr(module, name, _parameter(parameter, parameter.detach()[index]))


@register_surgery(nn.GroupNorm, {"out": "num_channels"})
def cut_groupnorm(norm: nn.GroupNorm, keep: Mapping[str, torch.Tensor]) -> None:
    """Whole groups go: the number of groups shrinks with the channels."""
    per = norm.num_channels // norm.num_groups
    index = keep["out"]
    if len(index) % per or not (index.view(-1, per) - index.view(-1, per)[:, :1] == torch.arange(per)).all():
        raise EdgeCompressError(f"{norm} can only lose whole groups of {per} channels; plan with edgecompress.prune.plan_pruning")
    _cut_affine(norm, index)
    norm.num_channels, norm.num_groups = len(index), len(index) // per


@register_surgery(nn.LayerNorm, {"out": "normalized_shape"})
def cut_layernorm(norm: nn.LayerNorm, keep: Mapping[str, torch.Tensor]) -> None:
    _cut_affine(norm, keep["out"])
    norm.normalized_shape = (len(keep["out"]),)


@register_surgery(nn.PReLU, {"out": "num_parameters"})
def cut_prelu(prelu: nn.PReLU, keep: Mapping[str, torch.Tensor]) -> None:
    _cut_affine(prelu, keep["out"])
    prelu.num_parameters = len(keep["out"])


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
