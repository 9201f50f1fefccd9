"""Criteria are objects: a registry of them, what each needs, new ones in a few lines, layer-pruning fallback."""

from __future__ import annotations

from typing import Iterator, Mapping

import pytest
import torch
from torch import nn

from edgecompress.errors import EdgeCompressError
from edgecompress.graph import ChannelGroup, analyze
from edgecompress.prune import (
    CRITERIA,
    BnGammaImportance,
    Criterion,
    L1Importance,
    TaylorImportance,
    get_criterion,
    plan_pruning,
    prune,
    prune_layers,
    register_criterion,
)

from .prune_zoo import build, example_input, outputs


class NegativeL1(Criterion):
    """A toy criterion: the largest filters go first."""

    name = "negative-l1"

    def score(self, group: ChannelGroup, modules: Mapping[str, nn.Module]) -> torch.Tensor:
        return -L1Importance().score(group, modules)


@pytest.fixture
def negative_l1() -> Iterator[Criterion]:
    criterion = register_criterion(NegativeL1())
    yield criterion
    del CRITERIA[criterion.name]


def test_a_registered_criterion_prunes_a_model_by_name(negative_l1: Criterion) -> None:
    model, x = build("resnet"), example_input("resnet")
    plan = plan_pruning(model, x, ratio=0.3, criterion="negative-l1")
    assert plan.criterion == "negative-l1" and plan.channels_removed > 0
    modules = dict(model.named_modules())
    for group, outcome in zip(analyze(model, x).prunable_groups, plan.groups, strict=True):
        l1 = L1Importance().score(group, modules)
        kept = [index for index in range(group.size) if index not in outcome.removed]
        assert not outcome.removed or l1[list(outcome.removed)].min() >= l1[kept].max()
    assert plan_pruning(model, x, ratio=0.3, criterion=NegativeL1()).cuts == plan.cuts  # an unregistered object works too
    shapes = [tensor.shape for tensor in outputs(model, x)]
    prune(model, x, ratio=0.3, criterion="negative-l1")
    assert [tensor.shape for tensor in outputs(model, x)] == shapes


def test_criteria_say_what_they_need() -> None:
    assert {"bn-gamma", "l1", "fpgm", "taylor"} <= set(CRITERIA)
    assert get_criterion("taylor").needs_gradients is True
    assert [name for name in ("bn-gamma", "l1", "fpgm") if get_criterion(name).needs_gradients] == []
    assert isinstance(get_criterion("bn-gamma"), BnGammaImportance) and get_criterion("bn-gamma").needs_sparse_bn
    taylor = TaylorImportance()
    assert get_criterion(taylor) is taylor
    with pytest.raises(EdgeCompressError, match=r"unknown pruning criterion 'entropy'; choose one of activation, attention, bn-gamma, fpgm, kmeans, l1, l2, random"):
        get_criterion("entropy")
    with pytest.raises(EdgeCompressError, match="register a named Criterion instance"):
        register_criterion(lambda group, modules: torch.ones(group.size))


@pytest.mark.parametrize("criterion", ["fpgm", TaylorImportance()])
def test_layer_pruning_falls_back_to_bn_gamma_when_a_criterion_cannot_score_blocks(criterion: str | Criterion) -> None:
    def weakened() -> nn.Module:
        model = build("c2f")
        with torch.no_grad():
            model.stage1.m[0].cv2[1].weight.mul_(0.01)  # the weakest block by gamma
            model.stage2.m[0].cv2[0].weight.mul_(0.001)  # ... and by conv weight
        return model

    x = example_input("c2f")
    assert prune_layers(weakened(), x, n=1, criterion="l1") == ["stage2.m.0"]
    assert prune_layers(weakened(), x, n=1, criterion="bn-gamma") == ["stage1.m.0"]
    assert prune_layers(weakened(), x, n=1, criterion=criterion) == ["stage1.m.0"]
