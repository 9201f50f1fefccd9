"""More zoo models (test helpers): C2f, ResNeXt/RegNet, squeeze-excitation, transposed conv + GroupNorm
+ PReLU, a LayerNorm MLP head and a Conv1d net."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def conv_bn_act(in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(out_ch), nn.SiLU()
    )


class Bottleneck(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.cv1, self.cv2 = conv_bn_act(channels, channels, 3), conv_bn_act(channels, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.cv2(self.cv1(x))


class C2f(nn.Module):
    """YOLOv8's C2f, written as Ultralytics writes it: list(chunk(2)), bottlenecks appended, one concat."""

    def __init__(self, in_ch: int, out_ch: int, n: int = 2):
        super().__init__()
        self.c = out_ch // 2
        self.cv1 = conv_bn_act(in_ch, 2 * self.c)
        self.cv2 = conv_bn_act((2 + n) * self.c, out_ch)
        self.m = nn.ModuleList(Bottleneck(self.c) for _ in range(n))

    def forward(self, x: Tensor) -> Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class C2fNet(nn.Module):
    """Stem, two C2f stages, then ``a, b = torch.chunk(...)`` feeding a gated head."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_act(3, 16, 3, 2)
        self.stage1 = C2f(16, 32)
        self.down = conv_bn_act(32, 32, 3, 2)
        self.stage2 = C2f(32, 32, n=1)
        self.out = nn.Conv2d(16 + 16 + 32, 9, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.stage2(self.down(self.stage1(self.stem(x))))
        a, b = torch.chunk(y, 2, dim=1)
        return self.out(torch.cat([a * torch.sigmoid(b), nn.functional.max_pool2d(b, 3, 1, 1), y], 1))


class ResNeXtBlock(nn.Module):
    """1x1 -> grouped 3x3 -> 1x1 bottleneck with a projection or identity shortcut."""

    def __init__(self, in_ch: int, width: int, out_ch: int, groups: int, stride: int):
        super().__init__()
        self.reduce = conv_bn_act(in_ch, width)
        self.grouped = conv_bn_act(width, width, 3, stride, groups=groups)
        self.expand = nn.Sequential(nn.Conv2d(width, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
        self.shortcut = nn.Identity() if stride == 1 and in_ch == out_ch else nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.expand(self.grouped(self.reduce(x))) + self.shortcut(x))


class ResNeXt(nn.Module):
    """RegNet/ResNeXt-style stages: group width 8 and 4, a grouped conv reading the residual stream."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_act(3, 16, 3, 2)
        self.blocks = nn.Sequential(ResNeXtBlock(16, 32, 32, 4, 2), ResNeXtBlock(32, 32, 32, 8, 1))
        self.mix = conv_bn_act(32, 32, 3, groups=2)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.mix(self.blocks(self.stem(x))).mean((2, 3)))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce, self.expand = nn.Conv2d(channels, reduced, 1), nn.Conv2d(reduced, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.expand(nn.functional.silu(self.reduce(self.pool(x)))))


class MBConvSE(nn.Module):
    """EfficientNet's MBConv: expand, depthwise, squeeze-excitation multiply, project, residual."""

    def __init__(self, channels: int, expand: int = 4):
        super().__init__()
        hidden = channels * expand
        self.expand = conv_bn_act(channels, hidden)
        self.depthwise = conv_bn_act(hidden, hidden, 3, groups=hidden)
        self.se = SqueezeExcite(hidden, channels // 2)
        self.project = nn.Sequential(nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.project(self.se(self.depthwise(self.expand(x))))


class EfficientNetSE(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn_act(3, 16, 3, 2)
        self.blocks = nn.Sequential(MBConvSE(16), MBConvSE(16))
        self.head = nn.Sequential(conv_bn_act(16, 48), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, 10))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))


class Decoder(nn.Module):
    """Encoder-decoder: GroupNorm + per-channel PReLU, a transposed conv upsampling, a skip concat."""

    def __init__(self):
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.GroupNorm(4, 16), nn.PReLU(16))
        self.enc2 = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.GroupNorm(8, 32), nn.PReLU(32))
        self.up = nn.Sequential(nn.ConvTranspose2d(32, 24, 2, 2), nn.BatchNorm2d(24), nn.PReLU())
        self.up_grouped = nn.ConvTranspose2d(24 + 16, 16, 3, 1, 1, groups=2)
        self.out = nn.Conv2d(16, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        e1 = self.enc1(x)
        return self.out(torch.relu(self.up_grouped(torch.cat([self.up(self.enc2(e1)), e1], 1))))


class LayerNormHead(nn.Module):
    """Global pooling into a Linear -> LayerNorm -> GELU -> Linear MLP head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(conv_bn_act(3, 16, 3, 2), conv_bn_act(16, 32, 3, 2))
        self.mlp = nn.Sequential(nn.Linear(32, 24), nn.LayerNorm(24), nn.GELU(), nn.Linear(24, 10))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


class Conv1dNet(nn.Module):
    """1-d signal model: Conv1d/BatchNorm1d with a residual, mean over time, Linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(3, 16, 5, 2, 2, bias=False), nn.BatchNorm1d(16), nn.ReLU())
        self.body = nn.Sequential(nn.Conv1d(16, 16, 3, 1, 1, bias=False), nn.BatchNorm1d(16))
        self.fc = nn.Linear(16, 4)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        return self.fc(torch.relu(x + self.body(x)).mean(2))
