"""The anchor-based YOLO detection head (YOLOv3/v5 style): anchor fitting, target assignment and loss, distillation, decoding.

A model of this family has ``anchors`` [levels, anchors per level, 2] (pixels), ``strides`` (one per
level) and ``num_classes``, and returns one raw map [B, anchors * (5 + classes), H/s, W/s] per level.

Box parametrisation (YOLOv5): xy = (2 sigmoid(t) - 0.5 + cell) * stride, wh = (2 sigmoid(t))^2 * anchor.
A ground-truth box is assigned to every anchor whose width and height ratios are within
``anchor_ratio`` and to its cell plus the two nearest neighbouring cells, which gives the small
models trained here three times more positives than YOLOv3's single best anchor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import EdgeCompressError
from ..train.distill import binary_kl
from .base import Distillation, Loss
from .detect import DetectionHead


def fit_anchors(box_sizes: np.ndarray, num_levels: int = 3, per_level: int = 3, seed: int = 0) -> Tensor:
    """k-means anchors (pixels) of the training boxes' (w, h), sorted by area: [levels, per_level, 2]."""
    from sklearn.cluster import KMeans  # slow to import; only training from scratch needs it

    k = num_levels * per_level
    centers = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(box_sizes).cluster_centers_
    centers = centers[np.argsort(centers.prod(axis=1))]
    return torch.tensor(centers, dtype=torch.float32).view(num_levels, per_level, 2)


def split_maps(raw: Tensor, num_anchors: int) -> Tensor:
    """[B, A*(5+C), H, W] -> [B, A, H, W, 5+C]."""
    b, _, h, w = raw.shape
    return raw.view(b, num_anchors, -1, h, w).permute(0, 1, 3, 4, 2)


def box_giou(a: Tensor, b: Tensor) -> Tensor:
    """Generalised IoU of matching rows of two [N, 4] (cx, cy, w, h) tensors."""
    a1, a2 = a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2
    b1, b2 = b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    inter = (torch.min(a2, b2) - torch.max(a1, b1)).clamp(min=0).prod(dim=1)
    union = a[:, 2:].prod(dim=1) + b[:, 2:].prod(dim=1) - inter + 1e-7
    hull = (torch.max(a2, b2) - torch.min(a1, b1)).prod(dim=1) + 1e-7
    iou = inter / union
    return iou - (hull - union) / hull


@dataclass(frozen=True)
class LossWeights:
    """Relative weights of the loss terms and the objectness balance across strides 8, 16, 32 (YOLOv5's)."""

    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.5
    level_balance: tuple[float, ...] = (4.0, 1.0, 0.4)
    anchor_ratio: float = 4.0


def weighted_total(weights: LossWeights, box: Tensor, obj: Tensor, cls: Tensor, outputs: list[Tensor], strides: tuple[int, ...],
                   num_classes: int) -> Tensor:
    """The box, objectness and class terms (summed over levels) combined with their gains as YOLOv5 does: scaled by
    3 / levels, objectness by (image size / 640)^2, classes by classes / 80, and the sum by the batch size."""
    levels, batch = len(outputs), outputs[0].shape[0]
    image_scale = (outputs[0].shape[-1] * strides[0] / 640) ** 2
    total = (weights.box * 3 / levels * box + weights.obj * image_scale * 3 / levels * obj
             + weights.cls * num_classes / 80 * 3 / levels * cls)
    return total * batch


class DetectionLoss(nn.Module):
    """YOLO loss for a model with ``anchors`` [L, A, 2] (pixels), ``strides`` and ``num_classes`` attributes."""

    def __init__(self, model: nn.Module, weights: LossWeights = LossWeights()):
        super().__init__()
        self.anchors = model.anchors.detach().clone()
        self.strides = tuple(model.strides)
        self.num_classes = model.num_classes
        self.weights = weights

    def forward(self, outputs: list[Tensor], targets: Tensor) -> Tensor:
        """``targets`` rows are (batch index, class, cx, cy, w, h), normalised to the image."""
        device = outputs[0].device
        loss_box, loss_obj, loss_cls = (torch.zeros((), device=device) for _ in range(3))
        for level, raw in enumerate(outputs):
            preds = split_maps(raw, self.anchors.shape[1])
            _, _, h, w, _ = preds.shape
            stride = self.strides[level]
            anchors = self.anchors[level].to(device) / stride
            b, a, gy, gx, tbox, tcls = self._assign(targets, anchors, w, h)
            obj_target = torch.zeros(preds.shape[:4], device=device)
            if len(b):
                p = preds[b, a, gy, gx]
                xy = p[:, :2].sigmoid() * 2 - 0.5
                wh = (p[:, 2:4].sigmoid() * 2) ** 2 * anchors[a]
                giou = box_giou(torch.cat([xy, wh], dim=1), tbox)
                loss_box = loss_box + (1 - giou).mean()
                obj_target[b, a, gy, gx] = giou.detach().clamp(min=0).to(obj_target.dtype)
                if self.num_classes > 1:
                    cls_target = F.one_hot(tcls, self.num_classes).to(p.dtype)
                    loss_cls = loss_cls + F.binary_cross_entropy_with_logits(p[:, 5:], cls_target)
            loss_obj = loss_obj + self.weights.level_balance[level] * F.binary_cross_entropy_with_logits(preds[..., 4], obj_target)
        return weighted_total(self.weights, loss_box, loss_obj, loss_cls, outputs, self.strides, self.num_classes)

    def _assign(self, targets: Tensor, anchors: Tensor, w: int, h: int):
        """Match targets to (anchor, cell) pairs; returns indices, boxes relative to their cell and classes."""
        num_anchors = anchors.shape[0]
        gain = torch.tensor([1, 1, w, h, w, h], device=targets.device, dtype=targets.dtype)
        t = targets * gain  # boxes in grid units
        if not len(t):
            empty = torch.zeros(0, dtype=torch.long, device=targets.device)
            return empty, empty, empty, empty, torch.zeros(0, 4, device=targets.device), empty
        ratio = t[None, :, 4:6] / anchors[:, None]
        matched = torch.max(ratio, 1 / ratio).max(dim=2).values < self.weights.anchor_ratio  # [A, N]
        anchor_idx = torch.arange(num_anchors, device=t.device)[:, None].expand_as(matched)[matched]
        t = t[None].expand(num_anchors, -1, -1)[matched]
        xy = t[:, 2:4]
        frac = xy % 1
        inverse = torch.tensor([w, h], device=t.device) - xy
        # Each box also goes to the neighbour cells nearest its centre (left/up and right/down).
        left_up = (frac < 0.5) & (xy > 1)
        right_down = ((inverse % 1) < 0.5) & (inverse > 1)
        offsets = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=t.device, dtype=t.dtype) * 0.5
        select = torch.stack([torch.ones_like(left_up[:, 0]), left_up[:, 0], left_up[:, 1], right_down[:, 0], right_down[:, 1]])
        t = t[None].expand(5, -1, -1)[select]
        anchor_idx = anchor_idx[None].expand(5, -1)[select]
        shift = offsets[:, None].expand(-1, select.shape[1], -1)[select]
        cells = (t[:, 2:4] - shift).long()
        gx, gy = cells[:, 0].clamp(0, w - 1), cells[:, 1].clamp(0, h - 1)
        tbox = torch.cat([t[:, 2:4] - torch.stack([gx, gy], dim=1), t[:, 4:6]], dim=1)
        return t[:, 0].long(), anchor_idx, gy, gx, tbox, t[:, 1].long()


class AnchorDistillation(nn.Module):
    """Distillation between two anchor-based detectors' raw maps, level by level, in the task loss's units.

    Objectness: binary KL of the teacher's probability, at every anchor and cell, with the loss's level balance.
    Classes (binary KL per class) and the box (squared difference of its 2 sigmoid(t) parameters: the centre's
    offset in cells and the square root of the size in anchors) are weighted by the teacher's objectness
    probability, as objectness-scaled distillation does (Mehta and Ozturk 2018): where the teacher sees
    background, its boxes and classes carry nothing to learn. Each term takes the gain of the loss term it
    mirrors (:func:`weighted_total`), so a weight of 1 weighs the teacher as much as the labels.
    """

    def __init__(self, model: nn.Module, weights: LossWeights = LossWeights()):
        super().__init__()
        self.num_anchors, self.strides, self.num_classes = model.anchors.shape[1], tuple(model.strides), model.num_classes
        self.weights = weights

    def forward(self, student: list[Tensor], teacher: list[Tensor]) -> Tensor:
        box, obj, cls = (torch.zeros((), device=student[0].device) for _ in range(3))
        for level, (raw_student, raw_teacher) in enumerate(zip(student, teacher)):
            s, t = split_maps(raw_student.float(), self.num_anchors), split_maps(raw_teacher.float(), self.num_anchors)
            obj = obj + self.weights.level_balance[level] * binary_kl(s[..., 4], t[..., 4]).mean()
            weight = t[..., 4].sigmoid()
            total_weight = weight.sum().clamp(min=1e-9)
            box_error = (2 * s[..., :4].sigmoid() - 2 * t[..., :4].sigmoid()).pow(2).mean(dim=-1)
            box = box + (box_error * weight).sum() / total_weight
            if self.num_classes > 1:
                cls = cls + (binary_kl(s[..., 5:], t[..., 5:]).mean(dim=-1) * weight).sum() / total_weight
        return weighted_total(self.weights, box, obj, cls, student, self.strides, self.num_classes)


def decode(outputs: list[Tensor], anchors: Tensor, strides: tuple[int, ...]) -> Tensor:
    """Raw maps -> [B, N, 5 + C] rows (cx, cy, w, h in pixels, objectness, class probabilities)."""
    decoded = []
    for level, raw in enumerate(outputs):
        preds = split_maps(raw.float(), anchors.shape[1]).sigmoid()
        b, a, h, w, _ = preds.shape
        ys, xs = torch.meshgrid(torch.arange(h, device=raw.device), torch.arange(w, device=raw.device), indexing="ij")
        grid = torch.stack([xs, ys], dim=-1).view(1, 1, h, w, 2)
        xy = (preds[..., :2] * 2 - 0.5 + grid) * strides[level]
        wh = (preds[..., 2:4] * 2) ** 2 * anchors[level].view(1, a, 1, 1, 2).to(raw.device)
        decoded.append(torch.cat([xy, wh, preds[..., 4:]], dim=-1).view(b, -1, preds.shape[-1]))
    return torch.cat(decoded, dim=1)


class YoloAnchorHead(DetectionHead):
    """Models with ``anchors``, ``strides`` and ``num_classes``, such as the zoo's yolo-mbv2."""

    name = "yolo-anchors"
    requires = ("anchors", "strides", "num_classes")

    def check(self, model: nn.Module) -> None:
        super().check(model)
        shape = tuple(getattr(model.anchors, "shape", ()))
        if len(shape) != 3 or shape[-1] != 2 or shape[0] != len(model.strides):
            raise EdgeCompressError(
                f"model {type(model).__name__} has anchors of shape {shape} for {len(model.strides)} strides; "
                "the yolo-anchors head needs a tensor [levels, anchors per level, 2] in pixels, one level per stride"
            )

    def loss(self, model: nn.Module) -> Loss:
        return DetectionLoss(model)

    def distillation_loss(self, model: nn.Module) -> Distillation:
        return AnchorDistillation(model)

    def prepare(self, model: nn.Module, box_sizes: np.ndarray) -> None:
        """Replace the anchors by k-means anchors of the training boxes, when there are enough boxes."""
        if len(box_sizes) >= model.anchors.numel() // 2:
            model.anchors.copy_(fit_anchors(box_sizes, *model.anchors.shape[:2]))

    def decode(self, outputs: list[Tensor], model: nn.Module) -> Tensor:
        return decode(outputs, model.anchors, tuple(model.strides))


__all__ = ["AnchorDistillation", "DetectionLoss", "LossWeights", "YoloAnchorHead", "box_giou", "decode", "fit_anchors", "split_maps"]
