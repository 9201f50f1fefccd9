"""A YOLOv8-style anchor-free detector, written from the published architecture (CSPDarknet with C2f
blocks, SPPF, PAN neck, decoupled head), for the pruning engine and its benchmarks.

``forward`` returns one raw map per stride 8/16/32, shape [B, 4 * reg_max + classes, H/s, W/s]: the
box branch's distribution-focal logits (4 sides x ``reg_max`` bins) then the class logits. Decoding
(DFL expectation, anchor points) runs outside the network, so it traces with torch.fx and exports
to ONNX unchanged. The C2f block splits its input with ``Tensor.chunk(2, 1)``, as the reference does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import EdgeCompressError
from .blocks import make_divisible

STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class Scale:
    """Width and depth multiples of a model size and the cap on channels before widening."""

    width: float
    depth: float
    max_channels: int


SCALES = {
    "n": Scale(0.25, 0.33, 1024),
    "s": Scale(0.50, 0.33, 1024),
}


class ConvBNSiLU(nn.Sequential):
    """Conv2d without bias, BatchNorm2d, SiLU (the 'Conv' unit of YOLOv5/v8)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False),
            nn.BatchNorm2d(out_ch, eps=1e-3, momentum=0.03),
            nn.SiLU(inplace=True),
        )


class Bottleneck(nn.Module):
    """Two 3x3 convs, with an identity shortcut when asked for and shapes match."""

    def __init__(self, channels: int, shortcut: bool):
        super().__init__()
        self.cv1 = ConvBNSiLU(channels, channels, 3)
        self.cv2 = ConvBNSiLU(channels, channels, 3)
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        out = self.cv2(self.cv1(x))
        return x + out if self.shortcut else out


class C2f(nn.Module):
    """CSP block with two convs: 1x1 conv, chunk into halves, bottlenecks chained on the second half,
    every intermediate map concatenated, 1x1 conv."""

    def __init__(self, in_ch: int, out_ch: int, repeats: int, shortcut: bool):
        super().__init__()
        hidden = out_ch // 2
        self.cv1 = ConvBNSiLU(in_ch, 2 * hidden, 1)
        self.cv2 = ConvBNSiLU((2 + repeats) * hidden, out_ch, 1)
        self.m = nn.ModuleList(Bottleneck(hidden, shortcut) for _ in range(repeats))

    def forward(self, x: Tensor) -> Tensor:
        first, second = self.cv1(x).chunk(2, 1)  # unpacked, not list(...): torch.fx can trace a fixed-size unpack
        parts = [first, second]
        for block in self.m:
            parts.append(block(parts[-1]))
        return self.cv2(torch.cat(parts, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: one 5x5 max-pool applied three times in a row, all four maps concatenated."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 5):
        super().__init__()
        hidden = in_ch // 2
        self.cv1 = ConvBNSiLU(in_ch, hidden, 1)
        self.cv2 = ConvBNSiLU(4 * hidden, out_ch, 1)
        self.pool = nn.MaxPool2d(kernel, 1, kernel // 2)

    def forward(self, x: Tensor) -> Tensor:
        maps = [self.cv1(x)]
        for _ in range(3):
            maps.append(self.pool(maps[-1]))
        return self.cv2(torch.cat(maps, 1))


def _branch(in_ch: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(ConvBNSiLU(in_ch, hidden, 3), ConvBNSiLU(hidden, hidden, 3), nn.Conv2d(hidden, outputs, 1))


class DecoupledHead(nn.Module):
    """Per level, a box branch (4 * reg_max DFL logits) and a class branch, concatenated on channels."""

    def __init__(self, in_channels: tuple[int, ...], num_classes: int, reg_max: int):
        super().__init__()
        box_ch = max(16, in_channels[0] // 4, 4 * reg_max)
        cls_ch = max(in_channels[0], min(num_classes, 100))
        self.box = nn.ModuleList(_branch(ch, box_ch, 4 * reg_max) for ch in in_channels)
        self.cls = nn.ModuleList(_branch(ch, cls_ch, num_classes) for ch in in_channels)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        return [torch.cat([box(x), cls(x)], 1) for x, box, cls in zip(features, self.box, self.cls)]


class YoloV8(nn.Module):
    """YOLOv8-style detector of size ``scale`` ('n' or 's'); see the module docstring for the outputs."""

    def __init__(self, num_classes: int = 80, scale: str = "s", reg_max: int = 16, image_size: int = 640):
        super().__init__()
        if scale not in SCALES:
            raise EdgeCompressError(f"unknown YOLOv8 scale {scale!r}; choose one of {', '.join(SCALES)}")
        multiples = SCALES[scale]
        self.num_classes, self.reg_max, self.strides, self.image_size = num_classes, reg_max, STRIDES, image_size

        def ch(channels: int) -> int:
            return make_divisible(min(channels, multiples.max_channels) * multiples.width)

        def n(repeats: int) -> int:
            return max(round(repeats * multiples.depth), 1)

        c1, c2, c3, c4, c5 = ch(64), ch(128), ch(256), ch(512), ch(1024)
        self.stem = nn.Sequential(ConvBNSiLU(3, c1, 3, 2), ConvBNSiLU(c1, c2, 3, 2), C2f(c2, c2, n(3), True))  # stride 4
        self.stage8 = nn.Sequential(ConvBNSiLU(c2, c3, 3, 2), C2f(c3, c3, n(6), True))
        self.stage16 = nn.Sequential(ConvBNSiLU(c3, c4, 3, 2), C2f(c4, c4, n(6), True))
        self.stage32 = nn.Sequential(ConvBNSiLU(c4, c5, 3, 2), C2f(c5, c5, n(3), True), SPPF(c5, c5))
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.top_down16 = C2f(c5 + c4, c4, n(3), False)
        self.top_down8 = C2f(c4 + c3, c3, n(3), False)
        self.down8 = ConvBNSiLU(c3, c3, 3, 2)
        self.bottom_up16 = C2f(c3 + c4, c4, n(3), False)
        self.down16 = ConvBNSiLU(c4, c4, 3, 2)
        self.bottom_up32 = C2f(c4 + c5, c5, n(3), False)
        self.head = DecoupledHead((c3, c4, c5), num_classes, reg_max)
        self.reset_prediction_biases()

    def reset_prediction_biases(self) -> None:
        """Box logits start at 1, class logits near the prior of ~5 objects per image (as YOLOv8 does)."""
        for box, cls, stride in zip(self.head.box, self.head.cls, self.strides):
            nn.init.constant_(box[-1].bias, 1.0)
            nn.init.constant_(cls[-1].bias, math.log(5 / self.num_classes / (self.image_size / stride) ** 2))

    def prediction_layers(self) -> list[str]:
        """Names of the convs that write the output maps (their output channels must be kept)."""
        return [f"head.{branch}.{level}.2" for branch in ("box", "cls") for level in range(len(self.strides))]

    def forward(self, x: Tensor) -> list[Tensor]:
        p8 = self.stage8(self.stem(x))
        p16 = self.stage16(p8)
        p32 = self.stage32(p16)
        t16 = self.top_down16(torch.cat([self.upsample(p32), p16], 1))
        n8 = self.top_down8(torch.cat([self.upsample(t16), p8], 1))
        n16 = self.bottom_up16(torch.cat([self.down8(n8), t16], 1))
        n32 = self.bottom_up32(torch.cat([self.down16(n16), p32], 1))
        return self.head([n8, n16, n32])
