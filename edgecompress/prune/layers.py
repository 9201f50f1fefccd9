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
from typing import Sequence

import torch
from torch import fx, nn

from ..errors import EdgeCompressError
from ..graph.trace import check_ignore, propagate_shapes, tensor_shapes, trace_model
from ..helpers import evaluating
from .criteria import BnGammaImportance, Criterion, get_criterion

ADDS = (operator.add, operator.iadd, torch.add)


@dataclass(frozen=True)
class ResidualBlock:
    """A removable block: its path, the final conv (and BN) of its branch, and the branch's score."""

    module: str
    conv: str
    batchnorm: str | None
    score: float


def _paths(node: fx.Node) -> list[str]:
    return [path for path, _ in (node.meta.get("nn_module_stack") or {}).values()]


def _branch_layers(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[str | None, str | None]:
    """Walk back from the branch output through activations to its final BatchNorm and conv."""
    batchnorm = None
    while node.op == "call_module" or len(node.all_input_nodes) == 1:
        layer = modules.get(str(node.target)) if node.op == "call_module" else None
        if isinstance(layer, nn.modules.conv._ConvNd):
            return str(node.target), batchnorm
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and batchnorm is None:
            batchnorm = str(node.target)
        if len(node.all_input_nodes) != 1:
            break
        node = node.all_input_nodes[0]
    return None, None


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
    ``criterion`` (a name or a :class:`Criterion`; ``bn-gamma`` when it cannot score blocks)."""
    criterion = get_criterion(criterion)
    ignored = check_ignore(model, ignore)
    traced, opaque = trace_model(model, ignored)
    propagate_shapes(traced, model, example_input)
    modules = dict(model.named_modules())
    inside: dict[str, list[fx.Node]] = {}
    for node in traced.graph.nodes:
        for path in _paths(node):
            inside.setdefault(path, []).append(node)
    candidates = []
    for path, nodes in inside.items():
        if any(path == name or path.startswith(name + ".") for name in (*ignored, *opaque)):
            continue
        members = set(nodes)
        sources = {arg for node in nodes for arg in node.all_input_nodes if arg not in members}
        exits = [node for node in nodes if any(user not in members for user in node.users)]
        if len(sources) != 1 or len(exits) != 1 or exits[0].op != "call_function" or exits[0].target not in ADDS:
            continue
        (source,), add = sources, exits[0]
        branches = [arg for arg in add.args if arg is not source]
        if len(add.args) != 2 or len(branches) != 1 or branches[0] not in members:
            continue
        if add.meta.get("tensor_meta") is None or source.meta.get("tensor_meta") is None:
            continue
        if tuple(add.meta["tensor_meta"].shape) != tuple(source.meta["tensor_meta"].shape):
            continue
        conv, batchnorm = _branch_layers(branches[0], modules)
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
