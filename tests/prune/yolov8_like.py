"""A YOLOv8-style detector with about 200 convs (test helper for the speed check): C2f stages, SPPF,
a PAN neck with upsample + concat, and the decoupled Detect head."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .zoo_blocks import C2f, conv_bn_act


class SPPF(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.cv1, self.cv2 = conv_bn_act(in_ch, in_ch // 2), conv_bn_act(in_ch * 2, out_ch)
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x: Tensor) -> Tensor:
        y = [self.cv1(x)]
        y.extend(self.pool(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class Detect(nn.Module):
    """Per level: a box branch (4 x 16 DFL bins) and a class branch, concatenated."""

    def __init__(self, channels: tuple[int, ...], classes: int = 80):
        super().__init__()
        box, cls = max(16, channels[0] // 4, 64), max(channels[0], min(classes, 100))
        self.box = nn.ModuleList(nn.Sequential(conv_bn_act(c, box, 3), conv_bn_act(box, box, 3), nn.Conv2d(box, 64, 1)) for c in channels)
        self.cls = nn.ModuleList(nn.Sequential(conv_bn_act(c, cls, 3), conv_bn_act(cls, cls, 3), nn.Conv2d(cls, classes, 1)) for c in channels)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        return [torch.cat([box(x), cls(x)], 1) for x, box, cls in zip(features, self.box, self.cls)]


class YOLOv8Like(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256, 512), depths: tuple[int, ...] = (8, 12, 12, 8), neck_depth: int = 10):
        super().__init__()
        w0, w1, w2, w3, w4 = widths
        self.stem = nn.Sequential(conv_bn_act(3, w0, 3, 2), conv_bn_act(w0, w1, 3, 2), C2f(w1, w1, depths[0]))
        self.p3 = nn.Sequential(conv_bn_act(w1, w2, 3, 2), C2f(w2, w2, depths[1]))
        self.p4 = nn.Sequential(conv_bn_act(w2, w3, 3, 2), C2f(w3, w3, depths[2]))
        self.p5 = nn.Sequential(conv_bn_act(w3, w4, 3, 2), C2f(w4, w4, depths[3]), SPPF(w4, w4))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.top4, self.top3 = C2f(w4 + w3, w3, neck_depth), C2f(w3 + w2, w2, neck_depth)
        self.down3, self.bottom4 = conv_bn_act(w2, w2, 3, 2), C2f(w2 + w3, w3, neck_depth)
        self.down4, self.bottom5 = conv_bn_act(w3, w3, 3, 2), C2f(w3 + w4, w4, neck_depth)
        self.detect = Detect((w2, w3, w4))

    def forward(self, x: Tensor) -> list[Tensor]:
        c3 = self.p3(self.stem(x))
        c4 = self.p4(c3)
        c5 = self.p5(c4)
        t4 = self.top4(torch.cat([self.up(c5), c4], 1))
        n3 = self.top3(torch.cat([self.up(t4), c3], 1))
        n4 = self.bottom4(torch.cat([self.down3(n3), t4], 1))
        n5 = self.bottom5(torch.cat([self.down4(n4), c5], 1))
        return self.detect([n3, n4, n5])
