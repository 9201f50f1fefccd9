"""Planning can reuse an analysis: same plans as analysing again, and a graph that does not fit is refused."""

from __future__ import annotations

import copy
import gc

import pytest
import torch

from edgecompress.errors import EdgeCompressError
from edgecompress.graph import analyze
from edgecompress.prune import apply_plan, plan_pruning, prunable_batchnorms

from .prune_zoo import build, example_input, outputs

GOALS = [{"ratio": 0.4}, {"ratio": {"": 0.3}, "criterion": "l1"}, {"target_macs": 0.5, "round_to": 4}, {"target_params": 0.3}]


@pytest.mark.parametrize("name", ["mobilenetv2", "c2f", "densenet"])
def test_plan_from_a_reused_graph_equals_a_fresh_plan(name: str) -> None:
    model, x = build(name), example_input(name)
    graph = analyze(model, x)
    for goal in GOALS:
        assert plan_pruning(model, x, graph=graph, **goal) == plan_pruning(model, x, **goal)
    assert prunable_batchnorms(model, x, graph=graph) == prunable_batchnorms(model, x)


def test_a_graph_stays_valid_when_only_weights_change() -> None:
    """The sparse-training flow: analyse once, train (weights change), then plan with the same graph."""
    model, x = build("resnet"), example_input("resnet")
    graph = analyze(model, x)
    with torch.no_grad():
        for _, bn in prunable_batchnorms(model, x, graph=graph):
            bn.weight.mul_(torch.rand(bn.num_features, generator=torch.Generator().manual_seed(3)))
    plan = plan_pruning(model, x, ratio=0.5, graph=graph)
    assert plan == plan_pruning(model, x, ratio=0.5)
    fresh = torch.randn(2, *x.shape[1:], generator=torch.Generator().manual_seed(5))
    assert [y.shape for y in outputs(apply_plan(copy.deepcopy(model), plan), fresh)] == [y.shape for y in outputs(model, fresh)]


def test_a_graph_that_does_not_fit_is_refused() -> None:
    model, x = build("resnet"), example_input("resnet")
    graph = analyze(model, x)
    pruned = apply_plan(copy.deepcopy(model), plan_pruning(model, x, ratio=0.5, graph=graph))
    with pytest.raises(EdgeCompressError, match="does not fit the model"):
        plan_pruning(pruned, x, ratio=0.5, graph=graph)
    with pytest.raises(EdgeCompressError, match="does not fit the model"):
        plan_pruning(build("vgg-global-pool"), x, ratio=0.5, graph=graph)
    with pytest.raises(EdgeCompressError, match="input of shape"):
        plan_pruning(model, x[:1], ratio=0.5, graph=graph)
    with pytest.raises(EdgeCompressError, match="analysed with ignore"):
        plan_pruning(model, x, ratio=0.5, graph=graph, ignore=["fc"])
    kept_fc = analyze(model, x, ignore=["fc"])
    assert plan_pruning(model, x, ratio=0.5, graph=kept_fc, ignore=["fc"]) == plan_pruning(model, x, ratio=0.5, ignore=["fc"])
    with pytest.raises(EdgeCompressError, match="ChannelGraph"):
        plan_pruning(model, x, ratio=0.5, graph=graph.groups)


@pytest.mark.parametrize("enabled", [True, False])
def test_analysis_and_planning_leave_the_garbage_collector_as_they_found_it(enabled: bool) -> None:
    """They pause the cyclic collector while they run, also when they fail."""
    model, x = build("resnet"), example_input("resnet")
    (gc.enable if enabled else gc.disable)()
    try:
        plan_pruning(model, x, ratio=0.5)
        assert gc.isenabled() == enabled
        with pytest.raises(EdgeCompressError):
            analyze(model, torch.randn(2, 5, 32, 32))
        assert gc.isenabled() == enabled
    finally:
        gc.enable()
