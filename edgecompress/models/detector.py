"""The bundled detector: YOLOv3-style three-scale head on a MobileNetV2 backbone (the patent's embodiment).

The head uses depthwise-separable convolutions; `width` scales every layer. ``forward`` returns the
three raw prediction maps, shape [B, anchors * (5 + classes), H/s, W/s] for strides 8, 16 and 32, so
the model traces with torch.fx and exports to ONNX unchanged; decoding lives in
:mod:`edgecompress.tasks.yolo_anchors` and runs outside the network (kept in float on every target).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .blocks import ConvBNAct, DepthwiseSeparable, make_divisible, mobilenetv2_stages

# Anchors in pixels for a 128 px input, three per stride; `edgecompress.tasks.yolo_anchors.fit_anchors`
# replaces them by k-means anchors of the training boxes before training from scratch.
DEFAULT_ANCHORS = (
    ((10, 13), (14, 19), (18, 25)),
    ((22, 30), (27, 37), (33, 45)),
    ((40, 54), (50, 66), (64, 84)),
)
STRIDES = (8, 16, 32)


class HeadLevel(nn.Module):
    """One scale of the head: 1x1 lateral fusion, two depthwise-separable blocks, the prediction conv."""

    def __init__(self, in_ch: int, ch: int, outputs: int):
        super().__init__()
        self.lateral = ConvBNAct(in_ch, ch, 1)
        self.blocks = nn.Sequential(DepthwiseSeparable(ch, ch), DepthwiseSeparable(ch, ch))
        self.predict = nn.Conv2d(ch, outputs, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.blocks(self.lateral(x))
        return features, self.predict(features)


class YoloMobileNetV2(nn.Module):
    """MobileNetV2 backbone with a YOLOv3 feature pyramid (upsample + concat) and depthwise-separable head."""

    def __init__(self, num_classes: int = 10, width: float = 0.5, anchors=DEFAULT_ANCHORS, image_size: int = 128):
        super().__init__()
        self.num_classes = num_classes
        self.strides = STRIDES
        self.image_size = image_size
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32))
        num_anchors = self.anchors.shape[1]
        outputs = num_anchors * (5 + num_classes)

        stem, stages, ch = mobilenetv2_stages(width)
        self.stem = nn.Sequential(stem, stages[0], stages[1])  # stride 4
        self.stage8, self.stage16, self.stage32 = stages[2], nn.Sequential(stages[3], stages[4]), nn.Sequential(stages[5], stages[6])
        c8, c16, c32 = ch[2], ch[4], ch[6]
        h8, h16, h32 = (make_divisible(c * width) for c in (96, 128, 192))

        self.head32 = HeadLevel(c32, h32, outputs)
        self.reduce32 = ConvBNAct(h32, h16, 1)
        self.head16 = HeadLevel(h16 + c16, h16, outputs)
        self.reduce16 = ConvBNAct(h16, h8, 1)
        self.head8 = HeadLevel(h8 + c8, h8, outputs)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.reset_prediction_biases()

    def reset_prediction_biases(self) -> None:
        """Start objectness near the prior of ~8 objects per 640 px image and classes near uniform (as YOLOv5)."""
        for head, stride in zip((self.head8, self.head16, self.head32), self.strides):
            bias = head.predict.bias.detach().view(self.anchors.shape[1], -1)
            bias[:, 4] = math.log(8 / (self.image_size / stride) ** 2)
            bias[:, 5:] = math.log(0.6 / max(self.num_classes - 0.99, 1.0))
            head.predict.bias.data.copy_(bias.view(-1))

    def prediction_layers(self) -> list[str]:
        """Names of the convs that write the output maps: int8 keeps them float (their rounding costs box precision)."""
        return [f"head{stride}.predict" for stride in self.strides]

    def forward(self, x: Tensor) -> list[Tensor]:
        c8 = self.stage8(self.stem(x))
        c16 = self.stage16(c8)
        c32 = self.stage32(c16)
        f32, p32 = self.head32(c32)
        f16, p16 = self.head16(torch.cat([self.upsample(self.reduce32(f32)), c16], dim=1))
        _, p8 = self.head8(torch.cat([self.upsample(self.reduce16(f16)), c8], dim=1))
        return [p8, p16, p32]
