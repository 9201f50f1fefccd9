"""Latency-budget pruning against synthetic latency tables (no measurement): the budget is met, the prediction
is the sum the planner optimised, slow layers are cut harder, round_to="auto" keeps step boundaries."""

from __future__ import annotations

import copy
import math
from typing import Callable

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import edgecompress as ec
from edgecompress.errors import EdgeCompressError
from edgecompress.graph import analyze
from edgecompress.profile import LayerShape, LayerTable, layer_shapes
from edgecompress.profile.layer_latency import grid_points, prunable_dims
from edgecompress.prune import PruneJob, apply_plan, get_strategy, plan_pruning, summarize_passes
from edgecompress.prune.latency_budget import LatencyModel, allowed_counts, step_boundaries
from edgecompress.prune.plan import group_rounding
from edgecompress.prune.selection import removal_order

from .prune_zoo import build, example_input

Latency = Callable[[LayerShape], float]


def macs_ms(shape: LayerShape) -> float:
    """A synthetic runtime whose time is the layer's MACs (one ms per million)."""
    if shape.op == "linear":
        return shape.in_channels * shape.out_channels * math.prod(shape.input_shape[:-1]) * 1e-6
    out = shape.output_shape
    return shape.out_channels * shape.in_channels // shape.groups * math.prod(shape.kernel) * math.prod(out[2:]) * out[0] * 1e-6


def synthetic_tables(model: nn.Module, x: Tensor, latency: Latency, ignore=()) -> dict[str, tuple[LayerTable, ...]]:
    """Tables 'measured' at every channel count along each prunable axis, with ``latency`` as the runtime."""
    resizable = prunable_dims(analyze(model, x, ignore))
    return {name: tuple(LayerTable(shape, {point: latency(shape.at(*point)) for point in grid_points(shape, resizable.get(name, ()), 1, None)})
                        for shape in shapes)
            for name, shapes in layer_shapes(model, x).items()}


def model_latency(model: nn.Module, x: Tensor, latency: Latency) -> float:
    """The synthetic runtime's latency of a (pruned) model, from the layers as they run now."""
    return sum(latency(shape) for shapes in layer_shapes(model, x).values() for shape in shapes)


class TwoBranches(nn.Module):
    """Two independent branches, each one conv wide, summed after their own 1x1 projections."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.a, self.bn_a, self.proj_a = nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.Conv2d(width, 4, 1)
        self.b, self.bn_b, self.proj_b = nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.Conv2d(width, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj_a(torch.relu(self.bn_a(self.a(x)))) + self.proj_b(torch.relu(self.bn_b(self.b(x))))


X = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(5))


def test_a_reachable_budget_is_met_exactly() -> None:
    """One ms per output channel of a/b (projections constant): any whole number of ms is reachable, and the
    planner lands on it, not below."""
    model = TwoBranches()

    def per_channel(shape: LayerShape) -> float:
        return float(shape.out_channels) if shape.kernel == (3, 3) else 1.0

    tables = synthetic_tables(model, X, per_channel)
    dense = model_latency(model, X, per_channel)  # 16 + 16 + 2
    for budget in (11.0, 20.0, 29.0):
        plan = plan_pruning(model, X, latency_ms=budget, latency_tables=tables)
        assert plan.latency.predicted_ms == budget and plan.latency.dense_ms == dense
        assert plan.latency.budget_ms == budget and plan.summary()["predicted_latency"]["predicted_ms"] == budget
    plan = plan_pruning(model, X, target_latency=13 / 34, latency_tables=tables)
    assert plan.latency.predicted_ms == pytest.approx(13.0)


@pytest.mark.parametrize(("name", "round_to"), [("resnet", 1), ("mobilenetv2", 4), ("c2f", 2), ("vgg-global-pool", 8)])
def test_prediction_is_the_sum_the_planner_optimised_and_the_pruned_model_runs_it(name: str, round_to: int) -> None:
    model, x = build(name), example_input(name)
    tables = synthetic_tables(model, x, macs_ms)
    dense = model_latency(model, x, macs_ms)
    plan = plan_pruning(model, x, target_latency=0.5, latency_tables=tables, round_to=round_to, criterion="l1")
    assert plan.latency.dense_ms == pytest.approx(dense)
    assert plan.latency.predicted_ms <= 0.5 * dense * (1 + 1e-9)
    assert sum(plan.latency.layers.values()) == pytest.approx(plan.latency.predicted_ms)
    multiples = {group.id: group_rounding(group, round_to) for group in analyze(model, x).prunable_groups}
    assert all(group.kept % multiples[group.group_id] == 0 or group.kept == group.total for group in plan.groups)
    apply_plan(model, plan)
    assert model_latency(model, x, macs_ms) == pytest.approx(plan.latency.predicted_ms)  # the pruned layers as they run


def test_a_budget_the_dense_model_meets_keeps_every_channel_even_where_fewer_channels_are_slower() -> None:
    """Measured curves need not fall (a smaller count can get a slower kernel): the dense model within the budget is kept
    whole, not refused because the fewest channels predict more."""
    model = TwoBranches()

    def slower_when_cut(shape: LayerShape) -> float:
        return 2.0 if shape.kernel == (3, 3) and shape.out_channels < 16 else 1.0

    plan = plan_pruning(model, X, latency_ms=4.0, latency_tables=synthetic_tables(model, X, slower_when_cut))
    assert plan.latency.predicted_ms == plan.latency.dense_ms == 4.0 and plan.channels_removed == 0


def test_no_group_could_keep_more_within_the_budget() -> None:
    """The give-back pass: after the plan, growing any group to its next allowed count breaks the budget."""
    model, x = build("resnet"), example_input("resnet")
    tables = synthetic_tables(model, x, macs_ms)
    plan = plan_pruning(model, x, target_latency=0.4, latency_tables=tables, round_to=4, min_channels=4)
    graph = analyze(model, x)
    groups = graph.prunable_groups
    orders = [removal_order(torch.arange(group.size, 0, -1).float()) for group in groups]  # any order: counts are what matter here
    latency = LatencyModel(groups, orders, dict(model.named_modules()), tables)
    kept = np.array([group.kept for group in plan.groups])
    assert latency.predict(kept) == pytest.approx(plan.latency.predicted_ms)
    for index, group in enumerate(groups):
        larger = allowed_counts(group.size, 4, 4)
        larger = larger[larger > kept[index]]
        if len(larger):
            grown = kept.copy()
            grown[index] = larger[0]
            assert latency.predict(grown) > plan.latency.budget_ms


def test_slow_layers_are_cut_harder_than_fast_ones() -> None:
    """Equal importance everywhere (fresh BN gammas): the branch whose channels cost 10x more loses more of them."""
    model = TwoBranches(width=32)
    tables = synthetic_tables(model, X, macs_ms)
    (a,) = tables["a"]
    tables["a"] = (LayerTable(a.shape, {point: 10 * ms for point, ms in a.points.items()}),)
    plan = plan_pruning(model, X, target_latency=0.5, latency_tables=tables)
    kept = {cut.module: cut.size - len(cut.removed) for cut in plan.cuts if cut.dim == "out"}
    assert kept["a"] < kept.get("b", 32)
    even = plan_pruning(model, X, target_latency=0.5, latency_tables=synthetic_tables(model, X, macs_ms))
    assert {cut.module: len(cut.removed) for cut in even.cuts if cut.module in ("a", "b")} == {"a": 16, "b": 16}


def test_round_to_auto_keeps_the_top_of_each_step() -> None:
    """Time grows in steps of 16 output channels: auto allows only 16, 32, 48, 64, and the plan keeps those."""
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1),
                          nn.BatchNorm2d(64), nn.ReLU(), nn.Conv2d(64, 8, 1))

    def tiled(shape: LayerShape) -> float:
        return math.ceil(shape.out_channels / 16) * math.ceil(shape.in_channels / 16) * 1.0

    tables = synthetic_tables(model, X, tiled)
    graph = analyze(model, X)
    groups = graph.prunable_groups
    latency = LatencyModel(groups, [torch.arange(group.size) for group in groups], dict(model.named_modules()), tables)
    for index in range(len(groups)):
        assert step_boundaries(latency, index, floor=1).tolist() == [16, 32, 48, 64]
    auto = plan_pruning(model, X, target_latency=0.3, latency_tables=tables, round_to="auto", criterion="l1")
    assert all(group.kept % 16 == 0 for group in auto.groups) and auto.latency.predicted_ms <= 0.3 * auto.latency.dense_ms


def test_ignore_and_min_channels_hold_under_a_latency_budget() -> None:
    model, x = build("resnet"), example_input("resnet")
    tables = synthetic_tables(model, x, macs_ms, ignore=["layer1"])
    plan = plan_pruning(model, x, target_latency=0.6, latency_tables=tables, ignore=["layer1"], min_channels=6)
    assert not any(cut.module.startswith("layer1.") for cut in plan.cuts)
    assert all(group.kept >= 6 for group in plan.groups)


def test_prune_and_the_strategy_job_take_a_latency_goal() -> None:
    model, x = build("mobilenetv2"), example_input("mobilenetv2")
    tables = synthetic_tables(model, x, macs_ms)
    reference = copy.deepcopy(model)
    assert ec.prune(model, x, target_latency=0.6, latency_tables=tables, round_to=2) is model
    assert model_latency(model, x, macs_ms) <= 0.6 * model_latency(reference, x, macs_ms) * (1 + 1e-9)
    job = PruneJob(x, target_latency=0.6, latency_tables=tables, round_to=2)
    plans = get_strategy("global").prune(reference, job)
    summary = summarize_passes(plans, job)
    assert summary["target_latency"] == 0.6 and summary["predicted_latency"]["predicted_fraction"] <= 0.6 + 1e-9


def test_bad_latency_goals_are_one_line_errors() -> None:
    model, x = build("resnet"), example_input("resnet")
    tables = synthetic_tables(model, x, macs_ms)
    with pytest.raises(EdgeCompressError, match="target_latency is the fraction"):
        plan_pruning(model, x, target_latency=1.5, latency_tables=tables)
    with pytest.raises(EdgeCompressError, match="exactly one of"):
        plan_pruning(model, x, target_latency=0.5, target_macs=0.5, latency_tables=tables)
    with pytest.raises(EdgeCompressError, match="round_to='auto'"):
        ec.prune(model, x, ratio=0.5, round_to="auto")
    with pytest.raises(EdgeCompressError, match="out of reach"):
        plan_pruning(model, x, target_latency=0.01, latency_tables=tables, min_channels=8)
    with pytest.raises(EdgeCompressError, match="measure the tables on this model"):
        plan_pruning(model, torch.randn(1, 3, 16, 16), target_latency=0.5, latency_tables=tables)
    with pytest.raises(EdgeCompressError, match="measure the tables on this model"):
        plan_pruning(build("vgg-global-pool"), example_input("vgg-global-pool"), target_latency=0.5, latency_tables=tables)


@pytest.mark.parametrize(("settings", "message"), [({"target_latency": 1.5}, "--target-latency must be in"),
                                                   ({"target_latency": 0.4, "target_macs": 0.5}, "not both"),
                                                   ({"target_latency": 0.4, "latency_runtime": "tvm"}, "unknown --latency-runtime")])
def test_build_settings_check_the_latency_goal(settings: dict, message: str) -> None:
    from edgecompress.settings import BuildConfig

    with pytest.raises(EdgeCompressError, match=message):
        BuildConfig(**settings).check()
