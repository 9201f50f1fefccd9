"""``layer-by-layer`` (patent 003): prune from shallow to deep, each part of the network scored only after
the parts before it are cut, so its statistics (filter norms over the inputs still there, activations,
gradients) are those of the already-pruned network.

Network order is the order in which the forward first calls each group's producing conv (or linear) on
the example input. To stay affordable the groups are cut in at most ``steps`` contiguous parts of that
order (default 8), not one analysis per layer. Per-step budget: one global plan on the unpruned network
decides how much of the goal falls in each part (channels, or MACs/parameters as the planner's cost model
counts them); step k then plans, with a threshold across its own groups only, until everything removed
so far reaches the share of parts 1..k, and the last step reaches the whole goal. With ``bn-gamma``, whose
scores do not change when earlier layers are cut, the result equals ``global``'s.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import EdgeCompressError
from ..graph import ChannelGraph, ChannelGroup, analyze
from ..helpers import evaluating, model_device
from .apply import apply_plan
from .budget import CostModel
from .plan import PrunePlan
from .strategies import Budget, PruneJob, Strategy, register_strategy


class LayerByLayerStrategy(Strategy):
    """Groups cut in network order, in at most ``steps`` parts, re-analysed and rescored before each part."""

    name = "layer-by-layer"

    def __init__(self, steps: int = 8):
        if not isinstance(steps, int) or steps < 1:
            raise EdgeCompressError(f"layer-by-layer pruning takes steps >= 1 (parts of the network cut one after another); got {steps!r}")
        self.steps = steps

    def prune(self, model: nn.Module, job: PruneJob) -> list[PrunePlan]:
        graph = analyze(model, job.example_input, job.ignore)
        budget = Budget.of(model, job, graph, self.name)
        position = network_position(model, job.example_input)
        starts = part_starts([position(group) for group in graph.prunable_groups], self.steps)

        def part_of(group: ChannelGroup) -> int:
            return int(np.searchsorted(starts, position(group), side="right")) - 1

        allocation = job.plan(model, graph=graph)  # the goal by one global threshold on the unpruned network: each part's share
        shares = part_shares(model, graph, budget, allocation, [part_of(group) for group in graph.prunable_groups], len(starts))
        plans = []
        for part, share in enumerate(shares):
            if part:
                graph = analyze(model, job.example_input, job.ignore)

            def in_part(group: ChannelGroup, part: int = part) -> bool:
                return part_of(group) == part

            plan = job.plan(model, graph=graph, candidates=in_part, **budget.pass_goal(model, graph, share, candidates=in_part))
            plans.append(plan)
            apply_plan(model, plan)
        return plans


def network_position(model: nn.Module, example_input: torch.Tensor) -> Callable[[ChannelGroup], int]:
    """A group's place in network order: when the forward on ``example_input`` first calls one of its producing layers."""
    order: dict[str, int] = {}

    def called(name: str) -> None:
        order.setdefault(name, len(order))

    handles = [module.register_forward_pre_hook(lambda *_, name=name: called(name)) for name, module in model.named_modules()]
    try:
        with evaluating(model):
            model(example_input.to(model_device(model)))
    finally:
        for handle in handles:
            handle.remove()
    return lambda group: min(order.get(member.module, len(order)) for member in group.members if member.role.produces)


def part_starts(positions: list[int], steps: int) -> np.ndarray:
    """The first network position of each part: the groups' distinct positions split into at most ``steps``
    contiguous runs of near-equal length (groups at one position always share a part)."""
    distinct = np.unique(positions)
    if not len(distinct):
        return np.zeros(1, dtype=int)
    return np.array([run[0] for run in np.array_split(distinct, min(steps, len(distinct)))])


def part_shares(model: nn.Module, graph: ChannelGraph, budget: Budget, allocation: PrunePlan, parts: list[int], count: int) -> list[float]:
    """For each part, the share of ``allocation``'s removal made by it and the parts before it (the last is 1)."""
    removed = {group.group_id: len(group.removed) for group in allocation.groups}
    groups = graph.prunable_groups
    cost = None if budget.metric == "channels" else CostModel(
        budget.metric, int(budget.original), graph, groups, [torch.arange(group.size) for group in groups], dict(model.named_modules()))

    def removed_up_to(last: int) -> float:
        counts = [removed[group.id] if part <= last else 0 for group, part in zip(groups, parts)]
        return float(sum(counts)) if cost is None else cost.removed_fraction(counts)

    whole = removed_up_to(count - 1)
    return [removed_up_to(part) / whole if whole else 1.0 for part in range(count - 1)] + [1.0]


register_strategy(LayerByLayerStrategy())
