"""Seed 001: the ``attention`` criterion (filter attention times |gamma|) and the ``dynamic`` strategy (soft masks
re-chosen every training epoch, then the last masks removed physically), trained for real on tiny random data."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import edgecompress
from edgecompress.errors import EdgeCompressError
from edgecompress.graph import analyze
from edgecompress.prune import (
    CRITERIA,
    STRATEGIES,
    AttentionImportance,
    DynamicStrategy,
    PruneJob,
    get_criterion,
    plan_pruning,
    summarize_passes,
)
from edgecompress.prune.strategies_dynamic import zero_filters
from edgecompress.stats import model_stats
from edgecompress.train.loop import TrainConfig, fit

from .prune_zoo import build, example_input, outputs
from .test_criteria_seeds import PLANTED, WIDTH, small_net

def test_attention_is_registered_and_reads_weights_only() -> None:
    criterion = get_criterion("attention")
    assert isinstance(criterion, AttentionImportance) and CRITERIA["attention"] is criterion
    assert not criterion.needs_data and not criterion.needs_gradients and criterion.needs_sparse_bn
    assert isinstance(STRATEGIES["dynamic"], DynamicStrategy) and STRATEGIES["dynamic"].needs_training and STRATEGIES["dynamic"].epochs == 3


def test_attention_is_the_filter_norm_share_times_gamma() -> None:
    model, x = small_net(), torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        model[0][1].weight[3] = -0.7  # |gamma| counts
    group = next(g for g in analyze(model, x).prunable_groups if any(m.module == "0.0" for m in g.members))
    scores = get_criterion("attention").score(group, dict(model.named_modules()))
    norms = model[0][0].weight.detach().flatten(1).norm(dim=1)
    assert torch.allclose(scores, WIDTH * norms / norms.sum() * model[0][1].weight.detach().abs(), rtol=1e-5)


@pytest.mark.parametrize("planted", ["zero gamma", "zero filters", "both"])
def test_attention_ranks_planted_channels_lowest(planted: str) -> None:
    model = small_net()
    conv, bn, _ = model[0]
    with torch.no_grad():
        if planted != "zero filters":
            bn.weight[list(PLANTED)] = 0
        if planted != "zero gamma":
            conv.weight[list(PLANTED)] = 0
            bn.weight[list(PLANTED)] = 1.5  # the largest gamma: only the filter can rank them low
    plan = plan_pruning(model, torch.randn(2, 3, 8, 8), ratio={"0.0": len(PLANTED) / WIDTH}, criterion="attention")
    assert plan.groups[0].total == WIDTH and set(plan.groups[0].removed) == set(PLANTED)


def test_attention_without_batchnorm_ranks_zero_filters_lowest() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 10))
    with torch.no_grad():
        model[1].weight[list(PLANTED)] = 0
    plan = plan_pruning(model, torch.randn(2, 3, 4, 4), ratio={"1": len(PLANTED) / WIDTH}, criterion="attention")
    assert set(plan.groups[0].removed) == set(PLANTED)


def classification_trainer(x: torch.Tensor, snapshots: list[nn.Module] | None = None, lr: float = 1e-2):
    """A real training callback: AdamW on cross-entropy over 16 fixed random images of ``x``'s size; keeps a copy of
    the model after every call in ``snapshots``."""
    generator = torch.Generator().manual_seed(5)
    images = torch.randn(16, *x.shape[1:], generator=generator)
    labels = torch.randint(0, 10, (16,), generator=generator)
    loader = [(images[:8], labels[:8]), (images[8:], labels[8:])]

    def train(model: nn.Module, epochs: int) -> None:
        fit(model, loader, nn.functional.cross_entropy, TrainConfig(epochs, lr=lr, warmup_steps=0), description="test training")
        if snapshots is not None:
            snapshots.append(copy.deepcopy(model))

    return train


def prunable_channels(model: nn.Module, x: torch.Tensor) -> int:
    return sum(group.size for group in analyze(model, x).prunable_groups)


def test_dynamic_meets_a_ratio_and_records_every_epoch() -> None:
    model, x = build("resnet"), example_input("resnet")
    total = prunable_channels(model, x)
    job = PruneJob(x, ratio=0.3, criterion="attention", train=classification_trainer(x))
    passes = DynamicStrategy(epochs=3).prune(model, job)
    assert [p.epoch for p in passes] == [1, 2, 3] and passes[0].revived == 0 and passes[0].newly_masked == passes[0].channels_removed
    removed = total - prunable_channels(model, x)
    assert removed == passes[-1].channels_removed and int(0.3 * total) - 4 <= removed <= int(0.3 * total)
    summary = summarize_passes(passes, job)
    assert summary["channels_removed"] == removed and [p["epoch"] for p in summary["passes"]] == [1, 2, 3]
    for before, after, recorded in zip(passes, passes[1:], summary["passes"][1:]):
        masked_before = {(g.group_id, c) for g in before.groups for c in g.removed}
        masked_after = {(g.group_id, c) for g in after.groups for c in g.removed}
        assert recorded["revived"] == len(masked_before - masked_after) and recorded["newly_masked"] == len(masked_after - masked_before)


def test_dynamic_meets_a_macs_target_through_the_public_api() -> None:
    model, x = build("resnet"), example_input("resnet")
    before = model_stats(model, x).macs
    pruned = edgecompress.prune(model, x, target_macs=0.4, criterion="attention", strategy="dynamic", train=classification_trainer(x))
    assert pruned is model
    assert 1 - model_stats(model, x).macs / before >= 0.4


def silenced(model: nn.Module, plan) -> nn.Module:
    """A copy of ``model`` with the channels ``plan`` removes silenced: their conv filters, BN gammas and shifts zeroed."""
    model = copy.deepcopy(model)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for cut in plan.cuts:
            layer = modules[cut.module]
            if cut.dim == "out" and isinstance(layer, (nn.Conv2d, nn.BatchNorm2d)):
                layer.weight[list(cut.removed)] = 0
                if layer.bias is not None:
                    layer.bias[list(cut.removed)] = 0
    return model


def test_dynamic_removal_computes_what_the_masked_model_computes() -> None:
    model, x = build("resnet"), example_input("resnet")
    snapshots: list[nn.Module] = []
    job = PruneJob(x, ratio=0.4, criterion="attention", train=classification_trainer(x, snapshots))
    passes = DynamicStrategy(epochs=2).prune(model, job)
    masked = silenced(snapshots[-1], passes[-1]).eval()  # the model the last plan was made on, its last masks silenced
    fresh = torch.randn(4, *x.shape[1:], generator=torch.Generator().manual_seed(11))
    assert passes[-1].channels_removed > 0 and not torch.equal(outputs(masked, fresh)[0], outputs(snapshots[-1].eval(), fresh)[0])
    torch.testing.assert_close(outputs(model.eval(), fresh), outputs(masked, fresh), atol=1e-5, rtol=1e-5)


def test_masked_channel_comes_back_when_training_needs_it() -> None:
    """A student of a teacher that needs channel 2 and ignores channel 7: channel 2 starts with the smallest gamma and
    is masked first; distillation with an L1 penalty on gamma brings it back and masks channel 7 instead."""
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(8, 1))
    with torch.no_grad():
        teacher[1].weight.fill_(1.0)
        teacher[1].bias.fill_(0.2)  # positive: a zeroed filter's channel still passes gradient through the ReLU
        teacher[5].weight.copy_(torch.linspace(0.5, 1.0, 8)[None])
        teacher[5].weight[0, 2], teacher[5].weight[0, 7] = 2.0, 0.0
    images = torch.randn(128, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        loader = [(batch, teacher.eval()(batch)) for batch in images.split(16)]
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student[1].weight[2], student[1].weight[7] = 0.05, 0.4

    def distil(model: nn.Module, epochs: int) -> None:
        config = TrainConfig(epochs, lr=0.05, warmup_steps=0, sparsity_lambda=1e-3)
        fit(model, loader, nn.functional.mse_loss, config, sparse_batchnorms=[model[1]], description="distillation")

    passes = DynamicStrategy(epochs=4).prune(student, PruneJob(torch.randn(2, 3, 6, 6), ratio=1 / 8, criterion="attention", train=distil))
    masks = [p.groups[0].removed for p in passes]
    assert masks[0] == (2,) and masks[-1] == (7,)
    assert [p.revived for p in passes] == [len(set(before) - set(after)) for before, after in zip([()] + masks, masks)]
    assert sum(p.revived for p in passes) >= 1 and student[1].num_features == 7


@pytest.mark.parametrize("name", ["mobilenetv2", "decoder"])
def test_zero_filters_silences_the_masked_filters_only(name: str) -> None:
    """Depthwise, grouped and transposed convs: the masked channels' conv outputs are exactly 0; norm layers stay."""
    model, x = build(name), example_input(name)
    modules = dict(model.named_modules())
    plan = plan_pruning(model, x, ratio=0.3)
    norm_layers = {name: copy.deepcopy(m) for name, m in modules.items() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.PReLU))}
    zero_filters(model, plan)
    filter_cuts = [cut for cut in plan.cuts if cut.dim == "out" and isinstance(modules[cut.module], nn.modules.conv._ConvNd)]
    masked_outputs = {}

    def record(cut):
        return lambda layer, inputs, output: masked_outputs.update({cut.module: output[:, list(cut.removed)]})

    hooks = [modules[cut.module].register_forward_hook(record(cut)) for cut in filter_cuts]
    outputs(model, torch.randn(x.shape))
    for hook in hooks:
        hook.remove()
    assert filter_cuts and all(torch.count_nonzero(masked_outputs[cut.module]) == 0 for cut in filter_cuts)
    for name, before in norm_layers.items():
        assert all(torch.equal(a, b) for a, b in zip(before.parameters(), modules[name].parameters()))


def test_dynamic_refuses_bad_settings() -> None:
    with pytest.raises(EdgeCompressError, match="at least one epoch"):
        DynamicStrategy(epochs=0)
    x = example_input("resnet")
    with pytest.raises(EdgeCompressError, match="train=lambda model, epochs"):
        DynamicStrategy().prune(build("resnet"), PruneJob(x, ratio=0.3))
    with pytest.raises(EdgeCompressError, match="train=lambda model, epochs"):
        edgecompress.prune(build("resnet"), x, ratio=0.3, strategy="dynamic")
