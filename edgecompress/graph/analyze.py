"""Entry point of the graph stage: trace a model and compute its channel groups."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import EdgeCompressError
from .context import AnalysisContext
from .groups import ChannelGraph, build_groups
from .registry import rule_for
from .trace import check_ignore, propagate_shapes, trace_model


def analyze(model: nn.Module, example_input: torch.Tensor, ignore: Sequence[str] = ()) -> ChannelGraph:
    """Trace ``model`` with torch.fx, run the shape pass on ``example_input`` and group coupled channels.

    Channels reaching a model output, read or written by a module in ``ignore``, or touched by a
    grouped conv are blocked (kept). An op without a channel rule raises EdgeCompressError naming it,
    unless it clearly keeps the channel dim: then its channels are kept and ``notes`` says so.
    """
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 2:
        raise EdgeCompressError("example_input must be a batched tensor such as torch.randn(1, 3, 224, 224)")
    ignored = check_ignore(model, ignore)
    traced = trace_model(model, ignored)
    output_shapes = propagate_shapes(traced, model, example_input)
    modules = dict(model.named_modules())
    ctx = AnalysisContext(modules, ignored)
    for node in traced.graph.nodes:
        layout = rule_for(ctx, node)(ctx, node)
        if layout is not None:
            ctx.layouts[node] = layout
    order = {name: position for position, name in enumerate(modules)}
    return ChannelGraph(
        groups=build_groups(ctx, order),
        input_shape=tuple(example_input.shape),
        input_dtype=example_input.dtype,
        output_shapes=output_shapes,
        notes=tuple(ctx.notes),
    )
