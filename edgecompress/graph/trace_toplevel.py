"""Fallback for a top-level forward torch.fx cannot trace: analyse the whole model's torch.export graph.

An Ultralytics DetectionModel takes ``*args, **kwargs``, routes layer outputs by index through a
Python list and branches on shapes in its head; torch.fx stops at the first of these. When it
cannot trace the model's own forward, the whole model is exported with
``torch.export.export(strict=False)``, which runs the Python on fake tensors of the example input's
shapes (shape-dependent Python is specialised away), and its aten graph is analysed with the rules
of rules_aten. Only when export fails too (control flow on tensor values) is the model an error,
naming both failures.

The model first runs once eagerly (its output shapes; caches its forward keeps, such as a
detector's anchors, settle, so export assigns no attribute). No wrapper is involved: members,
notes and errors name the model's own modules, so surgery, ``ignore=``, criteria and reports need
nothing new. Unlike a submodule's export (trace_export.py) there is no outer level to fall back on:

- an op the aten rules cannot map follows the fx analysis' policy for unknown ops
  (``registry.unknown_op``): harmless when it touches no prunable channel, kept when it clearly
  keeps the channel dim, otherwise an error naming the op and the module to pass in ``ignore``;
- the ops of a module in ``ignore`` are kept whole: the channels they read and write are blocked;
- every channel count the Python reads (``x.shape`` of any tensor, not only of inputs) is kept: the
  read tensor is found in the graph by its fake storage, offset, shape and strides, and a read of a
  layer's parameter keeps that layer's channels. A read of a traced tensor the graph does not show
  is an error; reads of real tensors the forward keeps (caches, constants) cannot change with pruning.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor
from torch.export import ExportedProgram
from torch.fx import Node
from torch.multiprocessing.reductions import StorageWeakRef

from ..errors import EdgeCompressError, describe
from ..helpers import evaluating
from .context import AnalysisContext
from .index_mapping import Layout
from .registry import model_output, unknown_op
from .rules_aten import OWNER, UnsupportedOp, aten_rule_for
from .trace import running_example, tensor_shapes
from .trace_export import ShapeReads, exported_macs, reading_shapes, tag_owners

log = logging.getLogger(__name__)

Shapes = tuple[tuple[int, ...], ...]


def analyse_toplevel(ctx: AnalysisContext, model: nn.Module, example_input: torch.Tensor, fx_failure: str) -> tuple[Shapes, dict[str, int]]:
    """Group the channels of ``model`` into ``ctx`` from its torch.export graph; returns the model's
    output shapes and the MACs of its convs and linears. ``fx_failure`` is why torch.fx could not
    trace it, for the error raised when torch.export cannot analyse it either."""
    with running_example(example_input), evaluating(model):
        output_shapes = tensor_shapes(model(example_input))
    try:
        with evaluating(model), reading_shapes(model) as (reads, _):
            program = torch.export.export(model, (example_input,), strict=False)
        tag_owners(program)
        _connect(ctx, program, reads)
    except EdgeCompressError as exc:
        raise EdgeCompressError(f"torch.fx cannot trace the model's forward ({fx_failure}) and on its torch.export graph {exc}") from None
    except Exception as exc:
        raise EdgeCompressError(
            f"torch.fx cannot trace the model's forward ({fx_failure}) and torch.export cannot analyse it ({describe(exc)}); "
            "make the forward traceable by one of them (no control flow on tensor values)"
        ) from None
    log.info("torch.fx cannot trace the model's forward; its channels are analysed on its torch.export graph")
    return output_shapes, exported_macs(program)


def _connect(ctx: AnalysisContext, program: ExportedProgram, reads: ShapeReads) -> None:
    """Run the channel rules over the whole graph, then keep the channel counts the Python read."""
    for node in program.graph.nodes:
        if node.op == "placeholder":
            continue  # the input and constants: ctx.channels gives them blocked atoms when used
        if node.op == "output":
            model_output(ctx, node)
            continue
        ignored = next((path for path, _ in (node.meta.get("nn_module_stack") or {}).values() if path in ctx.ignore), None)
        if ignored is not None:
            layout = _kept_whole(ctx, node, f"{ignored!r} is in ignore")
        else:
            try:
                layout = aten_rule_for(node)(ctx, node)
            except UnsupportedOp:  # raised before the rule touches ctx
                layout = unknown_op(ctx, node)
        if layout is not None:
            ctx.layouts[node] = layout
    _keep_read_channels(ctx, program, reads)


def _kept_whole(ctx: AnalysisContext, node: Node, reason: str) -> Layout | None:
    """An op of an ignored module: the channels it reads are kept and those it writes cannot be cut."""
    for arg in ctx.channel_inputs(node):
        ctx.block(ctx.channels(arg), reason)
    shape = ctx.shape(node)
    return ctx.new_atoms(shape[1], blocked=reason) if shape is not None and len(shape) >= 2 else None


def _storage_key(tensor: torch.Tensor) -> tuple | None:
    """What identifies a (fake) tensor's values: a read tensor and its graph node's value share it."""
    try:
        return StorageWeakRef(tensor.untyped_storage()).cdata, tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride())
    except (RuntimeError, NotImplementedError):  # tensors without storage (sparse, nested)
        return None


def _keep_read_channels(ctx: AnalysisContext, program: ExportedProgram, reads: ShapeReads) -> None:
    """Block the channels of every tensor whose channel count the Python read (a branch or view on
    it stays as traced); a parameter read keeps every channel of its layer."""
    nodes: dict[tuple, list[Node]] = defaultdict(list)
    for node in program.graph.nodes:
        value = node.meta.get("val")
        if isinstance(value, torch.Tensor) and (key := _storage_key(value)) is not None:
            nodes[key].append(node)
    for tensor, reader in reads.reads:
        if not isinstance(tensor, FakeTensor):
            continue  # a real tensor the forward keeps (a cache, a constant): pruning cannot change its shape
        found = nodes.get(_storage_key(tensor))
        where = f"the forward of {reader!r}" if reader else "the model's forward"
        if not found:
            raise UnsupportedOp(f"{where} reads the channel count of a tensor the exported graph does not show")
        owner = found[0].meta.get(OWNER)
        reason = f"{where} reads the channel count of {'.'.join(owner) if owner else found[0].name}"
        for node in found:
            if OWNER in node.meta:
                for (module, _), atoms in ctx.members.items():
                    if module == node.meta[OWNER][0]:
                        ctx.block(atoms, reason)
            elif node in ctx.layouts:
                ctx.block(ctx.layouts[node], reason)
