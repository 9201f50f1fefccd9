"""Channel rules for ops that cut a tensor into pieces: chunk, split, tensor_split and indexing.

A piece on dim 1 is an index range of its input's layout (:func:`index_mapping.split`). What the
pieces' sizes will be *after* pruning decides what may be cut:

- ``chunk(n)`` and ``tensor_split(x, n)`` (n sections, not indices) recompute their sizes from the channel count. Equal pieces
  stay equal only if every piece loses the same number of channels, so channel i of every piece is
  tied to channel i of the first (YOLOv8's C2f: half A and half B lose the same local indices).
  Tying is stricter than equal counts, but it needs nothing beyond the union-find, and a group's
  score then sums the evidence of every piece. Unequal pieces (C not divisible by n) are kept.
- ``split``, ``tensor_split`` at indices and literal slices ``x[:, a:b]`` bake channel counts into forward: the input's
  channels are kept (blocked with the reason), since a pruned input would be cut at stale offsets.
"""

from __future__ import annotations

import operator

import torch
from torch.fx import Node

from . import index_mapping
from .context import AnalysisContext
from .index_mapping import Layout
from .registry import op_name, place, register_function_rule, register_method_rule, unknown_op

SIZE_RELATIVE = {"chunk", "tensor_split"}  # ops whose piece sizes follow the channel count


def _argument(node: Node, position: int, name: str, default: object) -> object:
    return node.args[position] if len(node.args) > position else node.kwargs.get(name, default)


def _op_key(node: Node) -> str:
    return str(node.target) if node.op == "call_method" else getattr(node.target, "__name__", "")


def _pieces_argument(node: Node) -> object:
    """The chunk count, split sizes or tensor_split sections/indices, however they were passed."""
    names = ("chunks", "split_size_or_sections", "split_size", "indices_or_sections", "sections", "indices")
    return node.args[1] if len(node.args) > 1 else next((node.kwargs[name] for name in names if name in node.kwargs), None)


def piece_count(node: Node) -> int | None:
    """Number of pieces a chunk/split/tensor_split node returns when fx must iterate it without shapes."""
    key, argument = _op_key(node), _pieces_argument(node)
    if key not in ("chunk", "split", "tensor_split"):
        return None
    if isinstance(argument, (list, tuple)):
        return len(argument) + (key == "tensor_split")
    return argument if isinstance(argument, int) and key != "split" else None


@register_function_rule(torch.chunk, torch.split, torch.tensor_split)
@register_method_rule("chunk", "split", "tensor_split")
def split(ctx: AnalysisContext, node: Node) -> Layout | None:
    """Pieces on dim 1 are index ranges of the input; pieces on another dim all carry the input's channels."""
    source = node.args[0] if node.args else next(iter(node.kwargs.values()))
    metas = node.meta.get("tensor_meta")
    if not ctx.has_channels(source) or not isinstance(metas, (tuple, list)):
        return unknown_op(ctx, node)
    layout, rank = ctx.channels(source), len(ctx.shape(source))
    if _argument(node, 2, "dim", 0) % rank != 1:
        ctx.pieces[node] = [layout] * len(metas)
        return None
    sizes = [int(meta.shape[1]) for meta in metas]
    relative = _op_key(node) in SIZE_RELATIVE and isinstance(_pieces_argument(node), int)
    if relative and len(set(sizes)) == 1:
        ctx.tie_groups(layout, len(sizes))
    else:
        ctx.block(layout, f"{op_name(node, ctx)} into {sizes} in {place(ctx, node)} hard-codes channel counts")
    ctx.pieces[node] = index_mapping.split(layout, sizes)
    return None


@register_function_rule(operator.getitem)
def getitem(ctx: AnalysisContext, node: Node) -> Layout | None:
    """A piece of a split's tuple, or basic slicing of a tensor (``x[:, a:b]`` keeps the sliced channels)."""
    source, index = node.args
    if source in ctx.pieces:
        if isinstance(index, slice):
            ctx.pieces[node] = ctx.pieces[source][index]
            return None
        return ctx.pieces[source][index] if isinstance(index, int) else unknown_op(ctx, node)
    if not ctx.has_channels(source) or not ctx.has_channels(node):
        return unknown_op(ctx, node)
    index = index if isinstance(index, tuple) else (index,)
    basic = all(isinstance(item, (slice, int)) for item in index[:2]) and isinstance(index[0], slice)
    if not basic or any(item is None or item is Ellipsis for item in index[:2]):
        return unknown_op(ctx, node)
    layout = ctx.channels(source)
    channel_index = index[1] if len(index) > 1 else slice(None)
    if channel_index == slice(None):
        return layout if ctx.shape(node)[1] == len(layout) else unknown_op(ctx, node)
    if isinstance(channel_index, int):
        return unknown_op(ctx, node)
    ctx.block(layout, f"slice [:, {channel_index.start}:{channel_index.stop}] in {place(ctx, node)} hard-codes channel indices")
    return layout[channel_index]
