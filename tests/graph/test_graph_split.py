"""Index mapping through chunk, split, tensor_split and slicing, and grouped layers' ties."""

from __future__ import annotations

import pytest
import torch
from .test_graph_groups import group_of, member
from torch import Tensor, nn

from edgecompress.graph import Role, analyze
from edgecompress.prune import prune

X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


class Pieces(nn.Module):
    """conv -> pieces (by ``cut``) -> a conv per piece, concatenated back in reverse order."""

    def __init__(self, cut, channels: int = 8, pieces: int = 2):
        super().__init__()
        self.cut = cut
        self.conv = nn.Conv2d(3, channels, 1)
        self.heads = nn.ModuleList(nn.Conv2d(channels // pieces, 4, 1) for _ in range(pieces))
        self.out = nn.Conv2d(channels, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        pieces = list(self.cut(y))
        merged = sum(head(piece) for head, piece in zip(self.heads, pieces))
        return merged + self.out(torch.cat(pieces[::-1], 1))


@pytest.mark.parametrize(
    "cut",
    [
        lambda y: y.chunk(2, 1),
        lambda y: torch.chunk(y, 2, dim=1),
        lambda y: y.chunk(chunks=2, dim=1),
        lambda y: torch.tensor_split(y, 2, 1),
    ],
    ids=["Tensor.chunk", "torch.chunk", "chunk-keywords", "tensor_split"],
)
def test_equal_pieces_tie_channel_i_of_every_piece(cut) -> None:
    model = Pieces(cut)
    group = group_of(analyze(model, X), "conv", Role.CONV_OUT)
    assert group.prunable and group.size == 4
    assert member(group, "conv", Role.CONV_OUT).indices == tuple((i, i + 4) for i in range(4))
    assert member(group, "heads.1", Role.CONV_IN).indices == tuple((i,) for i in range(4))
    assert member(group, "out", Role.CONV_IN).indices == tuple((i, i + 4) for i in range(4))  # reversed concat
    with torch.no_grad():
        expected_shape = model(X).shape
    prune(model, X, ratio=0.5, criterion="l1")
    assert model.conv.out_channels == 4 and model.heads[0].in_channels == model.heads[1].in_channels == 2
    assert model(X).shape == expected_shape


def test_three_chunks_unpacked_into_names() -> None:
    class Three(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.out = nn.Conv2d(3, 12, 1), nn.Conv2d(4, 2, 1)

        def forward(self, x: Tensor) -> Tensor:
            a, b, c = self.conv(x).chunk(3, dim=1)
            return self.out(a * b + c)

    group = group_of(analyze(Three(), X), "conv", Role.CONV_OUT)
    assert group.prunable and member(group, "conv", Role.CONV_OUT).indices == tuple((i, i + 4, i + 8) for i in range(4))


@pytest.mark.parametrize(
    ("cut", "channels", "reason"),
    [
        (lambda y: y.split((4, 4), 1), 8, "Tensor.split into [4, 4]"),
        (lambda y: torch.split(y, 4, dim=1), 8, "split into [4, 4]"),
        (lambda y: y.chunk(2, 1), 7, "Tensor.chunk into [4, 3]"),
        (lambda y: torch.tensor_split(y, [4], dim=1), 8, "tensor_split into [4, 4]"),
    ],
    ids=["split-sizes", "split-int", "uneven-chunk", "tensor-split-at-indices"],
)
def test_literal_or_uneven_split_sizes_keep_the_channels(cut, channels: int, reason: str) -> None:
    class Split(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.out = nn.Conv2d(3, channels, 1), nn.Conv2d(channels, 2, 1)

        def forward(self, x: Tensor) -> Tensor:
            a, b = cut(self.conv(x))
            return self.out(torch.cat([torch.relu(a), b], 1))

    graph = analyze(Split(), X)
    conv_groups = [g for g in graph.groups if any(m.module == "conv" and m.role == Role.CONV_OUT for m in g.members)]
    assert conv_groups and all(reason in g.blocked_reason and "hard-codes channel counts" in g.blocked_reason for g in conv_groups)


def test_pieces_and_slices_off_the_channel_dim_keep_every_channel_prunable() -> None:
    class Spatial(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.out = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 2, 1)

        def forward(self, x: Tensor) -> Tensor:
            top, bottom = self.conv(x).split(4, dim=2)
            return self.out(torch.cat([bottom, top], 2)[:, :, 1:, ::2])

    group = group_of(analyze(Spatial(), X), "conv", Role.CONV_OUT)
    assert group.prunable and member(group, "out", Role.CONV_IN).indices == tuple((i,) for i in range(6))


class GroupedLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 1)
        self.norm = nn.GroupNorm(6, 12)
        self.grouped = nn.Conv2d(12, 8, 3, padding=1, groups=2)
        self.multiplier = nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.out = nn.Conv2d(16, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.multiplier(self.grouped(self.norm(self.conv(x)))))


def test_group_norm_ties_whole_groups_and_grouped_convs_tie_across_groups() -> None:
    graph = analyze(GroupedLayers(), X)
    norm = group_of(graph, "norm", Role.NORM)
    # GroupNorm ties its groups of 2 channels; the grouped conv ties channel i of its two groups of 6
    assert norm.prunable and member(norm, "conv", Role.CONV_OUT).indices == ((0, 1, 6, 7), (2, 3, 8, 9), (4, 5, 10, 11))
    grouped = group_of(graph, "grouped", Role.CONV_OUT)
    assert "one input channel per group" in grouped.blocked_reason  # depthwise with a channel multiplier
    model = GroupedLayers()
    prune(model, X, ratio=0.5)
    assert (model.norm.num_groups, model.norm.num_channels, model.grouped.in_channels, model.grouped.weight.shape[1]) == (4, 8, 8, 4)


class PaddedConv(nn.Conv2d):
    """A user subclass of a registered layer: its forward wraps the conv, its channels are the conv's."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(nn.functional.pad(x, (1, 1, 1, 1)))


def test_subclasses_of_registered_layers_use_the_layer_rule() -> None:
    model = nn.Sequential(PaddedConv(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 2, 1))
    group = group_of(analyze(model, X), "0", Role.CONV_OUT)
    assert group.prunable and {m.module for m in group.members} == {"0", "1", "3"}


def test_round_to_counts_layer_channels_of_tied_groups() -> None:
    """GroupNorm pairs and the grouped conv tie 4 channels into each group channel, so round_to=4 still lets
    whole group channels go (rounding group channels to 4 would keep all 3)."""
    model = GroupedLayers()
    prune(model, X, ratio=0.5, round_to=4)
    assert model.conv.out_channels % 4 == 0 and model.conv.out_channels < 12
