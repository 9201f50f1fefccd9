"""Entry point of the graph stage: trace a model and compute its channel groups."""

from __future__ import annotations

import gc
import math
from contextlib import contextmanager
from typing import Iterable, Iterator, Sequence

import torch
from torch import fx, nn

from ..errors import EdgeCompressError
from .context import AnalysisContext
from .groups import ChannelGraph, build_groups
from .registry import rule_for
from .trace import UntraceableForward, check_ignore, propagate_shapes, trace_model
from .trace_export import ExportedSubmodule, export_untraceable
from .trace_toplevel import analyse_toplevel


def analyze(model: nn.Module, example_input: torch.Tensor, ignore: Sequence[str] = ()) -> ChannelGraph:
    """Trace ``model`` with torch.fx, run the shape pass on ``example_input`` and group coupled channels.

    A submodule fx cannot trace is analysed on its torch.export graph (graph/trace_export.py), and so
    is the whole model when fx cannot trace its own forward (graph/trace_toplevel.py). Channels
    reaching a model output, or read or written by a module in ``ignore`` or one neither fx nor
    torch.export can analyse (kept whole, with a note), are blocked (kept). An op without a channel rule raises
    EdgeCompressError naming it, unless it clearly keeps the channel dim: then its channels are kept
    and ``notes`` says so.
    """
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 2:
        raise EdgeCompressError("example_input must be a batched tensor such as torch.randn(1, 3, 224, 224)")
    with collector_paused():
        return _analyze(model, example_input, check_ignore(model, ignore))


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector (restored afterwards): the analysis allocates tens of
    thousands of small containers, and the full collections they trigger, each scanning every object
    torch keeps alive (~165k), took 2-4x longer than the analysis itself."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _analyze(model: nn.Module, example_input: torch.Tensor, ignored: frozenset[str]) -> ChannelGraph:
    modules = dict(model.named_modules())
    try:
        traced, opaque = trace_model(model, ignored)
    except UntraceableForward as fx_failure:
        ctx = AnalysisContext(modules, ignored)
        output_shapes, macs = analyse_toplevel(ctx, model, example_input, fx_failure.detail)
    else:
        output_shapes = propagate_shapes(traced, model, example_input)
        exported = export_untraceable(traced, modules, opaque, ignored)
        ctx = AnalysisContext(modules, ignored, opaque)
        ctx.notes.extend(opaque.values())
        for node in traced.graph.nodes:
            layout = exported[node].rule(ctx, node) if node in exported else rule_for(ctx, node)(ctx, node)
            if layout is not None:
                ctx.layouts[node] = layout
        macs = layer_macs(traced, modules, exported.values())
    order = {name: position for position, name in enumerate(modules)}
    return ChannelGraph(
        groups=build_groups(ctx, order),
        input_shape=tuple(example_input.shape),
        input_dtype=example_input.dtype,
        output_shapes=output_shapes,
        notes=tuple(ctx.notes),
        layer_macs=macs,
        ignored=ignored,
    )


def layer_macs(traced: fx.GraphModule, modules: dict[str, nn.Module], exported: Iterable[ExportedSubmodule] = ()) -> dict[str, int]:
    """MACs of every conv, transposed conv and linear call, from the shape pass: weight size times the
    positions it is applied at (output positions; input positions for a transposed conv), plus those
    inside submodules analysed on their torch.export graph."""
    macs: dict[str, int] = {}
    for call in exported:
        for name, count in call.macs().items():
            macs[name] = macs.get(name, 0) + count
    for node in traced.graph.nodes:
        layer = modules.get(str(node.target)) if node.op == "call_module" else None
        meta = node.meta.get("tensor_meta")
        if not isinstance(layer, (nn.modules.conv._ConvNd, nn.Linear)) or not hasattr(meta, "shape"):
            continue
        if isinstance(layer, nn.Linear):
            positions = math.prod(meta.shape[:-1])
        else:
            source = node.args[0].meta["tensor_meta"].shape if layer.transposed else meta.shape
            positions = source[0] * math.prod(source[2:])
        macs[str(node.target)] = macs.get(str(node.target), 0) + layer.weight.numel() * positions
    return macs
