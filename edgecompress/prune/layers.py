"""Layer pruning: remove whole residual blocks whose branch matters least (YOLOv3/v4 "layer pruning").

A block whose forward is exactly ``x + f(x)`` becomes ``nn.Identity``: its input passes straight
through, which is what the block computes when the branch's output is zero. A branch is scored by
the last layers producing it, its final conv and BatchNorm, through :meth:`Criterion.score_block`:
the mean |gamma| of the BN (``bn-gamma``) or the mean |weight| of the conv (``l1``). A criterion
that cannot score blocks (``fpgm``, ``taylor``) falls back to ``bn-gamma``, so one criterion
setting drives both channel and layer pruning. Blocks with an activation after the add are not
candidates.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata

from ..errors import EdgeCompressError
from ..graph.trace import UntraceableForward, check_ignore, propagate_shapes, running_example, tensor_shapes, trace_model
from ..helpers import evaluating
from .criteria import BnGammaImportance, Criterion, get_criterion

ADDS = (operator.add, operator.iadd, torch.add)
ATEN_ADDS = (torch.ops.aten.add.Tensor, torch.ops.aten.add_.Tensor)
LAYERS = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm)


@dataclass(frozen=True)
class ResidualBlock:
    """A removable block: its path, the final conv (and BN) of its branch, and the branch's score."""

    module: str
    conv: str
    batchnorm: str | None
    score: float


@dataclass(frozen=True)
class _GraphView:
    """What the block search reads from a graph, torch.fx's (call_module nodes) or torch.export's (aten ops
    tagged with their module stack): each node's data inputs (parameters and buffers left out), the conv or
    BatchNorm it runs, and its output shape."""

    nodes: list[fx.Node]
    data_inputs: Callable[[fx.Node], list[fx.Node]]
    layer: Callable[[fx.Node], str | None]
    shape: Callable[[fx.Node], tuple[int, ...] | None]


def _paths(node: fx.Node) -> list[str]:
    return [path for path, _ in (node.meta.get("nn_module_stack") or {}).values()]


def _fx_view(model: nn.Module, example_input: torch.Tensor, ignored: frozenset[str]) -> tuple[_GraphView, dict[str, str]]:
    traced, opaque = trace_model(model, ignored)
    propagate_shapes(traced, model, example_input)
    modules = dict(model.named_modules())

    def layer(node: fx.Node) -> str | None:
        return str(node.target) if node.op == "call_module" and isinstance(modules.get(str(node.target)), LAYERS) else None

    def shape(node: fx.Node) -> tuple[int, ...] | None:
        meta = node.meta.get("tensor_meta")
        return tuple(meta.shape) if isinstance(meta, TensorMetadata) else None

    return _GraphView(list(traced.graph.nodes), lambda node: node.all_input_nodes, layer, shape), opaque


def _export_view(model: nn.Module, example_input: torch.Tensor) -> _GraphView:
    """The whole model's torch.export graph (for a forward torch.fx cannot trace, e.g. Ultralytics' routed loop)."""
    with running_example(example_input), evaluating(model):
        model(example_input)  # caches the forward keeps (a detector's anchors) settle before export
        program = torch.export.export(model, (example_input,), strict=False)
    user_inputs = set(program.graph_signature.user_inputs)
    modules = dict(model.named_modules())

    def data_inputs(node: fx.Node) -> list[fx.Node]:
        return [arg for arg in node.all_input_nodes if arg.op != "placeholder" or arg.name in user_inputs]

    def layer(node: fx.Node) -> str | None:
        paths = _paths(node)
        if node.op != "call_function" or not paths or not isinstance(modules.get(paths[-1]), LAYERS):
            return None
        return paths[-1] if node.target is not operator.getitem else None  # getitem unpacks BatchNorm's tuple: walk on

    def shape(node: fx.Node) -> tuple[int, ...] | None:
        value = node.meta.get("val")
        return tuple(value.shape) if isinstance(value, torch.Tensor) else None

    return _GraphView(list(program.graph.nodes), data_inputs, layer, shape)


def _is_add(node: fx.Node) -> bool:
    return node.op == "call_function" and (node.target in ADDS or node.target in ATEN_ADDS)


def _branch_layers(view: _GraphView, node: fx.Node, modules: dict[str, nn.Module]) -> tuple[str | None, str | None]:
    """Walk back from the branch output through activations to its final BatchNorm and conv."""
    batchnorm = None
    while True:
        layer = view.layer(node)
        if isinstance(modules.get(layer), nn.modules.conv._ConvNd):
            return layer, batchnorm
        if isinstance(modules.get(layer), nn.modules.batchnorm._BatchNorm) and batchnorm is None:
            batchnorm = layer
        inputs = view.data_inputs(node)
        if len(inputs) != 1:
            return None, None
        node = inputs[0]


def _block_scores(criterion: Criterion, layers: list[tuple[nn.Module, nn.Module | None]]) -> list[float]:
    """Each branch's score by ``criterion``, or every one by ``bn-gamma`` when it cannot score blocks
    (one unscored block is enough: all scores must share a scale)."""
    scores = [criterion.score_block(conv, bn) for conv, bn in layers]
    if any(score is None for score in scores):
        return _block_scores(BnGammaImportance(), layers)
    return scores


def residual_blocks(
    model: nn.Module, example_input: torch.Tensor, criterion: str | Criterion = "bn-gamma", ignore: Sequence[str] = ()
) -> list[ResidualBlock]:
    """Every submodule computing exactly ``x + f(x)`` (one tensor input, same output shape), scored by
    ``criterion`` (a name or a :class:`Criterion`; ``bn-gamma`` when it cannot score blocks). Blocks are found
    on the torch.fx graph, or on the torch.export graph when torch.fx cannot trace the model's forward."""
    criterion = get_criterion(criterion)
    ignored = check_ignore(model, ignore)
    try:
        view, opaque = _fx_view(model, example_input, ignored)
    except UntraceableForward:
        view, opaque = _export_view(model, example_input), {}
    modules = dict(model.named_modules())
    inside: dict[str, list[fx.Node]] = {}
    for node in view.nodes:
        for path in _paths(node):
            inside.setdefault(path, []).append(node)
    candidates = []
    for path, nodes in inside.items():
        if any(path == name or path.startswith(name + ".") for name in (*ignored, *opaque)):
            continue
        members = set(nodes)
        sources = {arg for node in nodes for arg in view.data_inputs(node) if arg not in members}
        exits = [node for node in nodes if any(user not in members for user in node.users)]
        if len(sources) != 1 or len(exits) != 1 or not _is_add(exits[0]):
            continue
        (source,), add = sources, exits[0]
        tensors = [arg for arg in add.args if isinstance(arg, fx.Node)]
        branches = [arg for arg in tensors if arg is not source]
        if len(tensors) != 2 or len(branches) != 1 or branches[0] not in members:
            continue
        if view.shape(add) is None or view.shape(add) != view.shape(source):
            continue
        conv, batchnorm = _branch_layers(view, branches[0], modules)
        if conv is not None:
            candidates.append((path, conv, batchnorm))
    scores = _block_scores(criterion, [(modules[conv], modules[batchnorm] if batchnorm else None) for _, conv, batchnorm in candidates])
    return [ResidualBlock(*candidate, score) for candidate, score in zip(candidates, scores)]


def prune_layers(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    n: int | None = None,
    ratio: float | None = None,
    criterion: str | Criterion = "bn-gamma",
    ignore: Sequence[str] = (),
) -> list[str]:
    """Replace the ``n`` (or ``ratio`` of all) lowest-scoring residual blocks by ``nn.Identity``, in place.

    ``criterion`` scores the blocks (see :func:`residual_blocks`); one that cannot score blocks
    falls back to ``bn-gamma``, so a pipeline can pass its channel criterion through unchanged.
    Returns the removed blocks' paths. Blocks nested in (or containing) a removed block are skipped.
    """
    blocks = residual_blocks(model, example_input, criterion, ignore)
    if (n is None) == (ratio is None):
        raise EdgeCompressError("pass exactly one of n (blocks to remove) or ratio (fraction of residual blocks), e.g. n=2")
    if ratio is not None and not (isinstance(ratio, (int, float)) and 0 <= ratio < 1):
        raise EdgeCompressError(f"layer pruning ratio must be in [0, 1), got {ratio!r}")
    count = n if n is not None else int(ratio * len(blocks))
    if not isinstance(count, int) or count < 0 or count > len(blocks):
        raise EdgeCompressError(f"cannot remove {count!r} residual blocks: the model has {len(blocks)} of the form x + f(x)")
    with evaluating(model):
        before = tensor_shapes(model(example_input))
    removed: list[str] = []
    for block in sorted(blocks, key=lambda block: block.score):
        if len(removed) == count:
            break
        if any(block.module.startswith(done + ".") or done.startswith(block.module + ".") for done in removed):
            continue
        parent, _, name = block.module.rpartition(".")
        setattr(model.get_submodule(parent), name, nn.Identity())
        removed.append(block.module)
    with evaluating(model):
        after = tensor_shapes(model(example_input))
    if after != before:
        raise EdgeCompressError(f"removing blocks {removed} changed the output shapes {before} -> {after}; list them in ignore")
    return removed
