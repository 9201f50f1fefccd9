"""Planning semantics and argument checks of the public pruning API."""

from __future__ import annotations

import json

import pytest
import torch
from torch import Tensor, nn

from edgecompress.errors import EdgeCompressError
from edgecompress.prune import CRITERIA, apply_plan, plan_pruning, prunable_batchnorms, prune
from edgecompress.stats import model_stats

from .prune_zoo import build, example_input


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))


X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, "0.5"])
def test_ratio_outside_unit_interval_is_rejected(ratio) -> None:
    with pytest.raises(EdgeCompressError, match="ratio must be in"):
        plan_pruning(TwoLayers(), X, ratio=ratio)


def test_unknown_criterion_lists_the_known_ones() -> None:
    with pytest.raises(EdgeCompressError, match="bn-gamma, fpgm, kmeans, l1, l2, random"):
        prune(TwoLayers(), X, ratio=0.5, criterion="entropy")
    assert {"bn-gamma", "l1", "fpgm"} <= set(CRITERIA)
    with pytest.raises(EdgeCompressError, match="round_to"):
        plan_pruning(TwoLayers(), X, ratio=0.5, round_to=0)


def test_bn_gamma_removes_the_smallest_gammas_and_l1_the_smallest_filters() -> None:
    model = TwoLayers()
    with torch.no_grad():
        model.bn1.weight.copy_(torch.linspace(1.0, 2.0, 16))
        model.bn1.weight[[3, 9, 14]] = 0.01
        model.conv1.weight[[0, 5]] *= 0.01
    gamma_plan = plan_pruning(model, X, ratio=3 / 16)
    assert gamma_plan.groups[0].removed == (3, 9, 14)
    assert gamma_plan.threshold == pytest.approx(0.01, rel=1e-4)  # raw |gamma|: one global threshold
    assert plan_pruning(model, X, ratio=2 / 16, criterion="l1").groups[0].removed == (0, 5)


def test_equal_scores_prune_every_group_at_the_same_rate() -> None:
    model, x = build("resnet"), example_input("resnet")
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
    plan = plan_pruning(model, x, ratio=0.5)
    assert all(group.kept == group.total // 2 for group in plan.groups)


def test_min_channels_and_round_to_are_respected() -> None:
    model, x = build("mobilenetv2"), example_input("mobilenetv2")
    plan = plan_pruning(model, x, ratio=0.9, min_channels=6, round_to=4)
    assert plan.channels_removed <= 0.9 * plan.channels_total
    for group in plan.groups:
        assert group.kept >= min(6, group.total)
        assert group.kept % 4 == 0 or group.kept == group.total
    apply_plan(model, plan)
    assert model.blocks[1].block[0][0].out_channels % 4 == 0


def test_prune_returns_the_smaller_model_and_a_plan_applies_only_once() -> None:
    model = build("detector")
    x = example_input("detector")
    before = model_stats(model, x)
    plan = plan_pruning(model, x, ratio=0.4)
    assert plan.channels_removed > 0 and json.dumps(plan.summary())
    assert model_stats(model, x) == before  # planning does not modify
    assert apply_plan(model, plan) is model
    with pytest.raises(EdgeCompressError, match="already pruned"):
        apply_plan(model, plan)
    second = build("detector")
    assert prune(second, x, ratio=0.4) is second
    assert model_stats(second, x) == model_stats(model, x)
    assert model_stats(model, x).params < before.params


def test_ratio_zero_changes_nothing() -> None:
    model = build("fpn")
    plan = plan_pruning(model, example_input("fpn"), ratio=0.0)
    assert plan.channels_removed == 0 and plan.cuts == ()


def test_prunable_batchnorms_excludes_bns_whose_channels_must_stay() -> None:
    names = [name for name, _ in prunable_batchnorms(TwoLayers(), X)]
    assert names == ["bn1"]  # bn2 feeds the model output
    assert [name for name, _ in prunable_batchnorms(TwoLayers(), X, ignore=["conv2"])] == []
