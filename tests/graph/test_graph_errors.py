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


def test_untraceable_submodule_is_named_and_can_be_ignored() -> None:
    with pytest.raises(EdgeCompressError, match=r"module 'branch'.*ignore=\['branch'\]"):
        analyze(Wrapper(), X)
    graph = analyze(Wrapper(), X, ignore=["branch"])
    stem = [g for g in graph.groups if any(m.module == "stem" and m.role == Role.CONV_OUT for m in g.members)]
    assert len(stem) == 1 and "'branch' is in ignore" in stem[0].blocked_reason


class ChannelSlice(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Conv2d(3, 8, 1))
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.inner(x)[:, :4])


def test_unknown_op_on_prunable_channels_raises_with_a_suggestion() -> None:
    with pytest.raises(EdgeCompressError, match=r"getitem .*the model's forward.*ignore=\['inner.0'\]"):
        analyze(ChannelSlice(), X)
    graph = analyze(ChannelSlice(), X, ignore=["inner.0"])
    assert not graph.prunable_groups


def test_bad_ignore_names_and_inputs_are_rejected() -> None:
    with pytest.raises(EdgeCompressError, match="not modules of the model"):
        analyze(Wrapper(), X, ignore=["nope"])
    with pytest.raises(EdgeCompressError, match="batched tensor"):
        analyze(Wrapper(), [X])
    with pytest.raises(EdgeCompressError, match="example input of shape"):
        analyze(ChannelSlice(), torch.randn(1, 5, 8, 8))
