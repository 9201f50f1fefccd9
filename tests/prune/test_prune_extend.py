"""A user layer type becomes prunable by registering one channel rule and one surgery function."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgecompress.graph import AnalysisContext, Role, register_module_rule
from edgecompress.graph.index_mapping import Layout
from edgecompress.prune import prune, register_surgery


class ChannelScale(nn.Module):
    """A learned per-channel scale (not a torch.nn layer, so the built-in rules do not know it)."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, channels))

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.channels:  # would not trace if fx traced into this module
            raise ValueError("wrong channel count")
        return x * self.scale.view(1, -1, 1, 1)


@register_module_rule(ChannelScale)
def channel_scale_rule(ctx: AnalysisContext, node) -> Layout:
    layout = ctx.channels(node.args[0])
    ctx.add_members(layout, str(node.target), Role.CHANNELWISE)
    return layout


@register_surgery(ChannelScale, {"out": "channels"})
def cut_channel_scale(module: ChannelScale, keep: dict[str, Tensor]) -> None:
    module.scale = nn.Parameter(module.scale.detach()[keep["out"]].clone())
    module.channels = len(keep["out"])


def test_registered_layer_is_traced_as_a_leaf_and_cut() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), ChannelScale(16), nn.ReLU(), nn.Conv2d(16, 4, 1)).eval()
    x = torch.randn(2, 3, 8, 8)
    prune(model, x, ratio=0.5, criterion="l1")
    assert model[0].out_channels == model[1].channels == model[1].scale.numel() == model[3].in_channels == 8
    assert model(x).shape == (2, 4, 8, 8)
