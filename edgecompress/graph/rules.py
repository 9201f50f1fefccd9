"""Built-in channel rules: linear, channel-wise ops, arithmetic, concat, flatten (conv and norms: rules_layers)."""

from __future__ import annotations

import math
import operator
from functools import reduce

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from . import index_mapping
from .context import AnalysisContext, Role
from .index_mapping import Layout
from .registry import op_name, place, register_function_rule, register_method_rule, register_module_rule, unknown_op


@register_module_rule(nn.Linear)
def linear(ctx: AnalysisContext, node: Node) -> Layout | None:
    """Linear on (N, F): features are channels; on (N, ..., F) it leaves dim 1 alone and is not pruned."""
    if not ctx.has_channels(node.args[0]):
        return unknown_op(ctx, node)
    layout = ctx.channels(node.args[0])
    if len(ctx.shape(node.args[0])) > 2:
        return layout
    name = str(node.target)
    ctx.add_members(layout, name, Role.LINEAR_IN)
    outputs = ctx.new_atoms(ctx.module(node).out_features)
    ctx.add_members(outputs, name, Role.LINEAR_OUT)
    return outputs


@register_module_rule(
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.GELU, nn.Mish,
    nn.ELU, nn.CELU, nn.SELU, nn.Hardtanh, nn.Softplus, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.Upsample,
    nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d, nn.ZeroPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d,
)
@register_function_rule(
    torch.relu, F.relu, F.relu6, F.silu, F.hardswish, F.hardsigmoid, torch.sigmoid, F.sigmoid, torch.tanh,
    F.leaky_relu, F.gelu, F.mish, F.elu, F.hardtanh, F.softplus, F.dropout, F.max_pool1d, F.max_pool2d, F.avg_pool1d,
    F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.interpolate, F.pad,
)
@register_method_rule("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "contiguous", "clone")
def passthrough(ctx: AnalysisContext, node: Node) -> Layout | None:
    """Channel-wise ops (activations, pooling, resizing, spatial padding): channel i stays channel i."""
    source = node.args[0] if node.args else node.kwargs.get("input")
    out = ctx.shape(node)
    if not ctx.has_channels(source) or out is None or len(out) < 2 or out[1] != ctx.shape(source)[1]:
        return unknown_op(ctx, node)
    return ctx.channels(source)


@register_function_rule(
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub, operator.imul,
    operator.itruediv, torch.add, torch.sub, torch.mul, torch.div, torch.clamp,
)
@register_method_rule("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "clamp", "clamp_")
def elementwise(ctx: AnalysisContext, node: Node) -> Layout | None:
    """Same-channel arithmetic (residual add, SE multiply): channel i of every operand is tied together.

    Operands broadcast along the channel dim (size 1, scalars) tie nothing; a lower-rank tensor whose
    dims land on the channel dim (a (C, 1, 1) constant) blocks the channels.
    """
    out = ctx.shape(node)
    if out is None or len(out) < 2:
        return unknown_op(ctx, node)
    layout: Layout | None = None
    foreign = False
    for arg in node.all_input_nodes:
        shape = ctx.shape(arg)
        dim = 1 - (len(out) - len(shape)) if shape is not None else -1
        if dim < 0 or (shape[dim] == 1 and out[1] != 1):
            continue
        if dim != 1:
            foreign = True
            continue
        operand = ctx.channels(arg)
        layout = operand if layout is None else ctx.unify(layout, operand)
    if layout is None:
        return ctx.new_atoms(out[1], blocked=f"{node.name} is not computed by a prunable layer")
    if foreign:
        ctx.block(layout, f"{op_name(node, ctx)} in {place(ctx, node)} mixes channels with a lower-rank tensor")
    return layout


@register_function_rule(torch.cat, torch.concat, torch.concatenate)
def cat(ctx: AnalysisContext, node: Node) -> Layout | None:
    """Concat on dim 1 stacks the layouts with offsets; on another dim it ties channel i of every input."""
    tensors = node.args[0] if node.args else node.kwargs["tensors"]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    out = ctx.shape(node)
    if out is None or len(out) < 2 or not all(ctx.has_channels(t) for t in tensors):
        return unknown_op(ctx, node)
    layouts = [ctx.channels(t) for t in tensors]
    return index_mapping.concat(layouts) if dim % len(out) == 1 else reduce(ctx.unify, layouts)


@register_function_rule(torch.mean)
@register_method_rule("mean")
def mean(ctx: AnalysisContext, node: Node) -> Layout | None:
    """A mean over spatial dims (global pooling written as x.mean((2, 3))) keeps the channels."""
    source = node.args[0]
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if dims is None or not ctx.has_channels(source):
        return unknown_op(ctx, node)
    rank = len(ctx.shape(source))
    reduced = {d % rank for d in (dims if isinstance(dims, (tuple, list)) else (dims,))}
    return unknown_op(ctx, node) if reduced & {0, 1} else ctx.channels(source)


@register_module_rule(nn.Flatten)
@register_function_rule(torch.flatten)
@register_method_rule("flatten")
def flatten(ctx: AnalysisContext, node: Node) -> Layout | None:
    """(N, C, *S) -> (N, C*S) maps channel c to features c*S .. c*S+S-1; flattening past dim 1 keeps C."""
    source = node.args[0]
    if not ctx.has_channels(source) or not ctx.has_channels(node):
        return unknown_op(ctx, node)
    before, after = ctx.shape(source), ctx.shape(node)
    if after[:2] == before[:2]:
        return ctx.channels(source)
    if len(after) == 2 and after[0] == before[0] and after[1] == math.prod(before[1:]):
        return index_mapping.flatten(ctx.channels(source), ctx.spatial_size(source))
    return unknown_op(ctx, node)


@register_function_rule(torch.reshape)
@register_method_rule("view", "reshape")
def view(ctx: AnalysisContext, node: Node) -> Layout | None:
    """view/reshape as a flatten; a literal size on dim 1 is baked into forward, so those channels stay."""
    layout = flatten(ctx, node)
    sizes = list(node.args[1:]) or [node.kwargs.get("shape", node.kwargs.get("size"))]
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = list(sizes[0])
    if layout is not None and len(sizes) > 1 and isinstance(sizes[1], int) and sizes[1] != -1:
        ctx.block(layout, f"{op_name(node, ctx)} in {place(ctx, node)} hard-codes size {sizes[1]} on dim 1")
    return layout
