"""``uniform``: every prunable group loses the same fraction of its channels (per-layer ratios, not one
global threshold), the lowest-scoring ones of each group. For a MACs or parameter target, that common
fraction is bisected on the planner's cost model, as ``global`` bisects its threshold."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..graph import ChannelGraph, analyze
from .apply import apply_plan
from .budget import CostModel, bisect_ratio
from .plan import PrunePlan, group_rounding
from .selection import select_per_group
from .strategies import Budget, PruneJob, Strategy, register_strategy


class UniformStrategy(Strategy):
    """One plan in which every prunable group loses the same fraction of its channels (floored, then kept
    above ``min_channels`` and rounded to ``round_to`` per group): no layer is emptied because its scores
    are low on another layer's scale. Use when the criterion's scores do not compare across layers."""

    name = "uniform"

    def prune(self, model: nn.Module, job: PruneJob) -> list[PrunePlan]:
        graph = analyze(model, job.example_input, job.ignore)
        budget = Budget.of(model, job, graph, self.name)
        fraction = budget.goal if budget.metric == "channels" else uniform_fraction(model, graph, job, budget)
        plan = job.plan(model, graph=graph, ratio=lambda _module: fraction)
        apply_plan(model, plan)
        return [plan]


def uniform_fraction(model: nn.Module, graph: ChannelGraph, job: PruneJob, budget: Budget) -> float:
    """The smallest fraction that, taken from every prunable group, removes the budget's share of MACs or
    parameters. Only how many channels each group loses matters to the cost, not which."""
    groups = graph.prunable_groups
    orders = [torch.arange(group.size) for group in groups]
    cost = CostModel(budget.metric, int(budget.original), graph, groups, orders, dict(model.named_modules()))
    multiples = np.array([group_rounding(group, job.round_to) for group in groups], dtype=int)
    counts_only = [torch.zeros(group.size) for group in groups]

    def removed_at(fraction: float) -> float:
        selection = select_per_group(counts_only, [fraction] * len(groups), job.min_channels, multiples)
        return cost.removed_fraction([len(channels) for channels in selection.removed])

    return bisect_ratio(removed_at, budget.goal)


register_strategy(UniformStrategy())
