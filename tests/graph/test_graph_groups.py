"""Channel groups found by the graph analysis on purpose-built small models."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgecompress.graph import ChannelGraph, ChannelGroup, Role, analyze

X = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def group_of(graph: ChannelGraph, module: str, role: Role) -> ChannelGroup:
    matches = [g for g in graph.groups if any(m.module == module and m.role == role for m in g.members)]
    assert len(matches) == 1, f"{module} {role} is in {len(matches)} groups"
    return matches[0]


def member(group: ChannelGroup, module: str, role: Role):
    return next(m for m in group.members if m.module == module and m.role == role)


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 6, 1)
        self.bn = nn.BatchNorm2d(10)
        self.c = nn.Conv2d(10, 5, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.c(self.bn(torch.cat([self.a(x), self.b(x)], dim=1)))


def test_concat_maps_channels_with_offsets() -> None:
    graph = analyze(Concat(), X)
    a, b = group_of(graph, "a", Role.CONV_OUT), group_of(graph, "b", Role.CONV_OUT)
    assert a.prunable and b.prunable and (a.size, b.size) == (4, 6)
    assert member(a, "c", Role.CONV_IN).indices == tuple((i,) for i in range(4))
    assert member(b, "c", Role.CONV_IN).indices == tuple((4 + i,) for i in range(6))
    assert member(b, "bn", Role.BN).select([0, 5]) == [4, 9]
    assert not group_of(graph, "c", Role.CONV_OUT).prunable  # reaches the output


class FlattenHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=4, padding=1)  # 8x8 -> 2x2
        self.fc = nn.Linear(16, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x).view(x.size(0), -1))


def test_flatten_spreads_each_channel_over_its_spatial_features() -> None:
    group = group_of(analyze(FlattenHead(), X), "conv", Role.CONV_OUT)
    assert member(group, "fc", Role.LINEAR_IN).indices == tuple(tuple(range(4 * c, 4 * c + 4)) for c in range(4))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.bn_a = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.b, self.bn_b = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.se = nn.Conv2d(8, 8, 1)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = torch.relu(self.bn_a(self.a(x)))
        y = self.dw(a + self.bn_b(self.b(a)))
        y = y * torch.sigmoid(self.se(y.mean((2, 3), keepdim=True)))
        return self.out(self.grouped(y))


def test_residual_add_depthwise_and_se_multiply_tie_channels() -> None:
    graph = analyze(Residual(), X)
    group = group_of(graph, "a", Role.CONV_OUT)
    roles = {(m.module, m.role) for m in group.members}
    assert {("b", Role.CONV_OUT), ("bn_a", Role.BN), ("bn_b", Role.BN), ("dw", Role.DEPTHWISE), ("se", Role.CONV_OUT)} <= roles
    assert {("b", Role.CONV_IN), ("se", Role.CONV_IN)} <= roles
    assert group.prunable and group.size == 4  # the grouped conv ties channel i of both its groups
    assert member(group, "grouped", Role.CONV_IN).indices == tuple((i, i + 4) for i in range(4))
    assert member(group, "bn_a", Role.BN).indices == tuple((i, i + 4) for i in range(4))
    grouped_out = group_of(graph, "grouped", Role.CONV_OUT)
    assert grouped_out.prunable and member(grouped_out, "out", Role.CONV_IN).indices == tuple((i, i + 4) for i in range(4))


def test_ignored_modules_and_outputs_keep_their_channels() -> None:
    graph = analyze(Concat(), X, ignore=["a"])
    a_readers = [g for g in graph.groups if any(m.module == "c" and m.role == Role.CONV_IN and m.indices[0] == (0,) for m in g.members)]
    assert len(a_readers) == 1 and "'a' is in ignore" in a_readers[0].blocked_reason
    assert group_of(graph, "b", Role.CONV_OUT).prunable


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 1)
        self.shared = nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Conv2d(6, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.shared(torch.relu(self.shared(self.stem(x)))))


def test_module_called_twice_shares_its_groups() -> None:
    graph = analyze(Shared(), X)
    shared_out = group_of(graph, "shared", Role.CONV_OUT)
    assert {(m.module, m.role) for m in shared_out.members} >= {("shared", Role.CONV_IN), ("head", Role.CONV_IN)}
    assert group_of(graph, "stem", Role.CONV_OUT) is shared_out


class HardCodedView(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.fc = nn.Linear(16, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x).reshape(-1, 16))


def test_view_with_a_literal_channel_size_blocks_the_channels() -> None:
    group = group_of(analyze(HardCodedView(), X), "conv", Role.CONV_OUT)
    assert not group.prunable and "hard-codes size 16" in group.blocked_reason


class Roll(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.roll(self.conv(x), 1, dims=1))


def test_unknown_channel_preserving_op_is_kept_with_a_note() -> None:
    graph = analyze(Roll(), X)
    group = group_of(graph, "conv", Role.CONV_OUT)
    assert not group.prunable and "roll" in group.blocked_reason
    assert len(graph.notes) == 1 and "roll" in graph.notes[0]


def test_analysis_keeps_training_mode_and_running_stats() -> None:
    model = Residual().train()
    model.bn_b.eval()
    stats = model.bn_a.running_mean.clone()
    analyze(model, X)
    assert model.training and model.bn_a.training and not model.bn_b.training
    assert torch.equal(model.bn_a.running_mean, stats)
