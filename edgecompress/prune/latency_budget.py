"""Channel selection under a latency budget, from per-layer latency tables (HALP, Shen et al., NeurIPS 2022).

HALP keeps the channels of greatest total importance whose summed latency fits the budget: a knapsack over
latency lookup tables, one class per layer, where keeping k channels of a layer costs its table's latency at
k (given its neighbours' current counts) and is worth the importance of its k best channels. This module
solves that multiple-choice knapsack with the greedy its LP relaxation suggests, over channel groups (the
channels pruned together):

1. Every group starts whole. Repeatedly take the cut, over every group and every smaller count it may keep,
   that loses the least importance per millisecond saved, the latency recomputed from the tables with the
   other groups' current counts (a conv between two groups costs T(kept in, kept out)); a cut may jump over
   several counts, which steps past a plateau of the step curve, where one count alone saves nothing.
   Stop when the predicted latency fits the budget.
2. The last cut may overshoot: give back, while the budget holds, the growth that restores the most
   importance per millisecond it costs (first any that costs nothing), until no group can grow within it.

The predicted latency is the sum of the tables' latencies at the chosen counts: of the measured convs and
linears only (what runs between them, and the model's own fusions, are outside the tables). A group none of
whose layers has a table (one read only by a transposed conv) saves no predicted time and keeps its channels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import EdgeCompressError
from ..graph import ChannelGraph, ChannelGroup
from ..profile.layer_latency import LatencyTables, LayerTable, grid_step, measure_latency_tables, prunable_dims
from ..profile.layer_shapes import layer_shapes
from .selection import Selection, removal_order
from .surgery import dimension_size

TablesLike = LatencyTables | Mapping[str, "LayerTable | Sequence[LayerTable]"]
RELATIVE_SLACK = 1e-9  # a sum equal to the budget up to float rounding fits it


@dataclass(frozen=True)
class LatencyPrediction:
    """What a latency-budget plan predicts: the budget, the prediction before and after, per layer after, and the tables' origin."""

    budget_ms: float
    predicted_ms: float  # sum of the layers' table latencies at the kept channels
    dense_ms: float  # the same sum with every channel kept
    tables: str  # where the tables were measured
    layers: dict[str, float] = field(default_factory=dict)  # module -> predicted ms after pruning

    def summary(self) -> dict:
        return {"budget_ms": self.budget_ms, "predicted_ms": self.predicted_ms, "dense_predicted_ms": self.dense_ms,
                "predicted_fraction": self.predicted_ms / self.dense_ms if self.dense_ms else None, "tables": self.tables}


@dataclass
class _Layer:
    name: str
    tables: tuple[LayerTable, ...]
    size: dict[str, int]  # "in" / "out" -> channels before pruning
    parts: dict[str, list[tuple[int, np.ndarray]]]  # dim -> (group, its indices removed after r channels, for every r)


def table_map(tables: TablesLike) -> dict[str, tuple[LayerTable, ...]]:
    """Module name -> its tables (one per call), from :class:`LatencyTables` or a mapping of tables."""
    mapping = tables.tables if isinstance(tables, LatencyTables) else tables
    if not isinstance(mapping, Mapping):
        raise EdgeCompressError(f"latency_tables must be LatencyTables or {{module name: LayerTable}}, got {type(tables).__name__}")
    return {name: (value,) if isinstance(value, LayerTable) else tuple(value) for name, value in mapping.items()}


class LatencyModel:
    """Predicted latency of a model's measured layers as a function of the channels each group keeps."""

    def __init__(self, groups: Sequence[ChannelGroup], orders: Sequence[torch.Tensor], modules: Mapping[str, nn.Module], tables: TablesLike):
        self.sizes = np.array([group.size for group in groups])
        by_layer = table_map(tables)
        layers: dict[str, _Layer] = {}
        for name, calls in by_layer.items():
            if name not in modules or not calls:
                raise EdgeCompressError(f"latency tables name {name!r}, which is not a layer of this model; measure the tables on this model")
            size = {dim: dimension_size(modules[name], dim) for dim in ("in", "out")}
            for table in calls:
                if (table.shape.in_channels, table.shape.out_channels) != (size["in"], size["out"]):
                    raise EdgeCompressError(f"the latency table of {name!r} is for {table.shape.in_channels}->{table.shape.out_channels} "
                                            f"channels, the layer has {size['in']}->{size['out']} (pruned since?); measure the tables on this model")
            layers[name] = _Layer(name, calls, size, {"in": [], "out": []})
        for index, (group, order) in enumerate(zip(groups, orders)):
            for member in group.members:
                if member.module in layers:
                    removed = np.concatenate([[0], np.cumsum([len(member.indices[channel]) for channel in order.tolist()])])
                    for dim in member.role.dims:
                        layers[member.module].parts[dim].append((index, removed))
        self.layers = list(layers.values())
        self.of_group: list[list[int]] = [[] for _ in groups]
        for position, layer in enumerate(self.layers):
            for index in {g for parts in layer.parts.values() for g, _ in parts}:
                self.of_group[index].append(position)
        self.neighbours = [sorted({g for position in self.of_group[index] for parts in self.layers[position].parts.values() for g, _ in parts})
                           for index in range(len(groups))]

    def _channels(self, layer: _Layer, dim: str, kept: np.ndarray, vary: int | None = None, counts: np.ndarray | None = None) -> np.ndarray:
        """Channels ``layer`` keeps along ``dim`` when group g keeps ``kept[g]`` (group ``vary`` at each of ``counts``)."""
        channels = np.full(1 if counts is None else len(counts), layer.size[dim])
        for group, removed in layer.parts[dim]:
            if group == vary:
                channels = channels - removed[self.sizes[group] - counts]
            else:
                channels = channels - removed[self.sizes[group] - kept[group]]
        return channels

    def _layer_ms(self, layer: _Layer, kept: np.ndarray, vary: int | None = None, counts: np.ndarray | None = None) -> np.ndarray:
        kept_in, kept_out = (self._channels(layer, dim, kept, vary, counts) for dim in ("in", "out"))
        return sum(np.asarray(table.latency(kept_in, kept_out), dtype=float) for table in layer.tables)

    def layer_ms(self, kept: Sequence[int]) -> np.ndarray:
        """Predicted ms of every measured layer (all its calls) when group g keeps ``kept[g]`` channels."""
        kept = np.asarray(kept)
        return np.array([self._layer_ms(layer, kept)[0] for layer in self.layers])

    def predict(self, kept: Sequence[int]) -> float:
        return float(self.layer_ms(kept).sum())

    def update(self, now: np.ndarray, group: int, kept: np.ndarray) -> None:
        """Recompute in ``now`` the per-layer ms of the layers ``group`` touches, after its count changed in ``kept``."""
        for position in self.of_group[group]:
            now[position] = self._layer_ms(self.layers[position], kept)[0]

    def change(self, group: int, counts: np.ndarray, kept: np.ndarray, now: np.ndarray) -> np.ndarray:
        """Change of the predicted total if ``group`` kept each of ``counts`` instead (``now``: the current per-layer ms)."""
        delta = np.zeros(len(counts))
        for position in self.of_group[group]:
            delta += self._layer_ms(self.layers[position], kept, group, counts) - now[position]
        return delta


def allowed_counts(size: int, floor: int, multiple: int) -> np.ndarray:
    """Counts a group of ``size`` may keep: multiples of ``multiple`` from ``floor`` (rounded up) on, and ``size``."""
    smallest = min(-(-max(floor, 1) // multiple) * multiple, size)
    return np.array(sorted({*range(smallest, size, multiple), size}))


def step_boundaries(model: LatencyModel, group: int, floor: int) -> np.ndarray:
    """``round_to="auto"``: the counts of ``group`` its measured step curve (its layers' latency, the other groups whole)
    does not rule out: those faster than every larger count. A count on a plateau, or below a point where time
    drops, costs as much as keeping more channels, so it is never chosen."""
    size = model.sizes[group]
    counts = np.arange(min(max(floor, 1), size), size + 1)
    kept = model.sizes.copy()
    latency = model.change(group, counts, kept, model.layer_ms(kept))
    faster_than_all_above = np.append(latency[:-1] < np.minimum.accumulate(latency[::-1])[::-1][1:], True)
    return counts[faster_than_all_above]


def select_for_latency(scores: Sequence[torch.Tensor], model: LatencyModel, budget_ms: float, allowed: Sequence[np.ndarray]) -> list[int]:
    """Channels each group keeps (one of its ``allowed`` counts, its highest scores) so that the predicted latency fits
    ``budget_ms``, by the greedy of the module doc. Raises EdgeCompressError when no choice fits."""
    sizes = model.sizes
    # lost[g][r]: importance of group g's r lowest-scoring channels
    lost = [np.concatenate([[0.0], np.cumsum(np.sort(score.double().numpy()))]) for score in scores]
    kept = sizes.copy()
    now = model.layer_ms(kept)
    limit = budget_ms * (1 + RELATIVE_SLACK)
    fewest = np.array([counts[0] for counts in allowed])
    if model.predict(fewest) > limit and now.sum() > limit:  # measured curves need not fall: fewer channels can be slower
        raise EdgeCompressError(
            f"a latency budget of {budget_ms:.4g} ms is out of reach: every group at its fewest channels still predicts "
            f"{model.predict(fewest):.4g} ms ({model.predict(fewest) / max(now.sum(), 1e-12):.0%} of the dense {now.sum():.4g} ms); "
            "raise the target, lower min_channels or pass fewer modules in ignore")
    best: dict[int, tuple[float, float, float, int] | None] = {}
    dirty = set(range(len(sizes)))
    while now.sum() > limit:
        for group in dirty:
            best[group] = _best_cut(group, model, kept, now, allowed[group], lost[group])
        choices = [(choice, group) for group, choice in best.items() if choice is not None]
        if not choices:
            raise EdgeCompressError(f"no cut lowers the predicted latency below {now.sum():.4g} ms (budget {budget_ms:.4g} ms); "
                                    "raise the target")
        (*_, count), group = min(choices)
        kept[group] = count
        model.update(now, group, kept)
        dirty = set(model.neighbours[group]) | {group}
    return _give_back(model, kept, allowed, lost, limit).tolist()


def _best_cut(group: int, model: LatencyModel, kept: np.ndarray, now: np.ndarray, allowed: np.ndarray,
              lost: np.ndarray) -> tuple[float, float, float, int] | None:
    """The best smaller count ``group`` could keep, as (importance lost per ms saved, -fraction of the group kept after, ms saved,
    count): ties go to the group keeping most of its channels (equal scores and costs prune every group at the same rate),
    then to the smaller cut. None when no count saves time."""
    counts = allowed[allowed < kept[group]]
    if not len(counts):
        return None
    saved = -model.change(group, counts, kept, now)
    useful = saved > 0
    if not useful.any():
        return None
    counts, saved = counts[useful], saved[useful]
    size = model.sizes[group]
    cost = _significant((lost[size - counts] - lost[size - kept[group]]) / saved)
    best = np.lexsort((saved, -counts, cost))[0]
    return float(cost[best]), -float(counts[best]) / size, float(saved[best]), int(counts[best])


def _significant(values: np.ndarray, digits: int = 10) -> np.ndarray:
    """``values`` to ``digits`` significant digits, so that ratios equal but for float rounding compare equal."""
    return np.array([float(f"{value:.{digits}g}") for value in values])


def _give_back(model: LatencyModel, kept: np.ndarray, allowed: Sequence[np.ndarray], lost: Sequence[np.ndarray], limit: float) -> np.ndarray:
    """Grow groups while the budget holds: free growth first, then the most importance per ms; until none fits."""
    now = model.layer_ms(kept)
    while True:
        total = now.sum()
        choices = []
        for group, counts in enumerate(allowed):
            counts = counts[counts > kept[group]]
            if not len(counts):
                continue
            added = model.change(group, counts, kept, now)
            fits = total + added <= limit
            if not fits.any():
                continue
            counts, added = counts[fits], added[fits]
            size = model.sizes[group]
            gain = lost[group][size - kept[group]] - lost[group][size - counts]
            value = np.where(added <= 0, np.inf, _significant(gain / np.maximum(added, 1e-300)))
            best = np.lexsort((-gain, -value))[0]
            choices.append((-value[best], -gain[best], group, int(counts[best])))
        if not choices:
            return kept
        *_, group, count = min(choices)
        kept[group] = count
        model.update(now, group, kept)


def latency_selection(scores: Sequence[torch.Tensor], groups: Sequence[ChannelGroup], modules: Mapping[str, nn.Module], tables: TablesLike,
                      budget: tuple[str, float], min_channels: int, multiples: np.ndarray | None) -> tuple[Selection, LatencyPrediction]:
    """The channels to remove so that the predicted latency fits ``budget`` (``("fraction", 0.4)`` of the dense prediction,
    or ``("ms", 5.0)``), each group keeping a multiple of ``multiples[g]`` (None: ``round_to="auto"``, its step boundaries)."""
    orders = [removal_order(score) for score in scores]
    model = LatencyModel(groups, orders, modules, tables)
    dense = model.predict(model.sizes)
    budget_ms = budget[1] * dense if budget[0] == "fraction" else budget[1]
    floor = max(min_channels, 1)
    allowed = ([step_boundaries(model, g, floor) for g in range(len(groups))] if multiples is None
               else [allowed_counts(group.size, floor, int(multiple)) for group, multiple in zip(groups, multiples)])
    kept = select_for_latency(scores, model, budget_ms, allowed)
    removed = [order[: group.size - count].tolist() for group, order, count in zip(groups, orders, kept)]
    cut = [float(score[channels].max()) for score, channels in zip(scores, removed) if channels]
    source = tables.describe() if isinstance(tables, LatencyTables) else "given tables"
    per_layer = dict(zip((layer.name for layer in model.layers), model.layer_ms(kept).tolist()))
    prediction = LatencyPrediction(budget_ms, model.predict(kept), dense, source, per_layer)
    return Selection(removed, max(cut, default=0.0)), prediction


def tables_for(model: nn.Module, example_input: torch.Tensor, graph: ChannelGraph, round_to: int | str, tables: TablesLike | None) -> TablesLike:
    """``tables`` checked against the layers as they run on ``example_input``; without them, the model's tables measured
    (onnxruntime, fp32, on a grid of ``round_to``, 8 for 1 or "auto"; cached, see :mod:`edgecompress.profile.layer_latency`)."""
    if tables is None:
        return measure_latency_tables(model, example_input, resizable=prunable_dims(graph), step=grid_step(round_to))
    calls = layer_shapes(model, example_input)
    for name, given in table_map(tables).items():
        shapes = tuple(table.shape for table in given)
        if calls.get(name) != shapes:
            ran = ", ".join(map(str, calls.get(name, ()))) or "does not run"
            raise EdgeCompressError(f"the latency tables of {name!r} are for {', '.join(map(str, shapes))}, but on this input it {ran}; "
                                    "measure the tables on this model and input (edgecompress.profile.measure_latency_tables)")
    return tables
