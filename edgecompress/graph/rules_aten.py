"""Channel rules for aten ops, used on the torch.export graph of a submodule torch.fx cannot trace.

Rules are keyed by the op's overload packet (``aten.conv2d``), never by name strings. Ops whose
arguments mirror their torch function (activations, arithmetic, cat, mean, flatten, view) reuse
the fx rules of rules.py. Layers are found through their weight placeholder, which trace_export
tags with the owning module's qualified name (``OWNER``), so members name the real nn.Modules that
surgery cuts. An op without a rule that touches a channel dim raises :class:`UnsupportedOp`: the
caller then keeps the whole submodule opaque rather than risk a wrong grouping (for a whole model,
trace_toplevel.py applies the fx analysis' policy for unknown ops instead). Export bakes every view's
sizes into the graph, so a view that reshapes the channel dim keeps its input's channels.
"""

from __future__ import annotations

import math
import operator
from typing import Callable

import torch
from torch import nn
from torch._ops import OpOverload, OpOverloadPacket
from torch.fx import Node

from . import rules
from .context import AnalysisContext, Role
from .index_mapping import Layout, split
from .registry import ChannelRule, op_name, place
from .rules_layers import CONVS, conv_layout

aten = torch.ops.aten
OWNER = "edgecompress_owner"  # placeholder meta: (qualified module name, attribute) of a parameter or buffer

ATEN_RULES: dict[OpOverloadPacket, ChannelRule] = {}


class UnsupportedOp(Exception):
    """An aten op whose channel mapping is unknown (or a layer surgery cannot cut)."""


def register_aten_rule(*packets: OpOverloadPacket) -> Callable[[ChannelRule], ChannelRule]:
    def decorator(rule: ChannelRule) -> ChannelRule:
        ATEN_RULES.update((packet, rule) for packet in packets)
        return rule

    return decorator


def _ranks(node: Node) -> list[int]:
    """Ranks of every tensor ``node`` reads or returns."""
    values = [arg.meta.get("val") for arg in node.all_input_nodes]
    out = node.meta.get("val")
    values.extend(out if isinstance(out, (tuple, list)) else [out])
    return [value.dim() for value in values if isinstance(value, torch.Tensor)]


def unsupported(ctx: AnalysisContext, node: Node) -> Layout | None:
    """An op without a rule is harmless only when it touches no channel dim."""
    if any(rank >= 2 for rank in _ranks(node)):
        raise UnsupportedOp(f"no channel rule for {node.target}")
    return None


def aten_rule_for(node: Node) -> ChannelRule:
    if node.op != "call_function":
        return unsupported
    if node.target is operator.getitem:
        return getitem
    packet = node.target.overloadpacket if isinstance(node.target, OpOverload) else None
    return ATEN_RULES.get(packet, unsupported)


def owner(ctx: AnalysisContext, arg: object, *types: type[nn.Module]) -> str:
    """Qualified name of the module of ``types`` whose parameter or buffer ``arg`` is."""
    name = arg.meta.get(OWNER, ("", ""))[0] if isinstance(arg, Node) else ""
    if not isinstance(ctx.modules.get(name), types):
        raise UnsupportedOp(f"{getattr(arg, 'name', arg)} is not a parameter of a {'/'.join(t.__name__ for t in types)}")
    return name


register_aten_rule(
    aten.relu, aten.relu_, aten.sigmoid, aten.sigmoid_, aten.tanh, aten.silu, aten.silu_, aten.hardswish,
    aten.hardswish_, aten.hardsigmoid, aten.gelu, aten.leaky_relu, aten.leaky_relu_, aten.hardtanh, aten.hardtanh_,
    aten.elu, aten.mish, aten.softplus, aten.clamp, aten.dropout, aten.clone, aten.contiguous, aten.detach,
    aten.alias, aten.max_pool2d, aten.avg_pool2d, aten.adaptive_avg_pool2d, aten.upsample_nearest2d,
    aten.upsample_bilinear2d, aten.constant_pad_nd, aten.pad,
)(rules.passthrough)
register_aten_rule(aten.add, aten.add_, aten.sub, aten.sub_, aten.mul, aten.mul_, aten.div, aten.div_)(rules.elementwise)
register_aten_rule(aten.cat, aten.concat)(rules.cat)
register_aten_rule(aten.mean)(rules.mean)
register_aten_rule(aten.flatten)(rules.flatten)


@register_aten_rule(aten.view, aten.reshape, aten._unsafe_view)
def view(ctx: AnalysisContext, node: Node) -> Layout | None:
    """A flatten as rules.view; any other reshape of the channel dim has its sizes baked into the
    exported graph (an attention's view into heads), so its input keeps its channels and its output
    carries none that can be cut."""
    source = node.args[0]
    before, after = ctx.shape(source), ctx.shape(node)
    if before is None or after is None or len(before) < 2 or len(after) < 2:
        return rules.view(ctx, node)
    if after[:2] == before[:2] or (len(after) == 2 and after[0] == before[0] and after[1] == math.prod(before[1:])):
        return rules.view(ctx, node)
    reason = f"{op_name(node, ctx)} of {list(before)} to {list(after)} in {place(ctx, node)} hard-codes the channel count"
    ctx.block(ctx.channels(source), reason)
    return ctx.new_atoms(after[1], blocked=reason)


@register_aten_rule(aten.conv1d, aten.conv2d, aten.conv3d, aten.convolution)
def conv(ctx: AnalysisContext, node: Node) -> Layout | None:
    """A conv whose weight belongs to a Conv module with the same groups: the module's conv rule."""
    name = owner(ctx, node.args[1], *CONVS)
    layer = ctx.modules[name]
    full = node.target.overloadpacket is aten.convolution  # (input, weight, bias, stride, padding, dilation, transposed, ...)
    transposed = full and node.args[6]
    position = 8 if full else 6
    groups = node.args[position] if len(node.args) > position else node.kwargs.get("groups", 1)
    if transposed or groups != layer.groups or len(ctx.shape(node.args[0]) or ()) != len(layer.kernel_size) + 2:
        raise UnsupportedOp(f"{node.name} calls the weight of {name!r} differently from the module")
    return conv_layout(ctx, layer, name, ctx.channels(node.args[0]))


@register_aten_rule(aten.batch_norm)
def batchnorm(ctx: AnalysisContext, node: Node) -> Layout | None:
    """Batch norm of a BatchNorm module (found by its weight or, without affine, its running mean)."""
    source = node.args[1] if node.args[1] is not None else node.args[3]
    name = owner(ctx, source, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    layout = ctx.channels(node.args[0])
    ctx.add_members(layout, name, Role.BN)
    return layout


@register_aten_rule(aten.linear)
def linear(ctx: AnalysisContext, node: Node) -> Layout | None:
    """Linear on (N, F): features are channels; on (N, ..., F) it leaves dim 1 alone."""
    name = owner(ctx, node.args[1], nn.Linear)
    layout = ctx.channels(node.args[0])
    if len(ctx.shape(node.args[0])) > 2:
        return layout
    ctx.add_members(layout, name, Role.LINEAR_IN)
    outputs = ctx.new_atoms(ctx.modules[name].out_features)
    ctx.add_members(outputs, name, Role.LINEAR_OUT)
    return outputs


@register_aten_rule(aten.chunk, aten.split, aten.split_with_sizes)
def pieces(ctx: AnalysisContext, node: Node) -> Layout | None:
    """Equal chunks on dim 1 tie channel i of every piece (as rules_split); split sizes are baked in, so kept."""
    source, sizes = node.args[0], [int(value.shape[1]) for value in node.meta["val"]]
    layout, rank = ctx.channels(source), len(ctx.shape(source))
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    if dim % rank != 1:
        ctx.pieces[node] = [layout] * len(sizes)
        return None
    if node.target.overloadpacket is aten.chunk and len(set(sizes)) == 1:
        ctx.tie_groups(layout, len(sizes))
    else:
        ctx.block(layout, f"{node.target} into {sizes} in {place(ctx, node)} hard-codes channel counts")
    ctx.pieces[node] = split(layout, sizes)
    return None


def getitem(ctx: AnalysisContext, node: Node) -> Layout | None:
    """One piece of a chunk or split."""
    source, index = node.args
    if source not in ctx.pieces:
        return unsupported(ctx, node)
    return ctx.pieces[source][index]
