"""Small models covering the graph shapes the exporter must quantize: stacks, residual adds, concats, multi-output heads."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU())


def conv_stack() -> nn.Sequential:
    """Conv-BN-ReLU units with a linear (no activation) bottleneck, as in MobileNetV2."""
    linear_bottleneck = nn.Sequential(nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16))
    return nn.Sequential(conv_bn_relu(3, 8), conv_bn_relu(8, 16, 2), linear_bottleneck, conv_bn_relu(16, 16), nn.Conv2d(16, 4, 1))


class Residual(nn.Module):
    def __init__(self, ch: int = 8):
        super().__init__()
        self.stem = conv_bn_relu(3, ch)
        self.branch = nn.Sequential(conv_bn_relu(ch, ch), nn.Conv2d(ch, ch, 3, 1, 1, bias=False), nn.BatchNorm2d(ch))
        self.head = nn.Conv2d(ch, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        return self.head(torch.relu(x + self.branch(x)))


class Concat(nn.Module):
    def __init__(self, ch: int = 8):
        super().__init__()
        self.stem = conv_bn_relu(3, ch)
        self.left = nn.Sequential(nn.Conv2d(ch, ch, 1, bias=False), nn.BatchNorm2d(ch), nn.ReLU6())
        self.right = conv_bn_relu(ch, ch)
        self.fuse = nn.Conv2d(2 * ch, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        return self.fuse(torch.cat([self.left(x), self.right(x)], dim=1))


class TinyDetector(nn.Module):
    """Strided backbone, a top-down path (upsample + concat) and three prediction maps, like YOLOv3."""

    def __init__(self, ch: int = 8, outputs: int = 12):
        super().__init__()
        self.s8 = nn.Sequential(conv_bn_relu(3, ch, 2), conv_bn_relu(ch, ch, 2), conv_bn_relu(ch, ch, 2))
        self.s16 = conv_bn_relu(ch, 2 * ch, 2)
        self.s32 = conv_bn_relu(2 * ch, 2 * ch, 2)
        self.dw = nn.Sequential(nn.Conv2d(2 * ch, 2 * ch, 3, 1, 1, groups=2 * ch, bias=False), nn.BatchNorm2d(2 * ch), nn.ReLU6())
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fuse16 = conv_bn_relu(4 * ch, 2 * ch)
        self.fuse8 = conv_bn_relu(3 * ch, ch)
        self.p32, self.p16, self.p8 = nn.Conv2d(2 * ch, outputs, 1), nn.Conv2d(2 * ch, outputs, 1), nn.Conv2d(ch, outputs, 1)

    def forward(self, x):
        c8 = self.s8(x)
        c16 = self.s16(c8)
        f32 = self.dw(self.s32(c16))
        f16 = self.fuse16(torch.cat([self.up(f32), c16], 1))
        f8 = self.fuse8(torch.cat([self.up(f16), c8], 1))
        return [self.p8(f8), self.p16(f16), self.p32(f32)]


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN non-trivial statistics and affine parameters, so folding is really exercised."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.2)
    return model.eval()


MODELS = {
    "stack": (conv_stack, 16),
    "residual": (Residual, 16),
    "concat": (Concat, 16),
    "detector": (TinyDetector, 64),
}
