"""Pruning strategies: how a criterion's scores become removed channels, in one pass or several.

A strategy is one class and one :func:`register_strategy` call, like a criterion. It receives the
model and a :class:`PruneJob` (the goal, the criterion, the limits, calibration batches and, for the
strategies that train between passes, a training callback) and prunes the model in place, returning
the plans it applied in order. ``global`` is one plan by a global threshold on normalised scores (for a
latency goal, by the latency-budget knapsack of :mod:`.latency_budget`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterable, Sequence

import torch
from torch import nn

from ..errors import EdgeCompressError
from ..graph import ChannelGraph, ChannelGroup, analyze
from .apply import apply_plan
from .budget import max_removable_fraction, model_macs
from .criteria import Criterion, get_criterion
from .latency_budget import TablesLike
from .plan import GOALS, PrunePlan, RatioSpec, check_goal, check_ratio, plan_pruning


@dataclass
class PruneJob:
    """Everything a strategy is given. Exactly one goal (``ratio``, ``target_macs``, ``target_params``,
    ``target_latency``, ``latency_ms``), as :func:`plan_pruning` takes it (``latency_tables`` for a latency goal).
    ``data``: a few calibration batches (a criterion that ``needs_data`` is prepared on them; some strategies
    measure feature maps on them). ``gradients``:
    accumulates the task loss's gradients on a model, called before each plan when the criterion
    ``needs_gradients`` (without it, the gradients already on the model are read: one pass only). ``train``: trains a model in place for a number of epochs, for strategies that
    train between or during passes."""

    example_input: torch.Tensor
    ratio: RatioSpec | None = None
    target_macs: float | None = None
    target_params: float | None = None
    target_latency: float | None = None
    latency_ms: float | None = None
    criterion: str | Criterion = "bn-gamma"
    ignore: Sequence[str] = ()
    min_channels: int = 1
    round_to: int | str = 1
    data: Iterable | None = None
    gradients: Callable[[nn.Module], None] | None = None
    train: Callable[[nn.Module, int], None] | None = None
    latency_tables: TablesLike | None = None

    def __post_init__(self) -> None:
        self.criterion = get_criterion(self.criterion)

    @property
    def goal(self) -> dict:
        """The job's goal as :func:`plan_pruning` takes it."""
        return {name: getattr(self, name) for name in GOALS}

    def plan(self, model: nn.Module, *, graph: ChannelGraph | None = None, candidates: Callable[[ChannelGroup], bool] | None = None,
             **goal) -> PrunePlan:
        """A plan for ``model`` with this job's criterion and limits; ``goal`` (one of ratio, target_macs,
        target_params, target_latency, latency_ms) replaces the job's own. Gradients are accumulated first when
        the criterion needs them. ``graph`` and ``candidates``: as :func:`plan_pruning` takes them."""
        goal = goal or self.goal
        if self.criterion.needs_gradients and self.gradients is not None:
            self.gradients(model)  # without the callback, the gradients already on the model are read
        plan = plan_pruning(model, self.example_input, **goal, criterion=self.criterion, ignore=self.ignore,
                            min_channels=self.min_channels, round_to=self.round_to, data=self.data, graph=graph, candidates=candidates,
                            latency_tables=self.latency_tables)
        model.zero_grad(set_to_none=True)
        return plan


class Strategy(ABC):
    """How to prune towards a job's goal. ``needs_training``: it calls ``job.train``; ``needs_data``: it reads
    ``job.data`` (whatever the criterion)."""

    name: ClassVar[str] = ""
    needs_training: ClassVar[bool] = False
    needs_data: ClassVar[bool] = False

    @abstractmethod
    def prune(self, model: nn.Module, job: PruneJob) -> list[PrunePlan]:
        """Prune ``model`` in place towards ``job``'s goal; the plans applied, in order."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


STRATEGIES: dict[str, Strategy] = {}


def register_strategy(strategy: Strategy) -> Strategy:
    """Register a strategy instance under its ``name`` (replacing one of that name); returns it."""
    if not isinstance(strategy, Strategy) or not strategy.name:
        raise EdgeCompressError(f"register a named Strategy instance, e.g. register_strategy(GlobalStrategy()); got {strategy!r}")
    STRATEGIES[strategy.name] = strategy
    return strategy


def get_strategy(strategy: str | Strategy) -> Strategy:
    """A Strategy as is, or the registered one of that name."""
    if isinstance(strategy, Strategy):
        return strategy
    if isinstance(strategy, str) and strategy in STRATEGIES:
        return STRATEGIES[strategy]
    raise EdgeCompressError(f"unknown pruning strategy {strategy!r}; choose one of {', '.join(sorted(STRATEGIES))} or pass a Strategy")


def summarize_passes(plans: Sequence[PrunePlan], job: PruneJob) -> dict:
    """One JSON-ready summary of a strategy's plans: the job's goal, the first plan's prunable channels and
    all those removed over the passes; each pass's own summary under ``passes`` when there are several."""
    summary = plans[-1].summary()
    total = plans[0].channels_total
    summary.update(ratio=job.ratio if isinstance(job.ratio, float) else summary["ratio"] if len(plans) == 1 else None, target_macs=job.target_macs,
                   target_params=job.target_params, target_latency=job.target_latency, latency_ms=job.latency_ms, channels_total=total,
                   channels_removed=total - plans[-1].channels_total + plans[-1].channels_removed)
    if len(plans) > 1:
        summary["passes"] = [plan.summary() for plan in plans]
    return summary


@dataclass(frozen=True)
class Budget:
    """A job's one goal as an amount of the unpruned model (prunable channels, MACs as the analysis counts them,
    or parameters), so that a strategy cutting in several passes can give each pass the rest of a share of it."""

    metric: str  # "channels", "macs" or "params"
    goal: float  # the fraction of ``original`` to remove
    original: float

    @classmethod
    def of(cls, model: nn.Module, job: PruneJob, graph: ChannelGraph, strategy: str) -> Budget:
        """The job's goal on ``model`` (``graph``: its analysis); refuses per-layer ratios and, as the planner
        would, a target pruning cannot reach, before any cut."""
        if job.target_latency is not None or job.latency_ms is not None:
            raise EdgeCompressError(f"strategy {strategy!r} cuts in passes by MACs, parameters or channels; a latency goal takes strategy 'global'")
        check_goal(job.ratio, job.target_macs, job.target_params)
        if job.ratio is not None:
            if not isinstance(job.ratio, (int, float)):
                raise EdgeCompressError(
                    f"strategy {strategy!r} takes one ratio for the whole model, not per-layer ratios; use strategy 'global' for those")
            check_ratio(job.ratio)
            return cls("channels", float(job.ratio), _amount("channels", model, graph))
        metric, goal = ("macs", job.target_macs) if job.target_macs is not None else ("params", job.target_params)
        reachable = max_removable_fraction(model, metric=metric, min_channels=job.min_channels, round_to=job.round_to, ignore=job.ignore,
                                           graph=graph)
        if reachable < goal:
            raise EdgeCompressError(
                f"target_{metric}={goal} is out of reach: pruning every prunable channel down to min_channels removes "
                f"about {reachable:.0%} of the {metric}; lower the target or pass fewer modules in ignore"
            )
        return cls(metric, float(goal), _amount(metric, model, graph))

    def pass_goal(self, model: nn.Module, graph: ChannelGraph, share: float,
                  candidates: Callable[[ChannelGroup], bool] | None = None) -> dict[str, float]:
        """The goal of one pass on ``model`` as it is now (``graph``: its analysis) that brings everything removed
        so far to ``share`` of the job's goal; with ``candidates``, a ratio counts only their channels, as
        :func:`plan_pruning` does."""
        allowed = (1 - share * self.goal) * self.original  # what may remain after this pass
        now = _amount(self.metric, model, graph)
        if self.metric != "channels":
            return {f"target_{self.metric}": min(max(1 - allowed / now, 0.0), 0.999)}
        removed_so_far = self.original - now
        needed = math.floor(share * self.goal * self.original + 1e-9) - removed_so_far
        base = sum(group.size for group in graph.prunable_groups if candidates is None or candidates(group))
        return {"ratio": min((needed + 0.5) / base, 0.999) if needed > 0 and base else 0.0}  # + 0.5: int(ratio * base) is exactly needed


def _amount(metric: str, model: nn.Module, graph: ChannelGraph) -> float:
    if metric == "channels":
        return float(sum(group.size for group in graph.prunable_groups))
    if metric == "macs":
        return float(model_macs(model, graph))
    return float(sum(p.numel() for p in model.parameters()))


def prune_in_passes(model: nn.Module, job: PruneJob, passes: int, strategy: str,
                    between: Callable[[nn.Module], None] | None = None) -> list[PrunePlan]:
    """Prune ``model`` in ``passes`` equal shares of the job's goal, each planned on the model as the passes
    before it left it (analysis, criterion statistics and gradients made afresh); ``between(model)`` runs
    after every pass but the last. ``strategy``: the caller's name, for messages. Returns the plans in order."""
    graph = analyze(model, job.example_input, job.ignore)
    budget = Budget.of(model, job, graph, strategy)
    plans = []
    for index in range(1, passes + 1):
        if index > 1:
            graph = analyze(model, job.example_input, job.ignore)
        plan = job.plan(model, graph=graph, **budget.pass_goal(model, graph, index / passes))
        plans.append(plan)
        apply_plan(model, plan)
        if between is not None and index < passes:
            between(model)
    return plans


class GlobalStrategy(Strategy):
    """One plan: the channels whose normalised scores fall under one threshold across all groups (or
    the job's per-layer ratios), removed at once."""

    name = "global"

    def prune(self, model: nn.Module, job: PruneJob) -> list[PrunePlan]:
        plan = job.plan(model)
        apply_plan(model, plan)
        return [plan]


register_strategy(GlobalStrategy())


def prune(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    ratio: RatioSpec | None = None,
    target_macs: float | None = None,
    target_params: float | None = None,
    target_latency: float | None = None,
    latency_ms: float | None = None,
    criterion: str | Criterion = "bn-gamma",
    strategy: str | Strategy = "global",
    ignore: Sequence[str] = (),
    round_to: int | str = 1,
    min_channels: int = 1,
    data: Iterable | None = None,
    gradients: Callable[[nn.Module], None] | None = None,
    train: Callable[[nn.Module, int], None] | None = None,
    latency_tables: TablesLike | None = None,
) -> nn.Module:
    """Prune ``model`` in place by ``strategy`` (``global``: one plan, see :func:`plan_pruning` for the goals,
    exactly one of ``ratio``, ``target_macs``, ``target_params``, ``target_latency``, ``latency_ms``) and return it.
    ``target_macs=0.5`` halves the MACs; ``target_latency=0.4`` keeps at most 40% of the dense model's latency
    predicted from per-layer tables (``latency_tables``, else measured in onnxruntime; ``round_to="auto"`` rounds
    to the tables' step boundaries). ``data``: input batches for a criterion or strategy that measures the model (e.g.
    ``activation``); ``gradients``/``train``: callbacks for criteria that read gradients over several passes and
    strategies that train between passes (see :class:`PruneJob`)."""
    strategy = get_strategy(strategy)
    if strategy.needs_training and train is None:
        raise EdgeCompressError(f"strategy {strategy.name!r} trains between passes: pass train=lambda model, epochs: ...")
    check_goal(ratio, target_macs, target_params, target_latency, latency_ms, round_to)
    job = PruneJob(example_input, ratio=ratio, target_macs=target_macs, target_params=target_params, target_latency=target_latency,
                   latency_ms=latency_ms, criterion=criterion, ignore=ignore, min_channels=min_channels, round_to=round_to, data=data,
                   gradients=gradients, train=train, latency_tables=latency_tables)
    strategy.prune(model, job)
    return model
