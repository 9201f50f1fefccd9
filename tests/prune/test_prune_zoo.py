"""Prune every zoo model at two ratios: it must run, keep its output shapes and get smaller."""

from __future__ import annotations

import pytest
import torch

from edgecompress.graph import Role, analyze
from edgecompress.prune import apply_plan, plan_pruning
from edgecompress.stats import model_stats

from .prune_zoo import ZOO, build, example_input, outputs

OUTPUT_CONVS = {"fpn": ["out2", "out3", "out4"], "detector": ["predict1", "predict2"]}


@pytest.mark.parametrize("ratio", [0.3, 0.6])
@pytest.mark.parametrize("name", sorted(ZOO))
def test_pruned_model_runs_smaller_with_same_outputs(name: str, ratio: float) -> None:
    model, x = build(name), example_input(name)
    before_shapes = [y.shape for y in outputs(model, x)]
    before = model_stats(model, x)
    output_convs = {path: model.get_submodule(path).weight.detach().clone() for path in OUTPUT_CONVS.get(name, [])}

    plan = plan_pruning(model, x, ratio=ratio)
    apply_plan(model, plan)

    fresh = torch.randn(3, *x.shape[1:], generator=torch.Generator().manual_seed(7))
    assert [y.shape[1:] for y in outputs(model, fresh)] == [s[1:] for s in before_shapes]
    after = model_stats(model, x)
    assert after.params < before.params and after.macs < before.macs
    assert plan.channels_removed == pytest.approx(ratio * plan.channels_total, abs=0.05 * plan.channels_total)
    for path, weight in output_convs.items():
        conv = model.get_submodule(path)
        assert conv.out_channels == weight.shape[0] and conv.weight.shape[0] == weight.shape[0]


@pytest.mark.parametrize("name", ["resnet", "mobilenetv2", "detector"])
def test_residual_groups_are_cut_identically(name: str) -> None:
    """Every layer writing into one residual sum loses exactly the same channel indices."""
    model, x = build(name), example_input(name)
    graph = analyze(model, x)
    plan = plan_pruning(model, x, ratio=0.5)
    removed = {(cut.module, cut.dim): cut.removed for cut in plan.cuts}
    residual_groups = [g for g in graph.prunable_groups if len(g.members_with(Role.CONV_OUT)) > 1]
    assert residual_groups, "the model has residual sums"
    for group in residual_groups:
        writers = group.members_with(Role.CONV_OUT, Role.BN)
        cut_sets = {removed.get((member.module, "out"), ()) for member in writers}
        assert len(cut_sets) == 1 and cut_sets != {()}
    apply_plan(model, plan)
    for group in residual_groups:
        sizes = {model.get_submodule(member.module).num_features for member in group.members_with(Role.BN)}
        assert len(sizes) == 1
