"""Submodules torch.fx cannot trace are analysed on their torch.export graph, so their channels stay prunable."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import Tensor, nn

from edgecompress.export import export_onnx
from edgecompress.graph import ChannelGraph, Role, analyze
from edgecompress.prune import apply_plan, plan_pruning

X = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))


class ShapeGatedBlock(nn.Module):
    """Residual bottleneck behind a Python test on the channel count (fx cannot branch on a proxy)."""

    def __init__(self, channels: int = 16, hidden: int = 24):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden)
        self.conv2, self.bn2 = nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] > 8:
            return x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return x


class RankGatedBlock(ShapeGatedBlock):
    """Branches on the rank only, so no channel count is read and the residual stays prunable."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            return x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return x


class LoopBlock(ShapeGatedBlock):
    """The same bottleneck, repeated by a Python loop over a size (fx cannot iterate a proxy)."""

    def forward(self, x: Tensor) -> Tensor:
        for _ in range(x.size(0)):
            x = x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return x


class ValueGatedBlock(ShapeGatedBlock):
    """Control flow on tensor values: neither torch.fx nor torch.export can trace it."""

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn1(self.conv1(x))
        return x + self.bn2(self.conv2(y if y.sum() > 0 else -y))


class HiddenWidthBlock(ShapeGatedBlock):
    """Reads the channel count of an inner tensor: pruning could flip the branch, so the block stays opaque."""

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return x + self.bn2(self.conv2(y if y.shape[1] > 8 else -y))


class FlippedBlock(ShapeGatedBlock):
    """Exportable, but flips the channel order: no aten rule, so the whole block must stay opaque."""

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] > 8:
            return x + self.bn2(self.conv2(torch.flip(self.bn1(self.conv1(x)), [1])))
        return x


class Net(nn.Module):
    def __init__(self, block: type[nn.Module]):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block = block()
        self.head = nn.Conv2d(16, 5, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.block(self.stem(x)))


def build(block: type[nn.Module]) -> Net:
    torch.manual_seed(0)
    model = Net(block)
    with torch.no_grad():  # random BN statistics, so every channel matters
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def members(graph: ChannelGraph, module: str, role: Role) -> tuple:
    found = [g for g in graph.groups if any(m.module == module and m.role == role for m in g.members)]
    assert len(found) == 1
    return found[0], {(m.module, m.role) for m in found[0].members}


@pytest.mark.parametrize("block", [ShapeGatedBlock, RankGatedBlock, LoopBlock])
def test_untraceable_block_is_grouped_through_its_exported_graph(block: type[nn.Module]) -> None:
    graph = analyze(build(block), X)
    assert graph.notes == ()
    inner, inner_members = members(graph, "block.conv1", Role.CONV_OUT)
    assert inner.prunable and inner.size == 24
    assert inner_members == {("block.conv1", Role.CONV_OUT), ("block.bn1", Role.BN), ("block.conv2", Role.CONV_IN)}
    residual, residual_members = members(graph, "stem.0", Role.CONV_OUT)
    assert {("block.conv1", Role.CONV_IN), ("block.conv2", Role.CONV_OUT), ("head", Role.CONV_IN)} <= residual_members
    assert graph.layer_macs["block.conv1"] == 16 * 24 * 9 * 144


def test_channel_counts_the_forward_reads_are_kept() -> None:
    """``if x.shape[1] > 8`` would flip if the block's input lost channels: they are kept, the hidden ones not."""
    blocked = members(analyze(build(ShapeGatedBlock), X), "stem.0", Role.CONV_OUT)[0]
    assert blocked.blocked_reason == "the forward of 'block' reads the channel count of its input 0"
    assert members(analyze(build(RankGatedBlock), X), "stem.0", Role.CONV_OUT)[0].prunable


def test_the_fallback_frees_what_the_opaque_block_kept() -> None:
    kept = analyze(build(ShapeGatedBlock), X, ignore=["block"])
    assert not members(kept, "stem.0", Role.CONV_OUT)[0].prunable
    assert all(m.module.startswith(("stem", "head")) for g in kept.groups for m in g.members)


@pytest.mark.parametrize("ratio", [0.3, 0.6])
@pytest.mark.parametrize("block", [ShapeGatedBlock, RankGatedBlock])
def test_pruned_block_runs_exports_and_matches_in_onnxruntime(block: type[nn.Module], ratio: float, tmp_path) -> None:
    model = build(block)
    plan = plan_pruning(model, X, ratio=ratio)
    apply_plan(model, plan)
    assert model.block.conv1.out_channels < 24 and model.block.bn1.num_features == model.block.conv1.out_channels
    assert model.block.conv2.out_channels == model.stem[0].out_channels  # the residual stays consistent
    assert (model.stem[0].out_channels < 16) == (block is RankGatedBlock)  # x.shape[1] is read: the residual is kept
    fresh = torch.randn(3, *X.shape[1:], generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = model(fresh)
    assert want.shape == (3, 5, 12, 12)
    session = ort.InferenceSession(str(export_onnx(model, X, tmp_path / "net.onnx")), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: fresh.numpy()})
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("block", [ShapeGatedBlock, RankGatedBlock])
def test_cutting_silenced_channels_inside_the_block_is_lossless(block: type[nn.Module]) -> None:
    model = build(block)
    plan = plan_pruning(model, X, ratio=0.5)
    groups = {group.id: group for group in analyze(model, X).groups}
    with torch.no_grad():
        for group_plan in plan.groups:
            for member in groups[group_plan.group_id].members_with(Role.BN):
                layer = model.get_submodule(member.module)
                index = member.select(group_plan.removed)
                layer.weight[index], layer.bias[index] = 0, 0
    fresh = torch.randn(4, *X.shape[1:], generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        want = model(fresh)
        apply_plan(model, plan)
        got = model(fresh)
    assert any(cut.module.startswith("block.") for cut in plan.cuts)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("block", "why"),
    [
        (ValueGatedBlock, "and torch.export cannot analyse it ("),
        (HiddenWidthBlock, "reads the channel count of an intermediate tensor"),
        (FlippedBlock, "no channel rule for aten.flip"),
    ],
)
def test_blocks_the_fallback_cannot_analyse_stay_opaque_with_a_note(block: type[nn.Module], why: str) -> None:
    graph = analyze(build(block), X)
    assert len(graph.notes) == 1 and "torch.fx cannot trace 'block'" in graph.notes[0] and why in graph.notes[0]
    assert graph.notes[0].endswith("so it is kept whole")
    assert not members(graph, "stem.0", Role.CONV_OUT)[0].prunable
    assert not any(m.module.startswith("block.") for g in graph.groups for m in g.members)


class ChunkBlock(nn.Module):
    """Halves of a conv's output, swapped and returned with one half: equal chunks tie channel i of each half."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(16, 24, 1), nn.Conv2d(24, 16, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() != 4:
            raise ValueError("expected NCHW")
        a, b = self.conv1(x).chunk(2, 1)
        return x + self.conv2(torch.cat([b.relu(), a], 1)), a


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.block = nn.Conv2d(3, 16, 3, padding=1), ChunkBlock()
        self.head, self.side = nn.Conv2d(16, 5, 1), nn.Conv2d(12, 5, 1)

    def forward(self, x: Tensor) -> Tensor:
        y, a = self.block(self.stem(x))
        return self.head(y) + self.side(a)


def test_chunks_and_tuple_outputs_of_an_exported_block() -> None:
    model = TwoHeads().eval()
    graph = analyze(model, X)
    halves, found = members(graph, "block.conv1", Role.CONV_OUT)
    assert halves.prunable and halves.size == 12
    assert found == {("block.conv1", Role.CONV_OUT), ("block.conv2", Role.CONV_IN), ("side", Role.CONV_IN)}
    assert next(m for m in halves.members if m.role == Role.CONV_OUT).indices[0] == (0, 12)
    apply_plan(model, plan_pruning(model, X, ratio=0.5))
    assert model.block.conv1.out_channels == 2 * model.side.in_channels < 24
    assert model(torch.randn(2, 3, 12, 12)).shape == (2, 5, 12, 12)
