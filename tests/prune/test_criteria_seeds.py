"""The seeds' criteria (l2, random control, k-means bi-criteria, activation): each finds planted
unimportant channels, prunes the zoo to runnable models, and a data-needing one refuses to run without data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import edgecompress
from edgecompress.errors import EdgeCompressError
from edgecompress.graph import analyze
from edgecompress.prune import (
    CRITERIA,
    ActivationImportance,
    KMeansImportance,
    RandomImportance,
    apply_plan,
    get_criterion,
    plan_pruning,
)

from .prune_zoo import build, example_input, outputs

PLANTED = (2, 5, 11)
WIDTH = 16


def small_net() -> nn.Sequential:
    """conv-BN-ReLU twice, pooled into a classifier; the first block's 16 channels are where we plant.
    Gammas are spread so that no two channels tie on them."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, WIDTH, 3, padding=1, bias=False), nn.BatchNorm2d(WIDTH), nn.ReLU()),
        nn.Sequential(nn.Conv2d(WIDTH, WIDTH, 3, padding=1, bias=False), nn.BatchNorm2d(WIDTH), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(WIDTH, 10),
    )
    with torch.no_grad():
        model[0][1].weight.copy_(torch.linspace(0.5, 1.5, WIDTH)[torch.randperm(WIDTH)])
    return model.eval()


def first_block(model: nn.Sequential) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return model[0][0], model[0][1]


def removed_from_first_block(model: nn.Module, criterion: object, count: int, data: list | None = None) -> set[int]:
    """The channels the criterion removes when the first block alone loses ``count`` of them."""
    plan = plan_pruning(model, torch.randn(2, 3, 8, 8), ratio={"0.0": count / WIDTH}, criterion=criterion, data=data)
    assert plan.groups[0].total == WIDTH and len(plan.groups[0].removed) == count
    return set(plan.groups[0].removed)


def test_new_criteria_are_registered_and_say_what_they_need() -> None:
    assert {"l2", "random", "kmeans", "activation"} <= set(CRITERIA)
    assert [name for name in CRITERIA if get_criterion(name).needs_data] == ["activation"]
    assert isinstance(get_criterion("kmeans"), KMeansImportance) and get_criterion("kmeans").needs_sparse_bn
    assert get_criterion("random").seed == 0 and "control" in RandomImportance.__doc__


def test_l2_ranks_zero_filters_lowest() -> None:
    model = small_net()
    with torch.no_grad():
        first_block(model)[0].weight[list(PLANTED)] = 0
    assert removed_from_first_block(model, "l2", len(PLANTED)) == set(PLANTED)


def test_kmeans_ranks_zero_filters_with_zero_gamma_lowest() -> None:
    model = small_net()
    conv, bn = first_block(model)
    with torch.no_grad():
        conv.weight[list(PLANTED)] = 0
        bn.weight[list(PLANTED)] = 0
    assert removed_from_first_block(model, "kmeans", len(PLANTED)) == set(PLANTED)


def test_kmeans_ranks_redundant_copies_in_one_cluster_lowest() -> None:
    model = small_net()
    conv, bn = first_block(model)
    with torch.no_grad():
        conv.weight[[5, 11]] = conv.weight[2].clone()
        bn.weight.fill_(1.0)  # gammas say nothing: the weights alone decide
    assert removed_from_first_block(model, "kmeans", 2) == {5, 11}  # filter 2 stays as the subspace's representative


def test_kmeans_cuts_a_channel_only_when_weights_and_gamma_agree() -> None:
    model = small_net()
    conv, bn = first_block(model)
    with torch.no_grad():
        conv.weight[[3, 12]] = 0  # weak by weight
        bn.weight[[7, 12]] = 0  # weak by gamma
    assert removed_from_first_block(model, "kmeans", 1) == {12}
    assert removed_from_first_block(model, "l2", 2) == {3, 12}  # a weights-only criterion takes channel 3 too


def test_activation_ranks_dead_channels_lowest() -> None:
    model = small_net()
    with torch.no_grad():
        first_block(model)[1].bias[list(PLANTED)] = -100.0  # always negative before the ReLU: the channel never fires
    batches = [torch.randn(4, 3, 8, 8) for _ in range(3)]
    assert removed_from_first_block(model, "activation", len(PLANTED), data=batches) == set(PLANTED)
    pairs = [(batch, torch.zeros(4)) for batch in batches]  # (inputs, targets), as a DataLoader yields
    assert removed_from_first_block(model, "activation", len(PLANTED), data=pairs) == set(PLANTED)
    assert removed_from_first_block(model, "l2", len(PLANTED)) != set(PLANTED)  # the weights do not show it


def test_activation_is_prepared_on_a_copy_and_leaves_no_hooks() -> None:
    model = small_net().train()
    registered = get_criterion("activation")
    prepared = registered.prepare(model, [torch.randn(2, 3, 8, 8)])
    assert prepared is not registered and registered.input_means is None and set(prepared.input_means) == {"0.0", "1.0", "4"}
    assert all(not module._forward_pre_hooks for module in model.modules())
    assert all(module.training for module in model.modules())  # eval mode only while measuring
    group = analyze(model, torch.randn(2, 3, 8, 8)).prunable_groups[0]
    with pytest.raises(EdgeCompressError, match=r"criterion 'activation' needs data: pass data="):
        registered.score(group, dict(model.named_modules()))
    with pytest.raises(EdgeCompressError, match="got no batches"):
        ActivationImportance().prepare(model, [])


def test_a_data_criterion_without_data_is_refused_before_any_work() -> None:
    model, x = small_net(), torch.randn(2, 3, 8, 8)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    for call in (plan_pruning, edgecompress.prune):
        with pytest.raises(EdgeCompressError, match=r"^criterion 'activation' measures the model on data: pass data=\[a few batches"):
            call(model, x, ratio=0.3, criterion="activation")
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def test_random_is_reproducible_under_a_seed_and_differs_between_seeds() -> None:
    model, x = build("resnet"), example_input("resnet")
    cuts = {seed: plan_pruning(model, x, ratio=0.4, criterion=RandomImportance(seed)).cuts for seed in (0, 0, 1)}
    assert plan_pruning(model, x, ratio=0.4, criterion=RandomImportance(seed=0)).cuts == cuts[0]
    assert plan_pruning(model, x, ratio=0.4, criterion="random").cuts == cuts[0]  # the registered control is seed 0
    assert cuts[1] != cuts[0]


@pytest.mark.parametrize("name", ["resnet", "c2f", "mobilenetv2"])
@pytest.mark.parametrize("criterion", ["l2", "random", "kmeans"])
def test_pruning_with_a_new_criterion_keeps_the_model_runnable(name: str, criterion: str) -> None:
    model, x = build(name), example_input(name)
    shapes = [tensor.shape for tensor in outputs(model, x)]
    parameters = sum(p.numel() for p in model.parameters())
    edgecompress.prune(model, x, ratio=0.4, criterion=criterion)
    assert [tensor.shape for tensor in outputs(model, x)] == shapes
    assert sum(p.numel() for p in model.parameters()) < parameters


@pytest.mark.parametrize("name", ["resnet", "c2f", "mobilenetv2"])
def test_pruning_by_activation_on_data_keeps_the_model_runnable(name: str) -> None:
    model, x = build(name), example_input(name)
    shapes = [tensor.shape for tensor in outputs(model, x)]
    plan = plan_pruning(model, x, ratio=0.4, criterion="activation", data=[example_input(name, seed) for seed in (2, 3)])
    apply_plan(model, plan)
    assert plan.criterion == "activation" and plan.channels_removed > 0
    assert [tensor.shape for tensor in outputs(model, x)] == shapes
