"""An Ultralytics-style YOLO11 detector (test helper), written from the published architecture
descriptions; nothing is imported or copied from Ultralytics.

What matters for the pruner is how such a model is *written*: ``self.model`` is an nn.Sequential of
layers tagged with ``.f`` (where the input comes from: -1 for the previous layer, an index, or a
list of them) and ``.i`` (their position); the forward walks it in a Python loop, keeping the
outputs later layers read in a list. The forward takes ``*args, **kwargs`` (so torch.fx cannot
trace it), and the blocks read shapes in Python: the attention of C2PSA views its qkv into heads
with the channel count read from its input, the DFL reads its input's shape, and Detect rebuilds its
anchors when the input shape differs from the last call's (``if self.shape != shape``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class Conv(nn.Module):
    """Conv (no bias) -> BatchNorm -> SiLU (or no activation)."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1, g: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class DWConv(Conv):
    """Depthwise conv: one group per channel."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1):
        super().__init__(c_in, c_out, k, s, g=math.gcd(c_in, c_out))


class Bottleneck(nn.Module):
    """Two convs, with a residual when the widths match."""

    def __init__(self, c_in: int, c_out: int, shortcut: bool = True, k: int = 3, e: float = 0.5):
        super().__init__()
        hidden = int(c_out * e)
        self.cv1, self.cv2 = Conv(c_in, hidden, k), Conv(hidden, c_out, k)
        self.add = shortcut and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """Two 1x1 branches, bottlenecks on one of them, concatenated and mixed."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = True, e: float = 0.5, k: int = 3):
        super().__init__()
        hidden = int(c_out * e)
        self.cv1, self.cv2 = Conv(c_in, hidden), Conv(c_in, hidden)
        self.cv3 = Conv(2 * hidden, c_out)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, k, e=1.0) for _ in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class C2f(nn.Module):
    """Split the 1x1 conv's output in two halves, chain blocks on the second, concat every stage."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = False, e: float = 0.5):
        super().__init__()
        self.c = int(c_out * e)
        self.cv1 = Conv(c_in, 2 * self.c)
        self.cv2 = Conv((2 + n) * self.c, c_out)
        self.m = nn.ModuleList(self.block(shortcut) for _ in range(n))

    def block(self, shortcut: bool) -> nn.Module:
        return Bottleneck(self.c, self.c, shortcut, e=1.0)

    def forward(self, x: Tensor) -> Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class C3k2(C2f):
    """YOLO11's C2f variant: its inner blocks are C3 blocks (``c3k=True``) or bottlenecks."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, c3k: bool = False, e: float = 0.5, shortcut: bool = True):
        self.c3k = c3k
        super().__init__(c_in, c_out, n, shortcut, e)

    def block(self, shortcut: bool) -> nn.Module:
        return C3(self.c, self.c, 2, shortcut) if self.c3k else Bottleneck(self.c, self.c, shortcut)


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: one 5x5 max pool applied three times in a row, all four concatenated."""

    def __init__(self, c_in: int, c_out: int, k: int = 5):
        super().__init__()
        hidden = c_in // 2
        self.cv1, self.cv2 = Conv(c_in, hidden), Conv(4 * hidden, c_out)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: Tensor) -> Tensor:
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions: queries, keys and values from one 1x1 conv,
    viewed into heads; a depthwise conv on the values adds position information."""

    def __init__(self, dim: int, num_heads: int, attn_ratio: float = 0.5):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.key_dim = int(self.head_dim * attn_ratio)
        self.scale = self.key_dim**-0.5
        self.qkv = Conv(dim, dim + 2 * self.key_dim * num_heads, act=False)
        self.proj = Conv(dim, dim, act=False)
        self.pe = Conv(dim, dim, 3, g=dim, act=False)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        positions = height * width
        per_head = self.qkv(x).view(batch, self.num_heads, 2 * self.key_dim + self.head_dim, positions)
        q, k, v = per_head.split([self.key_dim, self.key_dim, self.head_dim], dim=2)
        weights = ((q.transpose(-2, -1) @ k) * self.scale).softmax(dim=-1)
        attended = (v @ weights.transpose(-2, -1)).view(batch, channels, height, width)
        return self.proj(attended + self.pe(v.reshape(batch, channels, height, width)))


class PSABlock(nn.Module):
    """Attention then a 2x-wide conv feed-forward, each with a residual."""

    def __init__(self, c: int, num_heads: int, attn_ratio: float = 0.5):
        super().__init__()
        self.attn = Attention(c, num_heads, attn_ratio)
        self.ffn = nn.Sequential(Conv(c, 2 * c), Conv(2 * c, c, act=False))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(x)
        return x + self.ffn(x)


class C2PSA(nn.Module):
    """YOLO11's attention stage: split a 1x1 conv's output in two fixed halves, attention on one."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, e: float = 0.5, head_width: int = 16):
        super().__init__()
        self.c = int(c_in * e)
        self.cv1 = Conv(c_in, 2 * self.c)
        self.cv2 = Conv(2 * self.c, c_out)
        self.m = nn.Sequential(*(PSABlock(self.c, num_heads=max(1, self.c // head_width)) for _ in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.cv1(x).split((self.c, self.c), dim=1)
        return self.cv2(torch.cat((a, self.m(b)), 1))


class Concat(nn.Module):
    """Concatenates the list of tensors its ``.f`` routes to it."""

    def __init__(self, dim: int = 1):
        super().__init__()
        self.d = dim

    def forward(self, xs: list[Tensor]) -> Tensor:
        return torch.cat(xs, self.d)


class DFL(nn.Module):
    """Distribution focal loss decoding: the expected value of each box side's ``bins`` logits, as a
    fixed 1x1 conv whose weights are 0, 1, ..., bins-1."""

    def __init__(self, bins: int = 16):
        super().__init__()
        self.bins = bins
        self.conv = nn.Conv2d(bins, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(bins, dtype=torch.float).view(1, bins, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        batch, _, anchors = x.shape
        return self.conv(x.view(batch, 4, self.bins, anchors).transpose(2, 1).softmax(1)).view(batch, 4, anchors)


def make_anchors(features: list[Tensor], strides: Tensor, offset: float = 0.5) -> tuple[Tensor, Tensor]:
    """Cell centres of every level, (anchors, 2), and each anchor's stride, (anchors, 1)."""
    points, stride_of = [], []
    for feature, stride in zip(features, strides):
        _, _, height, width = feature.shape
        ys = torch.arange(height, dtype=feature.dtype, device=feature.device) + offset
        xs = torch.arange(width, dtype=feature.dtype, device=feature.device) + offset
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((grid_x, grid_y), -1).view(-1, 2))
        stride_of.append(torch.full((height * width, 1), float(stride), dtype=feature.dtype, device=feature.device))
    return torch.cat(points), torch.cat(stride_of)


def distances_to_boxes(distance: Tensor, points: Tensor, dim: int = 1) -> Tensor:
    """(left, top, right, bottom) distances from anchor points to (cx, cy, w, h) boxes."""
    left_top, right_bottom = distance.chunk(2, dim)
    top_left, bottom_right = points - left_top, points + right_bottom
    return torch.cat(((top_left + bottom_right) / 2, bottom_right - top_left), dim)


class Detect(nn.Module):
    """Anchor-free head: per level a box branch (4 sides x ``reg_max`` bins) and a class branch,
    concatenated. Training returns the per-level maps; inference decodes them to (B, 4 + nc, anchors)."""

    def __init__(self, nc: int, channels: tuple[int, ...], reg_max: int = 16):
        super().__init__()
        self.nc, self.nl, self.reg_max = nc, len(channels), reg_max
        self.no = nc + 4 * reg_max
        self.stride = torch.zeros(self.nl)  # set by the model from a dry run
        self.shape: torch.Size | None = None
        self.anchors = self.strides = torch.empty(0)
        box, cls = max(16, channels[0] // 4, 4 * reg_max), max(channels[0], min(nc, 100))
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(c, box, 3), Conv(box, box, 3), nn.Conv2d(box, 4 * reg_max, 1)) for c in channels)
        self.cv3 = nn.ModuleList(
            nn.Sequential(nn.Sequential(DWConv(c, c, 3), Conv(c, cls)), nn.Sequential(DWConv(cls, cls, 3), Conv(cls, cls)), nn.Conv2d(cls, nc, 1))
            for c in channels
        )
        self.dfl = DFL(reg_max)

    def forward(self, x: list[Tensor]) -> list[Tensor] | Tensor:
        for i in range(self.nl):
            x[i] = torch.cat((self.cv2[i](x[i]), self.cv3[i](x[i])), 1)
        if self.training:
            return x
        shape = x[0].shape
        flat = torch.cat([xi.view(shape[0], self.no, -1) for xi in x], 2)
        if self.shape != shape:
            self.anchors, self.strides = (t.transpose(0, 1) for t in make_anchors(x, self.stride))
            self.shape = shape
        box, cls = flat.split((4 * self.reg_max, self.nc), 1)
        boxes = distances_to_boxes(self.dfl(box), self.anchors.unsqueeze(0)) * self.strides
        return torch.cat((boxes, cls.sigmoid()), 1)


def _layers(nc: int, w: tuple[int, ...], reg_max: int) -> list[tuple[int | list[int], nn.Module]]:
    """YOLO11's layer table: (from, module); -1 is the previous layer."""
    w1, w2, w3, w4, w5 = w
    return [
        (-1, Conv(3, w1, 3, 2)),  # 0 P1/2
        (-1, Conv(w1, w2, 3, 2)),  # 1 P2/4
        (-1, C3k2(w2, w3, 1, False, 0.25)),  # 2
        (-1, Conv(w3, w3, 3, 2)),  # 3 P3/8
        (-1, C3k2(w3, w4, 1, False, 0.25)),  # 4
        (-1, Conv(w4, w4, 3, 2)),  # 5 P4/16
        (-1, C3k2(w4, w4, 1, True)),  # 6
        (-1, Conv(w4, w5, 3, 2)),  # 7 P5/32
        (-1, C3k2(w5, w5, 1, True)),  # 8
        (-1, SPPF(w5, w5)),  # 9
        (-1, C2PSA(w5, w5)),  # 10
        (-1, nn.Upsample(None, 2, "nearest")),  # 11
        ([-1, 6], Concat()),  # 12
        (-1, C3k2(w5 + w4, w4, 1, False)),  # 13
        (-1, nn.Upsample(None, 2, "nearest")),  # 14
        ([-1, 4], Concat()),  # 15
        (-1, C3k2(w4 + w4, w3, 1, False)),  # 16 P3 out
        (-1, Conv(w3, w3, 3, 2)),  # 17
        ([-1, 13], Concat()),  # 18
        (-1, C3k2(w3 + w4, w4, 1, False)),  # 19 P4 out
        (-1, Conv(w4, w4, 3, 2)),  # 20
        ([-1, 10], Concat()),  # 21
        (-1, C3k2(w4 + w5, w5, 1, True)),  # 22 P5 out
        ([16, 19, 22], Detect(nc, (w3, w4, w5), reg_max)),  # 23
    ]


class RoutedDetector(nn.Module):
    """A YOLO11-style detection model whose forward routes layer outputs by index, as Ultralytics'
    DetectionModel does. ``widths`` are the five stage widths (YOLO11n uses 16, 32, 64, 128, 256
    for its layers' 0.25x width; small ones keep tests fast)."""

    def __init__(self, num_classes: int = 3, widths: tuple[int, ...] = (8, 16, 32, 64, 64), reg_max: int = 16):
        super().__init__()
        layers = []
        for i, (source, layer) in enumerate(_layers(num_classes, widths, reg_max)):
            layer.f, layer.i = source, i
            layers.append(layer)
        self.model = nn.Sequential(*layers)
        self.save = sorted({j % i for i, layer in enumerate(layers) for j in ([layer.f] if isinstance(layer.f, int) else layer.f) if j != -1})
        self.num_classes, self.reg_max = num_classes, reg_max
        detect = self.model[-1]
        size = 64
        with torch.no_grad():  # strides from a dry run in training mode (per-level maps)
            detect.stride = torch.tensor([size / x.shape[-2] for x in self.predict(torch.zeros(1, 3, size, size))])
        self.strides = tuple(int(s) for s in detect.stride)

    def forward(self, x: Tensor | dict, *args, **kwargs) -> Tensor | list[Tensor]:
        if isinstance(x, dict):
            raise NotImplementedError("training batches (dicts) are for the loss, which this test model has not")
        return self.predict(x, *args, **kwargs)

    def predict(self, x: Tensor, profile: bool = False, visualize: bool = False, augment: bool = False) -> Tensor | list[Tensor]:
        """Run the layers in order; ``profile``, ``visualize`` and ``augment`` are accepted for the
        call signature only."""
        saved: list[Tensor | list[Tensor] | None] = []
        for layer in self.model:
            if layer.f != -1:
                x = saved[layer.f] if isinstance(layer.f, int) else [x if j == -1 else saved[j] for j in layer.f]
            x = layer(x)
            saved.append(x if layer.i in self.save else None)
        return x
