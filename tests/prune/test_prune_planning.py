"""Planning goals: MACs and parameter targets, per-layer ratios, the fpgm criterion, layer pruning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import edgecompress
from edgecompress.errors import EdgeCompressError
from edgecompress.graph import analyze
from edgecompress.prune import apply_plan, plan_pruning, prune, prune_layers, residual_blocks
from edgecompress.prune.budget import max_removable_fraction
from edgecompress.stats import model_stats

from .prune_zoo import build, example_input, outputs


@pytest.mark.parametrize(("name", "goal"), [("c2f", "target_macs"), ("resnext", "target_params"), ("mobilenetv2", "target_macs")])
def test_target_removes_about_the_requested_fraction(name: str, goal: str) -> None:
    model, x = build(name), example_input(name)
    before = model_stats(model, x)
    plan = plan_pruning(model, x, **{goal: 0.4})
    apply_plan(model, plan)
    after = model_stats(model, x)
    metric = "macs" if goal == "target_macs" else "params"
    removed = 1 - getattr(after, metric) / getattr(before, metric)
    assert 0.4 <= removed < 0.55 and plan.summary()[goal] == 0.4 and 0 < plan.ratio < 1


class _SpatialAttention(nn.Module):
    """Attention over positions: matmuls whose MACs no channel cut changes (the analysis keeps it whole, when ignored)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2)
        weights = torch.softmax(tokens.transpose(1, 2) @ tokens / c**0.5, dim=-1)
        return (tokens @ weights.transpose(1, 2)).view(b, c, h, w)


def _conv_bn_relu(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU())


def test_a_macs_target_counts_the_macs_no_cut_changes() -> None:
    """Half the model's MACs as model_stats counts them, attention matmuls included (46% of them here); counting the
    convs alone removed 27% of the whole for target_macs=0.5. The reachable fraction is of the whole too."""
    torch.manual_seed(0)
    model = nn.Sequential(_conv_bn_relu(3, 32), _conv_bn_relu(32, 32), _SpatialAttention(), _conv_bn_relu(32, 32), nn.Conv2d(32, 4, 1)).eval()
    x = torch.randn(1, 3, 16, 16)
    before = model_stats(model, x).macs
    fixed = before - sum(analyze(model, x, ignore=["2"]).layer_macs.values())
    assert 0.4 < fixed / before < 0.5
    assert max_removable_fraction(model, x, ignore=["2"]) < 1 - fixed / before
    with pytest.raises(EdgeCompressError, match="out of reach"):
        prune(model, x, target_macs=0.6, ignore=["2"])
    prune(model, x, target_macs=0.5, ignore=["2"])
    assert 0.45 <= model_stats(model, x).macs / before <= 0.5


def test_top_level_prune_takes_exactly_one_goal() -> None:
    model, x = build("resnet"), example_input("resnet")
    before = model_stats(model, x).macs
    assert edgecompress.prune(model, x, target_macs=0.5, round_to=2) is model
    assert model_stats(model, x).macs <= 0.5 * before
    for goals in ({}, {"ratio": 0.3, "target_macs": 0.3}):
        with pytest.raises(EdgeCompressError, match="exactly one of ratio, target_macs, target_params"):
            prune(build("resnet"), x, **goals)
    with pytest.raises(EdgeCompressError, match="target_macs is the fraction to remove"):
        prune(build("resnet"), x, target_macs=1.5)
    with pytest.raises(EdgeCompressError, match="out of reach"):
        prune(build("resnet"), x, target_macs=0.8, min_channels=16)


def test_per_layer_ratios_by_module_prefix_or_callable() -> None:
    model, x = build("resnet"), example_input("resnet")
    plan = plan_pruning(model, x, ratio={"layer2": 0.5, "layer2.conv1": 0.25})
    apply_plan(model, plan)
    assert (model.layer1.conv1.out_channels, model.layer2.conv1.out_channels, model.layer3.conv1.out_channels) == (16, 24, 32)
    assert model.layer2.conv2.out_channels == 16  # the residual stream of layer2/layer3 is produced in layer2
    second = build("resnet")
    prune(second, x, ratio=lambda name: 0.5 if name.endswith("conv1") else None)
    assert [second.get_submodule(f"layer{i}.conv1").out_channels for i in (1, 2, 3)] == [8, 16, 16]
    with pytest.raises(EdgeCompressError, match="not modules of the model"):
        plan_pruning(build("resnet"), x, ratio={"layer9": 0.5})


def test_fpgm_removes_the_filters_nearest_the_others() -> None:
    model = nn.Sequential(nn.Conv2d(3, 6, 1, bias=False), nn.ReLU(), nn.Conv2d(6, 2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(6, 3, 1, 1, generator=torch.Generator().manual_seed(0)) * 3)
        model[0].weight[[1, 4]] = model[0].weight.mean(0)  # at the centre of the other filters
    plan = plan_pruning(model, torch.randn(1, 3, 4, 4), ratio=2 / 6, criterion="fpgm")
    assert plan.groups[0].removed == (1, 4)


def test_layer_pruning_removes_the_weakest_x_plus_f_x_blocks_losslessly() -> None:
    model, x = build("c2f"), example_input("c2f")
    blocks = {block.module: block for block in residual_blocks(model, x)}
    assert set(blocks) == {"stage1.m.0", "stage1.m.1", "stage2.m.0"}  # ResNet-style relu(x + f(x)) is not x + f(x)
    assert blocks["stage1.m.1"].batchnorm == "stage1.m.1.cv2.1" and blocks["stage1.m.1"].conv == "stage1.m.1.cv2.0"
    with torch.no_grad():
        model.stage1.m[1].cv2[1].weight.zero_()
        model.stage1.m[1].cv2[1].bias.zero_()  # the branch outputs SiLU(0) = 0
    fresh = torch.randn(3, *x.shape[1:], generator=torch.Generator().manual_seed(2))
    expected = outputs(model, fresh)
    before = model_stats(model, x)
    assert prune_layers(model, x, n=1) == ["stage1.m.1"]
    assert isinstance(model.stage1.m[1], nn.Identity) and model_stats(model, x).macs < before.macs
    torch.testing.assert_close(outputs(model, fresh)[0], expected[0], atol=1e-5, rtol=1e-5)
    assert residual_blocks(build("resnet"), example_input("resnet")) == []
    assert len(prune_layers(build("mobilenetv2"), example_input("mobilenetv2"), ratio=0.5, criterion="l1")) == 1
    with pytest.raises(EdgeCompressError, match="cannot remove 4 residual blocks"):
        prune_layers(build("c2f"), x, n=4)


def test_taylor_uses_accumulated_gradients_and_asks_for_them() -> None:
    model, x = build("resnext"), example_input("resnext")
    with pytest.raises(EdgeCompressError, match="run loss.backward"):
        plan_pruning(model, x, ratio=0.3, criterion="taylor")
    group = next(g for g in analyze(model, x).prunable_groups if any(m.module == "blocks.0.reduce.1" for m in g.members))
    silenced = next(m for m in group.members if m.module == "blocks.0.reduce.1").indices[2]  # one index per conv group
    with torch.no_grad():
        model.blocks[0].reduce[1].weight[list(silenced)] = 0
        model.blocks[0].reduce[1].bias[list(silenced)] = 0  # the channel is 0 whatever its weights: no loss change
    nn.functional.cross_entropy(model.train()(torch.randn(8, *x.shape[1:])), torch.randint(0, 10, (8,))).backward()
    plan = plan_pruning(model.eval(), x, ratio=0.3, criterion="taylor")
    assert 2 in next(g for g in plan.groups if g.group_id == group.id).removed
    apply_plan(model, plan)
    assert model(x).shape == (2, 10)
