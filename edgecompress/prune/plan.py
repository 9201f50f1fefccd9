"""Pruning plans: which channels of which layers go, decided before any layer is touched."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import EdgeCompressError
from ..graph import ChannelGroup, analyze
from .criteria import CRITERIA
from .selection import select_channels
from .surgery import dimension_size


@dataclass(frozen=True)
class GroupPlan:
    """Outcome for one prunable channel group."""

    group_id: int
    total: int
    kept: int
    removed: tuple[int, ...]  # group channel indices removed


@dataclass(frozen=True)
class LayerCut:
    """Indices removed from one dimension ("out" or "in") of one layer, and that dimension's size before."""

    module: str
    dim: str
    size: int
    removed: tuple[int, ...]


@dataclass(frozen=True)
class PrunePlan:
    """Everything :func:`apply_plan` needs, plus what the model must still accept and return."""

    criterion: str
    ratio: float
    threshold: float  # normalised score (1.0 = average channel of its group) of the last ranked channel cut
    groups: tuple[GroupPlan, ...]
    cuts: tuple[LayerCut, ...]
    channels_total: int  # prunable channels
    channels_removed: int
    input_shape: tuple[int, ...]
    input_dtype: torch.dtype
    output_shapes: tuple[tuple[int, ...], ...]
    notes: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary for manifests and reports."""
        return {
            "criterion": self.criterion,
            "ratio": self.ratio,
            "threshold": self.threshold,
            "channels_total": self.channels_total,
            "channels_removed": self.channels_removed,
            "layers_cut": len({cut.module for cut in self.cuts}),
            "groups": [{"id": g.group_id, "kept": g.kept, "total": g.total} for g in self.groups],
            "notes": list(self.notes),
        }


def check_arguments(ratio: float, criterion: str, min_channels: int, round_to: int) -> None:
    if not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        raise EdgeCompressError(f"pruning ratio must be in [0, 1), got {ratio!r}; e.g. ratio=0.5 removes half the prunable channels")
    if criterion not in CRITERIA:
        raise EdgeCompressError(f"unknown pruning criterion {criterion!r}; choose one of {', '.join(sorted(CRITERIA))}")
    if not isinstance(min_channels, int) or min_channels < 0:
        raise EdgeCompressError(f"min_channels must be a non-negative integer, got {min_channels!r}")
    if not isinstance(round_to, int) or round_to < 1:
        raise EdgeCompressError(f"round_to must be a positive integer, got {round_to!r}; use 1 for no rounding")


def _layer_cuts(groups: list[ChannelGroup], removed: list[list[int]], modules: dict[str, nn.Module]) -> tuple[LayerCut, ...]:
    by_dim: dict[tuple[str, str], set[int]] = defaultdict(set)
    for group, channels in zip(groups, removed):
        for member in group.members:
            indices = member.select(channels)
            for dim in member.role.dims:
                by_dim[(member.module, dim)].update(indices)
    order = {name: position for position, name in enumerate(modules)}
    return tuple(
        LayerCut(module, dim, dimension_size(modules[module], dim), tuple(sorted(indices)))
        for (module, dim), indices in sorted(by_dim.items(), key=lambda item: (order[item[0][0]], item[0][1]))
        if indices
    )


def plan_pruning(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    ratio: float,
    criterion: str = "bn-gamma",
    ignore: Sequence[str] = (),
    min_channels: int = 1,
    round_to: int = 1,
) -> PrunePlan:
    """Decide which channels to remove: ``ratio`` of all prunable channels, chosen by a global
    threshold on normalised ``criterion`` scores; every group keeps at least max(min_channels, 1)
    channels, rounded up to a multiple of ``round_to``. The model is not modified."""
    check_arguments(ratio, criterion, min_channels, round_to)
    graph = analyze(model, example_input, ignore)
    modules = dict(model.named_modules())
    groups = graph.prunable_groups
    scores = [CRITERIA[criterion](group, modules) for group in groups]
    selection = select_channels(scores, ratio, min_channels, round_to)
    group_plans = tuple(
        GroupPlan(group.id, group.size, group.size - len(channels), tuple(sorted(channels)))
        for group, channels in zip(groups, selection.removed)
    )
    return PrunePlan(
        criterion=criterion,
        ratio=float(ratio),
        threshold=selection.threshold,
        groups=group_plans,
        cuts=_layer_cuts(groups, selection.removed, modules),
        channels_total=sum(group.size for group in groups),
        channels_removed=sum(len(channels) for channels in selection.removed),
        input_shape=graph.input_shape,
        input_dtype=graph.input_dtype,
        output_shapes=graph.output_shapes,
        notes=graph.notes,
    )
