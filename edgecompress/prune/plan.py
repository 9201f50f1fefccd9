"""Pruning plans: which channels of which layers go, decided before any layer is touched."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..errors import EdgeCompressError
from ..graph import ChannelGraph, ChannelGroup, analyze
from ..graph.analyze import collector_paused
from .budget import CostModel, bisect_ratio, model_macs
from .criteria import Criterion, get_criterion
from .latency_budget import LatencyPrediction, TablesLike, latency_selection, tables_for
from .selection import rank_channels, select_channels, select_per_group
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

    criterion: str  # the criterion's name
    ratio: float | None  # the global ratio used (found by bisection for a target); None for per-layer ratios
    threshold: float  # normalised score (1.0 = average channel of its group) of the last ranked channel cut
    groups: tuple[GroupPlan, ...]
    cuts: tuple[LayerCut, ...]
    channels_total: int  # prunable channels
    channels_removed: int
    input_shape: tuple[int, ...]
    input_dtype: torch.dtype
    output_shapes: tuple[tuple[int, ...], ...]
    notes: tuple[str, ...] = ()
    target_macs: float | None = None
    target_params: float | None = None
    target_latency: float | None = None
    latency_ms: float | None = None
    latency: LatencyPrediction | None = None  # a latency-budget plan's prediction from the tables

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary for manifests and reports."""
        return {
            "criterion": self.criterion,
            "ratio": self.ratio,
            "target_macs": self.target_macs,
            "target_params": self.target_params,
            "target_latency": self.target_latency,
            "latency_ms": self.latency_ms,
            "predicted_latency": self.latency.summary() if self.latency else None,
            "threshold": self.threshold,
            "channels_total": self.channels_total,
            "channels_removed": self.channels_removed,
            "layers_cut": len({cut.module for cut in self.cuts}),
            "groups": [{"id": g.group_id, "kept": g.kept, "total": g.total} for g in self.groups],
            "notes": list(self.notes),
        }


def check_ratio(ratio: object) -> None:
    if not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        raise EdgeCompressError(f"pruning ratio must be in [0, 1), got {ratio!r}; e.g. ratio=0.5 removes half the prunable channels")


def check_arguments(ratio: float, criterion: str | Criterion, min_channels: int, round_to: int | str) -> None:
    check_ratio(ratio)
    get_criterion(criterion)
    if not isinstance(min_channels, int) or min_channels < 0:
        raise EdgeCompressError(f"min_channels must be a non-negative integer, got {min_channels!r}")
    if round_to != "auto" and (not isinstance(round_to, int) or round_to < 1):
        raise EdgeCompressError(f"round_to must be a positive integer or 'auto', got {round_to!r}; use 1 for no rounding")


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


RatioSpec = Union[float, Mapping[str, float], Callable[[str], "float | None"]]


def _layer_ratio(ratio: Mapping[str, float] | Callable[[str], float | None], modules: dict[str, nn.Module]) -> Callable[[str], float | None]:
    """Per-layer ratios: a callable as is; a mapping matches a module and everything under it (longest key wins)."""
    if callable(ratio):
        return ratio
    unknown = [key for key in ratio if key not in modules]
    if unknown:
        raise EdgeCompressError(f"ratio names {unknown} are not modules of the model; use qualified names such as {next(iter(modules), '')!r}")

    def lookup(name: str) -> float | None:
        keys = [key for key in ratio if key == "" or name == key or name.startswith(key + ".")]
        return ratio[max(keys, key=len)] if keys else None

    return lookup


def _group_ratios(groups: list[ChannelGroup], lookup: Callable[[str], float | None]) -> list[float]:
    """A group's ratio is the largest ratio of the layers producing its channels (0 when none is listed)."""
    ratios = []
    for group in groups:
        found = [lookup(member.module) for member in group.members if member.role.produces]
        found = [value for value in found if value is not None]
        for value in found:
            check_ratio(value)
        ratios.append(max(found, default=0.0))
    return ratios


def group_rounding(group: ChannelGroup, round_to: int) -> int:
    """Multiple of group channels that keeps every layer's channel count a multiple of ``round_to``:
    a group channel that spans m indices of every layer (tied conv groups, GroupNorm groups) needs
    only round_to / gcd(round_to, m) of them."""
    spans = min(len(indices) for member in group.members for indices in member.indices)
    return round_to // math.gcd(round_to, spans)


GOALS = ("ratio", "target_macs", "target_params", "target_latency", "latency_ms")


def check_goal(ratio: object = None, target_macs: float | None = None, target_params: float | None = None,
               target_latency: float | None = None, latency_ms: float | None = None, round_to: int | str = 1) -> None:
    """Exactly one goal, each in its range; ``round_to="auto"`` only with a latency goal."""
    values = (ratio, target_macs, target_params, target_latency, latency_ms)
    given = [name for name, value in zip(GOALS, values) if value is not None]
    if len(given) != 1:
        raise EdgeCompressError(f"pass exactly one of {', '.join(GOALS)} (got {given or 'none'}); e.g. ratio=0.5 or target_macs=0.5")
    for name, value in (("target_macs", target_macs), ("target_params", target_params)):
        if value is not None and (not isinstance(value, (int, float)) or not 0 <= value < 1):
            raise EdgeCompressError(f"{name} is the fraction to remove, in [0, 1); got {value!r} (0.5 halves the {name[7:]})")
    if target_latency is not None and (not isinstance(target_latency, (int, float)) or not 0 < target_latency < 1):
        raise EdgeCompressError(f"target_latency is the fraction of the dense model's predicted latency to keep, in (0, 1); "
                                f"got {target_latency!r} (0.4: at most 40% of it)")
    if latency_ms is not None and (not isinstance(latency_ms, (int, float)) or not latency_ms > 0):
        raise EdgeCompressError(f"latency_ms is the predicted latency budget in milliseconds, > 0; got {latency_ms!r}")
    if round_to == "auto" and target_latency is None and latency_ms is None:
        raise EdgeCompressError("round_to='auto' chooses kept channels from measured latency step curves: pass target_latency= or latency_ms=, "
                                "or an integer round_to")


def plan_pruning(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    ratio: RatioSpec | None = None,
    target_macs: float | None = None,
    target_params: float | None = None,
    target_latency: float | None = None,
    latency_ms: float | None = None,
    criterion: str | Criterion = "bn-gamma",
    ignore: Sequence[str] = (),
    min_channels: int = 1,
    round_to: int | str = 1,
    graph: ChannelGraph | None = None,
    data: Iterable | None = None,
    candidates: Callable[[ChannelGroup], bool] | None = None,
    latency_tables: TablesLike | None = None,
) -> PrunePlan:
    """Decide which channels to remove; the model is not modified. Give exactly one goal:

    - ``ratio=0.5``: that fraction of all prunable channels, chosen by a global threshold on
      normalised ``criterion`` scores;
    - ``ratio={"backbone": 0.3, "neck.c2f": 0.5}`` (a module and everything under it, longest key
      wins, unlisted layers kept) or ``ratio=lambda name: ...`` (None keeps): per-layer ratios;
    - ``target_macs=0.5`` / ``target_params=0.5``: the smallest global ratio estimated to remove
      that fraction of the model's MACs / parameters;
    - ``target_latency=0.4`` (at most 40% of the dense model's predicted latency) or ``latency_ms=5.0``:
      channels allocated by importance per millisecond against per-layer latency tables
      (:mod:`edgecompress.prune.latency_budget`). ``latency_tables``: from
      :func:`edgecompress.profile.measure_latency_tables` on this model and input (any runtime, precision),
      or ``{module: LayerTable}``; without them they are measured in onnxruntime, fp32 (cached). The plan's
      ``latency`` holds the prediction.

    ``criterion``: a registered name (see ``CRITERIA``) or a :class:`Criterion`; one that
    ``needs_gradients`` reads those accumulated on the model, so run ``loss.backward()`` first; one
    that ``needs_data`` (``activation``) is prepared on ``data``, a few batches of model inputs (or
    (inputs, targets) pairs), before scoring. Other criteria ignore ``data``.

    Every group keeps at least max(min_channels, 1) channels; every layer keeps a multiple of
    ``round_to`` channels (see :func:`group_rounding`) unless it keeps them all. With a latency goal,
    ``round_to="auto"`` lets each group keep only the counts at the top of a step of its measured latency
    curve (:func:`~edgecompress.prune.latency_budget.step_boundaries`).

    ``graph``: reuse ``analyze(model, example_input, ignore)`` made earlier for this architecture
    (weights may have changed since; channel counts, input shape and ``ignore`` may not) instead of
    analysing again.

    ``candidates``: the prunable groups this plan may cut (default: all); the others keep every channel
    and are listed uncut in the plan. A ratio then counts the candidates' channels only; a target is
    still a fraction of the whole model (strategies that cut the network part by part use this).
    """
    check_goal(ratio, target_macs, target_params, target_latency, latency_ms, round_to)
    per_layer = isinstance(ratio, Mapping) or callable(ratio)
    check_arguments(0.0 if per_layer or ratio is None else ratio, criterion, min_channels, round_to)
    criterion = get_criterion(criterion)
    if criterion.needs_data and data is None:
        raise EdgeCompressError(f"criterion {criterion.name!r} measures the model on data: pass data=[a few batches of calibration inputs]")
    with collector_paused():
        graph = analysis_for(model, example_input, ignore, graph)
    goal = Goal(ratio, target_macs, target_params, target_latency, latency_ms)
    if goal.latency:
        latency_tables = tables_for(model, example_input, graph, round_to, latency_tables)
    with collector_paused():
        criterion = criterion.prepare(model, data) if criterion.needs_data else criterion
        return _plan(model, graph, dict(model.named_modules()), goal, criterion, min_channels, round_to, latency_tables, candidates)


@dataclass(frozen=True)
class Goal:
    """The one goal of a plan (see :func:`plan_pruning`)."""

    ratio: RatioSpec | None = None
    target_macs: float | None = None
    target_params: float | None = None
    target_latency: float | None = None
    latency_ms: float | None = None

    @property
    def latency(self) -> tuple[str, float] | None:
        """("fraction", f) or ("ms", budget) for a latency goal, else None."""
        if self.target_latency is not None:
            return ("fraction", self.target_latency)
        return ("ms", self.latency_ms) if self.latency_ms is not None else None


def analysis_for(model: nn.Module, example_input: torch.Tensor, ignore: Sequence[str], graph: ChannelGraph | None) -> ChannelGraph:
    """``graph`` when given and it fits ``model``, else a fresh analysis.

    A reused analysis must come from this input shape and a model whose prunable layers are all
    still there, each at least as wide as the analysis saw (it catches a graph reused after pruning).
    """
    if graph is None:
        return analyze(model, example_input, ignore)
    modules = dict(model.named_modules())
    if not isinstance(graph, ChannelGraph):
        raise EdgeCompressError(f"graph must be the ChannelGraph that edgecompress.graph.analyze returns, got {type(graph).__name__}")
    if frozenset([ignore] if isinstance(ignore, str) else ignore) != graph.ignored:
        raise EdgeCompressError(f"graph was analysed with ignore={sorted(graph.ignored)}, not {list(ignore)}; pass the same ignore or analyse again")
    if tuple(example_input.shape) != graph.input_shape:
        raise EdgeCompressError(f"graph was analysed on an input of shape {graph.input_shape}, not {tuple(example_input.shape)}; analyse again")
    for member in (member for group in graph.prunable_groups for member in group.members):
        if member.module not in modules or max(map(max, member.indices)) >= dimension_size(modules[member.module], member.role.dims[0]):
            raise EdgeCompressError(f"graph does not fit the model at {member.module!r} (pruned or changed since?); analyse the model again")
    return graph


def _plan(
    model: nn.Module,
    graph: ChannelGraph,
    modules: dict[str, nn.Module],
    goal: Goal,
    criterion: Criterion,
    min_channels: int,
    round_to: int | str,
    latency_tables: TablesLike | None,
    candidates: Callable[[ChannelGroup], bool] | None,
) -> PrunePlan:
    ratio, latency = goal.ratio, None
    groups = [group for group in graph.prunable_groups if candidates is None or candidates(group)]
    scores = [criterion.score(group, modules) for group in groups]
    multiples = None if round_to == "auto" else np.array([group_rounding(group, round_to) for group in groups], dtype=int)
    if goal.latency:
        selection, latency = latency_selection(scores, groups, modules, latency_tables, goal.latency, min_channels, multiples)
    elif isinstance(ratio, Mapping) or callable(ratio):
        selection = select_per_group(scores, _group_ratios(groups, _layer_ratio(ratio, modules)), min_channels, multiples)
        ratio = None
    else:
        if ratio is None:
            target = ("macs", goal.target_macs) if goal.target_macs is not None else ("params", goal.target_params)
            ratio = _ratio_for_target(model, modules, graph, groups, scores, target, min_channels, multiples)
        selection = select_channels(scores, ratio, min_channels, multiples)
    removed = {group.id: sorted(channels) for group, channels in zip(groups, selection.removed)}
    group_plans = tuple(
        GroupPlan(group.id, group.size, group.size - len(removed.get(group.id, ())), tuple(removed.get(group.id, ())))
        for group in graph.prunable_groups
    )
    return PrunePlan(
        criterion=criterion.name,
        ratio=None if ratio is None else float(ratio),
        threshold=selection.threshold,
        groups=group_plans,
        cuts=_layer_cuts(groups, selection.removed, modules),
        channels_total=sum(group.size for group in graph.prunable_groups),
        channels_removed=sum(len(channels) for channels in selection.removed),
        input_shape=graph.input_shape,
        input_dtype=graph.input_dtype,
        output_shapes=graph.output_shapes,
        notes=graph.notes,
        target_macs=goal.target_macs,
        target_params=goal.target_params,
        target_latency=goal.target_latency,
        latency_ms=goal.latency_ms,
        latency=latency,
    )


def _ratio_for_target(
    model: nn.Module,
    modules: dict[str, nn.Module],
    graph: ChannelGraph,
    groups: list[ChannelGroup],
    scores: list[torch.Tensor],
    goal: tuple[str, float],
    min_channels: int,
    multiples: np.ndarray,
) -> float:
    """Bisect the global ratio until the estimated MACs (the convs' and linears' cuts, as a fraction of the whole
    forward's MACs) or parameters removed reach the goal's fraction."""
    metric, target = goal
    ranking = rank_channels(scores)
    total = model_macs(model, graph) if metric == "macs" else sum(p.numel() for p in model.parameters())
    cost = CostModel(metric, total, graph, groups, ranking.in_group, modules)

    def removed_at(ratio: float) -> float:
        counts, _ = ranking.removed_counts(ratio, min_channels, multiples)
        return cost.removed_fraction(counts.tolist())

    reachable = removed_at(0.999)
    if reachable < target:
        raise EdgeCompressError(
            f"target_{metric}={target} is out of reach: pruning every prunable channel down to min_channels removes "
            f"about {reachable:.0%} of the {metric}; lower the target or pass fewer modules in ignore"
        )
    return bisect_ratio(removed_at, target)
