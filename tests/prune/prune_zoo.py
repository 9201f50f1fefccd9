"""Small models covering the coupling patterns the pruner must handle (test helpers)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgecompress.helpers import output_tensors

from .zoo_blocks import C2fNet, Conv1dNet, Decoder, EfficientNetSE, LayerNormHead, ResNeXt


def conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class VGGFlatten(nn.Module):
    """Plain conv/BN/ReLU stack; a 2x2 map is flattened into a two-layer classifier."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(3, 16), nn.MaxPool2d(2), conv_bn_relu(16, 24), nn.MaxPool2d(2), conv_bn_relu(24, 32), nn.MaxPool2d(2)
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4, 40), nn.ReLU(), nn.Dropout(0.1), nn.Linear(40, 10))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class VGGGlobalPool(nn.Module):
    """Conv/BN/ReLU stack with global average pooling before the classifier."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(conv_bn_relu(3, 16), conv_bn_relu(16, 32, stride=2), conv_bn_relu(32, 48, stride=2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(48, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """Stem, identity block, projection block, identity block, global pool, linear."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_relu(3, 16)
        self.layer1 = BasicBlock(16, 16, 1)
        self.layer2 = BasicBlock(16, 32, 2)
        self.layer3 = BasicBlock(32, 32, 1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(x.mean((2, 3)))


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int):
        super().__init__()
        hidden = in_ch * expand
        layers = [conv_bn_relu(in_ch, hidden, kernel=1)] if expand != 1 else []
        layers += [conv_bn_relu(hidden, hidden, stride, groups=hidden), nn.Conv2d(hidden, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2Stack(nn.Module):
    """Inverted residuals: depthwise convs and identity shortcuts across blocks."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_relu(3, 16, stride=2)
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, 1, 1),
            InvertedResidual(16, 24, 2, 4),
            InvertedResidual(24, 24, 1, 4),
            InvertedResidual(24, 24, 1, 4),
        )
        self.last = conv_bn_relu(24, 64, kernel=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.last(self.blocks(self.stem(x))))


class DenseLayer(nn.Module):
    """Pre-activation dense layer: its BN reads every channel concatenated so far."""

    def __init__(self, in_ch: int, growth: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_ch)
        self.conv = nn.Conv2d(in_ch, growth, 3, 1, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.conv(torch.relu(self.bn(x)))], dim=1)


class DenseNet(nn.Module):
    """Stem, three dense layers (concat with offsets), transition, classifier."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_relu(3, 16)
        self.dense = nn.Sequential(DenseLayer(16, 8), DenseLayer(24, 8), DenseLayer(32, 8))
        self.transition_bn = nn.BatchNorm2d(40)
        self.transition = nn.Conv2d(40, 24, 1, bias=False)
        self.fc = nn.Linear(24, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.transition(torch.relu(self.transition_bn(self.dense(self.stem(x)))))
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


class FPN(nn.Module):
    """Backbone at strides 2/4/8, lateral convs, top-down upsample + concat, one output conv per level."""

    def __init__(self, outputs: int = 12):
        super().__init__()
        self.c2 = nn.Sequential(conv_bn_relu(3, 16, stride=2), conv_bn_relu(16, 16))
        self.c3 = conv_bn_relu(16, 32, stride=2)
        self.c4 = conv_bn_relu(32, 48, stride=2)
        self.lateral4 = conv_bn_relu(48, 24, kernel=1)
        self.smooth3 = conv_bn_relu(24 + 32, 24)
        self.smooth2 = conv_bn_relu(24 + 16, 16)
        self.out4 = nn.Conv2d(24, outputs, 1)
        self.out3 = nn.Conv2d(24, outputs, 1)
        self.out2 = nn.Conv2d(16, outputs, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        c2 = self.c2(x)
        c3 = self.c3(c2)
        p4 = self.lateral4(self.c4(c3))
        p3 = self.smooth3(torch.cat([nn.functional.interpolate(p4, scale_factor=2.0, mode="nearest"), c3], 1))
        p2 = self.smooth2(torch.cat([nn.functional.interpolate(p3, scale_factor=2.0, mode="nearest"), c2], 1))
        return self.out2(p2), self.out3(p3), self.out4(p4)


class TinyDetector(nn.Module):
    """Residual backbone and a two-scale head whose 1x1 output convs must keep their channels."""

    def __init__(self, anchors: int = 3, classes: int = 4):
        super().__init__()
        outputs = anchors * (5 + classes)
        self.stem = conv_bn_relu(3, 16, stride=2)
        self.stage1 = nn.Sequential(BasicBlock(16, 24, 2), BasicBlock(24, 24, 1))
        self.stage2 = nn.Sequential(BasicBlock(24, 48, 2), BasicBlock(48, 48, 1))
        self.head2 = nn.Sequential(conv_bn_relu(48, 32, kernel=1), conv_bn_relu(32, 32, groups=32), conv_bn_relu(32, 32, kernel=1))
        self.reduce = conv_bn_relu(32, 16, kernel=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.head1 = nn.Sequential(conv_bn_relu(16 + 24, 24, kernel=1), conv_bn_relu(24, 24, groups=24))
        self.predict1 = nn.Conv2d(24, outputs, 1)
        self.predict2 = nn.Conv2d(32, outputs, 1)

    def forward(self, x: Tensor) -> list[Tensor]:
        s1 = self.stage1(self.stem(x))
        s2 = self.stage2(s1)
        f2 = self.head2(s2)
        f1 = self.head1(torch.cat([self.up(self.reduce(f2)), s1], dim=1))
        return [self.predict1(f1), self.predict2(f2)]


ZOO = {
    "vgg-flatten": VGGFlatten,
    "vgg-global-pool": VGGGlobalPool,
    "resnet": ResNet,
    "mobilenetv2": MobileNetV2Stack,
    "densenet": DenseNet,
    "fpn": FPN,
    "detector": TinyDetector,
    "c2f": C2fNet,
    "resnext": ResNeXt,
    "efficientnet-se": EfficientNetSE,
    "decoder": Decoder,
    "layernorm-head": LayerNormHead,
    "conv1d": Conv1dNet,
}
INPUT_SHAPE = {"vgg-flatten": (3, 16, 16), "conv1d": (3, 32)}
NOT_LOSSLESS = {"layernorm-head"}  # LayerNorm statistics span the removed features


def build(name: str, seed: int = 0) -> nn.Module:
    """A zoo model with random BN statistics and affine parameters, so channels differ in importance."""
    torch.manual_seed(seed)
    model = ZOO[name]()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.weight.data.uniform_(0.2, 1.5)
            module.bias.data.normal_(0, 0.2)
            module.running_mean.normal_(0, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def example_input(name: str, seed: int = 1) -> Tensor:
    return torch.randn(2, *INPUT_SHAPE.get(name, (3, 32, 32)), generator=torch.Generator().manual_seed(seed))


def outputs(model: nn.Module, x: Tensor) -> list[Tensor]:
    with torch.no_grad():
        return output_tensors(model(x))
