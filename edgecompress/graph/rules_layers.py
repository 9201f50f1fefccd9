"""Channel rules of layers with per-channel weights: convs (any groups), transposed convs, norms, PReLU.

Grouped convs (ResNeXt, RegNet) must keep equal-sized groups: channel i of every group is tied to
channel i of the first group, on the input and the output side, so surgery removes the same local
channels from each group. A conv with one input channel per group and several outputs (depthwise
with a multiplier) would lose whole groups at once on its input side, so its channels are kept.
GroupNorm statistics span a whole group: its channels are tied per group and whole groups go, so
removing channels never changes the statistics of those that stay.
"""

from __future__ import annotations

from torch import nn
from torch.fx import Node

from .context import AnalysisContext, Role
from .index_mapping import Layout
from .registry import register_module_rule, unknown_op

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
TRANSPOSED_CONVS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _has_batched_rank(ctx: AnalysisContext, node: Node, spatial_dims: int) -> bool:
    return len(ctx.shape(node.args[0]) or ()) == spatial_dims + 2


@register_module_rule(*CONVS, *TRANSPOSED_CONVS)
def conv(ctx: AnalysisContext, node: Node) -> Layout | None:
    """Dense conv: new output channels; depthwise: out channel i is in channel i; grouped: groups stay equal."""
    layer = ctx.module(node)
    if not _has_batched_rank(ctx, node, len(layer.kernel_size)):
        return unknown_op(ctx, node)  # unbatched input: dim 1 is not the channel dim
    return conv_layout(ctx, layer, str(node.target), ctx.channels(node.args[0]))


def conv_layout(ctx: AnalysisContext, layer: nn.Module, name: str, inputs: Layout) -> Layout:
    """Record conv ``name``'s members for the input ``inputs`` and return its output layout."""
    groups = layer.groups
    if groups > 1 and groups == layer.in_channels == layer.out_channels:
        ctx.add_members(inputs, name, Role.DEPTHWISE)
        return inputs
    outputs = ctx.new_atoms(layer.out_channels)
    if groups > 1 and layer.in_channels == groups:
        reason = f"conv {name!r} has one input channel per group (groups={groups}) and {layer.out_channels} outputs"
        ctx.block(inputs, reason)
        ctx.block(outputs, reason)
    elif groups > 1:
        ctx.tie_groups(inputs, groups)
        ctx.tie_groups(outputs, groups)
    ctx.add_members(inputs, name, Role.CONV_IN)
    ctx.add_members(outputs, name, Role.CONV_OUT)
    return outputs


@register_module_rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
def batchnorm(ctx: AnalysisContext, node: Node) -> Layout | None:
    if not ctx.has_channels(node.args[0]):
        return unknown_op(ctx, node)
    layout = ctx.channels(node.args[0])
    ctx.add_members(layout, str(node.target), Role.BN)
    return layout


@register_module_rule(nn.GroupNorm)
def groupnorm(ctx: AnalysisContext, node: Node) -> Layout | None:
    """Channels of one normalisation group are tied into one group channel: whole groups are removed."""
    if not ctx.has_channels(node.args[0]):
        return unknown_op(ctx, node)
    layout, norm = ctx.channels(node.args[0]), ctx.module(node)
    per = norm.num_channels // norm.num_groups
    for start in range(0, len(layout), per):
        for atom in layout[start + 1 : start + per]:
            ctx.union(layout[start], atom)
    if norm.affine:
        ctx.add_members(layout, str(node.target), Role.NORM)
    return layout


@register_module_rule(nn.LayerNorm)
def layernorm(ctx: AnalysisContext, node: Node) -> Layout | None:
    """LayerNorm over the features of (N, C): prunable (statistics then span fewer channels, so the
    cut is not lossless); over trailing dims of a higher-rank tensor it leaves dim 1 alone."""
    shape, norm = ctx.shape(node.args[0]), ctx.module(node)
    if shape is None or len(shape) < 2:
        return unknown_op(ctx, node)
    layout = ctx.channels(node.args[0])
    if len(norm.normalized_shape) <= len(shape) - 2:
        return layout
    if len(shape) != 2:
        return unknown_op(ctx, node)
    if norm.elementwise_affine:
        ctx.add_members(layout, str(node.target), Role.NORM)
    return layout


@register_module_rule(nn.PReLU)
def prelu(ctx: AnalysisContext, node: Node) -> Layout | None:
    """PReLU with one slope per channel is cut with the channel; a single shared slope passes through."""
    if not ctx.has_channels(node.args[0]):
        return unknown_op(ctx, node)
    layout = ctx.channels(node.args[0])
    if ctx.module(node).num_parameters > 1:
        ctx.add_members(layout, str(node.target), Role.CHANNELWISE)
    return layout
