"""The anchor-free detection head (YOLOv8 / YOLO11 style): contract, loss, decoding and the deployed output layout.

A model of this family has ``num_classes``, ``reg_max`` and ``strides`` and returns one raw map per
stride, [B, 4 * reg_max + num_classes, H/s, W/s]: each cell's box as four distributions over
``reg_max`` bins (left, top, right, bottom distances from the cell centre, in strides), then the class
logits. The loss and the distillation term are in :mod:`.anchor_free_loss`, the box geometry in :mod:`.anchor_free_boxes`.

Deployed, the model keeps the Ultralytics export layout: one output [B, 4 + num_classes, anchors]
of decoded boxes (cx, cy, w, h in pixels) and class probabilities, which :class:`DecodedOutput`
computes with plain ops after the network (always float, also in an int8 export).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import EdgeCompressError
from .anchor_free_boxes import anchor_points, dfl_expectation, distances_to_boxes, xyxy_to_cxcywh
from .anchor_free_loss import AnchorFreeDistillation, AnchorFreeLoss
from .base import Distillation, Loss
from .detect import DetectionHead


def decode_maps(outputs: list[Tensor], reg_max: int, strides: tuple[int, ...]) -> Tensor:
    """Raw maps -> [B, 4 + C, N]: boxes (cx, cy, w, h in pixels) and class probabilities of every anchor point, level by level."""
    # Sizes as Python ints: an export then holds them (and the anchor points) as constants, so ONNX shape
    # inference knows every output dimension but the batch, with or without Q/DQ nodes upstream.
    channels, shapes = int(outputs[0].shape[1]), [(int(o.shape[2]), int(o.shape[3])) for o in outputs]
    flat = torch.cat([o.reshape(-1, channels, h * w) for o, (h, w) in zip(outputs, shapes)], dim=2)
    points, point_strides = anchor_points(shapes, strides, device=flat.device, dtype=flat.dtype)
    boxes = _boxes(points, point_strides, dfl_expectation(flat[:, : 4 * reg_max], reg_max))
    return torch.cat([boxes, flat[:, 4 * reg_max:].sigmoid()], dim=1)


def _boxes(points: Tensor, point_strides: Tensor, distances: Tensor) -> Tensor:
    """Points [N, 2], strides [N, 1] and distances [B, 4, N] -> [B, 4, N] (cx, cy, w, h) in pixels."""
    xyxy = distances_to_boxes(points, distances.transpose(1, 2)) * point_strides
    return xyxy_to_cxcywh(xyxy).transpose(1, 2)


class DecodedOutput(nn.Module):
    """``model`` followed by the decoding of :func:`decode_maps`: the module an anchor-free model is exported as."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.reg_max, self.strides = int(model.reg_max), tuple(model.strides)

    def forward(self, x: Tensor) -> Tensor:
        return decode_maps(list(self.model(x)), self.reg_max, self.strides)


def is_decoded(outputs: list[Tensor] | Tensor) -> bool:
    """Whether ``outputs`` is the deployed layout (one [B, 4 + C, N] tensor) rather than the raw maps."""
    return isinstance(outputs, Tensor) or (len(outputs) == 1 and outputs[0].dim() == 3)


class AnchorFreeHead(DetectionHead):
    """Models with ``num_classes``, ``reg_max`` and ``strides`` and no ``anchors``, such as the zoo's yolov8n / yolov8s."""

    name = "anchor-free"
    requires = ("num_classes", "reg_max", "strides")
    multi_label = True  # as Ultralytics' validation counts boxes, so our mAP of its models agrees with YOLO(...).val()

    def matches(self, model: nn.Module) -> bool:
        return super().matches(model) and not hasattr(model, "anchors")

    def mismatch(self, model: nn.Module) -> str:
        return "it has anchors, so it is anchor-based" if hasattr(model, "anchors") else super().mismatch(model)

    def check(self, model: nn.Module) -> None:
        super().check(model)
        if not isinstance(model.reg_max, int) or model.reg_max < 2 or not all(isinstance(s, int) and s > 0 for s in model.strides):
            raise EdgeCompressError(
                f"model {type(model).__name__} has reg_max {model.reg_max!r} and strides {tuple(model.strides)!r}; "
                "the anchor-free head needs an int reg_max >= 2 (bins per box side) and positive int strides, one per output map"
            )

    def loss(self, model: nn.Module) -> Loss:
        return AnchorFreeLoss(model)

    def distillation_loss(self, model: nn.Module) -> Distillation:
        return AnchorFreeDistillation(model)

    def decode(self, outputs: list[Tensor] | Tensor, model: nn.Module) -> Tensor:
        """Raw maps, or the deployed layout [B, 4 + C, N], -> [B, N, 5 + C] rows with objectness 1."""
        if is_decoded(outputs):
            decoded = (outputs if isinstance(outputs, Tensor) else outputs[0]).float()
        else:
            decoded = decode_maps([o.float() for o in outputs], model.reg_max, tuple(model.strides))
        rows = decoded.transpose(1, 2)
        return torch.cat([rows[..., :4], torch.ones_like(rows[..., :1]), rows[..., 4:]], dim=-1)

    def export_module(self, model: nn.Module) -> nn.Module:
        return DecodedOutput(model)


__all__ = ["AnchorFreeHead", "DecodedOutput", "decode_maps", "is_decoded"]
