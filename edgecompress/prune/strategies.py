"""Pruning strategies: how a criterion's scores become removed channels, in one pass or several.

A strategy is one class and one :func:`register_strategy` call, like a criterion. It receives the
model and a :class:`PruneJob` (the goal, the criterion, the limits, calibration batches and, for the
strategies that train between passes, a training callback) and prunes the model in place, returning
the plans it applied in order. ``global`` is one plan by a global threshold on normalised scores (for a
latency goal, by the latency-budget knapsack of :mod:`.latency_budget`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterable, Sequence

import torch
from torch import nn

from ..errors import EdgeCompressError
from .apply import apply_plan
from .criteria import Criterion, get_criterion
from .latency_budget import TablesLike
from .plan import GOALS, PrunePlan, RatioSpec, check_goal, plan_pruning


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

    def plan(self, model: nn.Module, **goal) -> PrunePlan:
        """A plan for ``model`` with this job's criterion and limits; ``goal`` (one of ratio, target_macs,
        target_params, target_latency, latency_ms) replaces the job's own. Gradients are accumulated first when
        the criterion needs them."""
        goal = goal or self.goal
        if self.criterion.needs_gradients and self.gradients is not None:
            self.gradients(model)  # without the callback, the gradients already on the model are read
        plan = plan_pruning(model, self.example_input, **goal, criterion=self.criterion, ignore=self.ignore,
                            min_channels=self.min_channels, round_to=self.round_to, data=self.data, latency_tables=self.latency_tables)
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
