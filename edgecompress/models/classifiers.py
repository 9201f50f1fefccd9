"""Classifiers for the zoo: a CIFAR-style ResNet, VGG with BatchNorm and MobileNetV2."""

from __future__ import annotations

from torch import Tensor, nn

from .blocks import ConvBNAct, make_divisible, mobilenetv2_stages


class BasicBlock(nn.Module):
    """ResNet basic block with a 1x1 projection shortcut when the shape changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """ResNet-(6n+2) for 32 px images (He et al. 2016, section 4.2): ResNet-20, -56, -110."""

    def __init__(self, depth: int = 20, num_classes: int = 10, width: int = 16):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"ResNet-CIFAR depth must be 6n+2, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        layers, in_ch = [], width
        for stage, out_ch in enumerate((width, width * 2, width * 4)):
            for i in range(blocks_per_stage):
                layers.append(BasicBlock(in_ch, out_ch, 2 if stage > 0 and i == 0 else 1))
                in_ch = out_ch
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


VGG_CONFIGS = {11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]}


class VGGBN(nn.Module):
    """VGG with BatchNorm for 32 px inputs (the network-slimming paper's VGG), width-scalable."""

    def __init__(self, depth: int = 11, num_classes: int = 10, width: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for item in VGG_CONFIGS[depth]:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                out_ch = make_divisible(item * width)
                layers.append(ConvBNAct(in_ch, out_ch, 3))
                in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(in_ch, in_ch), nn.ReLU(inplace=True), nn.Linear(in_ch, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class MobileNetV2(nn.Module):
    """MobileNetV2 classifier (Sandler et al. 2018) with a width multiplier."""

    def __init__(self, num_classes: int = 10, width: float = 1.0, stem_stride: int = 2):
        super().__init__()
        stem, stages, ch = mobilenetv2_stages(width, stem_stride)
        last = make_divisible(1280 * max(width, 1.0))
        self.features = nn.Sequential(stem, *stages, ConvBNAct(ch[-1], last, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))
