"""Building blocks shared by the zoo: conv-BN-activation units and MobileNetV2 inverted residuals."""

from __future__ import annotations

from torch import Tensor, nn


def make_divisible(channels: float, divisor: int = 8) -> int:
    """Round a width-multiplied channel count to a multiple of ``divisor`` (as MobileNetV2 does)."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


class ConvBNAct(nn.Sequential):
    """Conv2d without bias, BatchNorm2d, then an optional ReLU6: the unit whose BN gamma pruning reads."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, linear 1x1 project, identity shortcut when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_ch * expand_ratio
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_ch, hidden, 1))
        layers += [ConvBNAct(hidden, hidden, 3, stride, groups=hidden), ConvBNAct(hidden, out_ch, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.use_shortcut = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return x + out if self.use_shortcut else out


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise conv then 1x1 pointwise conv, each with BN and ReLU6 (the patent's head unit)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__(ConvBNAct(in_ch, in_ch, 3, stride, groups=in_ch), ConvBNAct(in_ch, out_ch, 1))


# (expand ratio t, channels c, repeats n, first stride s) of MobileNetV2 (Sandler et al. 2018, table 2).
MOBILENETV2_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def mobilenetv2_stages(width: float, stem_stride: int = 2) -> tuple[nn.Module, list[nn.Sequential], list[int]]:
    """The MobileNetV2 stem and its seven stages; returns (stem, stages, output channels of each stage)."""
    stem_ch = make_divisible(32 * width)
    stem = ConvBNAct(3, stem_ch, 3, stem_stride)
    stages, channels, in_ch = [], [], stem_ch
    for t, c, n, s in MOBILENETV2_SETTINGS:
        out_ch = make_divisible(c * width)
        blocks = [InvertedResidual(in_ch if i == 0 else out_ch, out_ch, s if i == 0 else 1, t) for i in range(n)]
        stages.append(nn.Sequential(*blocks))
        channels.append(out_ch)
        in_ch = out_ch
    return stem, stages, channels
