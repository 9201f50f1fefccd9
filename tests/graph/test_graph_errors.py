"""The analysis refuses what it cannot handle, with a message naming the module to fix or ignore."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from edgecompress.errors import EdgeCompressError
from edgecompress.graph import Role, analyze

X = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return y if y.sum() > 0 else -y


class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 3, 1)
        self.branch = DataDependent()
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.branch(self.stem(x)))


def test_untraceable_root_forward_is_reported() -> None:
    with pytest.raises(EdgeCompressError, match="cannot trace the model's forward"):
        analyze(DataDependent(), X)


def stem_group(graph):
    stem = [g for g in graph.groups if any(m.module == "stem" and m.role == Role.CONV_OUT for m in g.members)]
    assert len(stem) == 1
    return stem[0]


def test_untraceable_submodule_is_kept_whole_with_a_note() -> None:
    graph = analyze(Wrapper(), X)
    assert "cannot trace 'branch'" in stem_group(graph).blocked_reason
    assert len(graph.notes) == 1 and "'branch'" in graph.notes[0] and "kept whole" in graph.notes[0]
    head = [g for g in graph.groups if any(m.module == "head" and m.role == Role.CONV_IN for m in g.members)]
    assert len(head) == 1 and not head[0].prunable  # what the opaque module writes is kept too
    assert "'branch' is in ignore" in stem_group(analyze(Wrapper(), X, ignore=["branch"])).blocked_reason


class Gate(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x if x.mean() > 0 else -x


def test_every_untraceable_submodule_falls_back_and_the_rest_stays_prunable() -> None:
    model = nn.Sequential(nn.Conv2d(3, 6, 1), nn.Sequential(nn.Conv2d(6, 3, 1), DataDependent()), Gate(), nn.Conv2d(4, 2, 1))
    graph = analyze(model, X)
    assert [note.split(" (")[0] for note in graph.notes] == ["torch.fx cannot trace '1.1'", "torch.fx cannot trace '2'"]
    assert [{(m.module, m.role) for m in g.members} for g in graph.prunable_groups] == [{("0", Role.CONV_OUT), ("1.0", Role.CONV_IN)}]


class ChannelSlice(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Conv2d(3, 8, 1))
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.inner(x)[:, :4])


class Repeat(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Conv2d(3, 4, 1))
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.inner(x).repeat(1, 2, 1, 1))


def test_unknown_op_on_prunable_channels_raises_with_a_suggestion() -> None:
    with pytest.raises(EdgeCompressError, match=r"Tensor.repeat .*the model's forward.*ignore=\['inner.0'\]"):
        analyze(Repeat(), X)
    graph = analyze(Repeat(), X, ignore=["inner.0"])
    assert not graph.prunable_groups


def test_literal_channel_slice_keeps_the_sliced_tensor() -> None:
    graph = analyze(ChannelSlice(), X)
    inner = [g for g in graph.groups if any(m.module == "inner.0" and m.role == Role.CONV_OUT for m in g.members)]
    assert not graph.prunable_groups and inner
    assert all("slice [:, None:4] in the model's forward hard-codes channel indices" == g.blocked_reason for g in inner)


def test_bad_ignore_names_and_inputs_are_rejected() -> None:
    with pytest.raises(EdgeCompressError, match="not modules of the model"):
        analyze(Wrapper(), X, ignore=["nope"])
    with pytest.raises(EdgeCompressError, match="batched tensor"):
        analyze(Wrapper(), [X])
    with pytest.raises(EdgeCompressError, match="example input of shape"):
        analyze(ChannelSlice(), torch.randn(1, 5, 8, 8))
