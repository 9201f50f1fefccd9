"""Box geometry of anchor-free detectors: anchor points, the distribution-focal (DFL) box encoding, IoU and CIoU.

An anchor point is the centre of a cell of one output map, in that map's grid units; a box is four
distances from its point (left, top, right, bottom), in units of the map's stride. The box branch
predicts each distance as a distribution over ``reg_max`` bins 0, 1, ..., reg_max - 1 (GFL, Li et
al. 2020); its expectation is the distance. Everything here uses plain tensor ops, so the decoding
exports to ONNX (opset 13+) and TensorRT parses it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def anchor_points(shapes: list[tuple[int, int]], strides: tuple[int, ...], *, device=None, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """Cell centres of every level's (height, width) map, in grid units, [N, 2] (x, y), and each point's stride [N, 1]."""
    points, point_strides = [], []
    for (h, w), stride in zip(shapes, strides):
        ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype) + 0.5, torch.arange(w, device=device, dtype=dtype) + 0.5, indexing="ij")
        points.append(torch.stack([xs, ys], dim=-1).view(-1, 2))
        point_strides.append(torch.full((h * w, 1), float(stride), device=device, dtype=dtype))
    return torch.cat(points), torch.cat(point_strides)


def dfl_expectation(logits: Tensor, reg_max: int) -> Tensor:
    """[B, 4 * reg_max, N] box logits -> [B, 4, N] distances: the expectation of each side's softmax over the bins."""
    probabilities = logits.reshape(-1, 4, reg_max, int(logits.shape[-1])).softmax(dim=2)
    bins = torch.arange(reg_max, dtype=logits.dtype, device=logits.device).view(1, 1, reg_max, 1)
    return (probabilities * bins).sum(dim=2)


def distances_to_boxes(points: Tensor, distances: Tensor) -> Tensor:
    """Points [..., 2] and (left, top, right, bottom) distances [..., 4] -> boxes [..., 4] (x1, y1, x2, y2)."""
    return torch.cat([points - distances[..., :2], points + distances[..., 2:]], dim=-1)


def boxes_to_distances(points: Tensor, boxes: Tensor) -> Tensor:
    """The inverse of :func:`distances_to_boxes`: (left, top, right, bottom) distances of ``boxes`` from ``points``."""
    return torch.cat([points - boxes[..., :2], boxes[..., 2:] - points], dim=-1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    return torch.cat([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], dim=-1)


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    return torch.cat([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], dim=-1)


def box_iou(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    """IoU of boxes (x1, y1, x2, y2) that broadcast against each other: [..., 4] x [..., 4] -> [...]."""
    inter = (torch.min(a[..., 2:], b[..., 2:]) - torch.max(a[..., :2], b[..., :2])).clamp(min=0).prod(dim=-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(dim=-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(dim=-1)
    return inter / (area_a + area_b - inter + eps)


def box_ciou(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    """Complete IoU (Zheng et al. 2020) of matching rows (x1, y1, x2, y2): IoU minus the normalised centre
    distance and the aspect-ratio consistency term ``alpha * v`` (``alpha`` a weight, without gradient)."""
    iou = box_iou(a, b, eps)
    hull = torch.max(a[..., 2:], b[..., 2:]) - torch.min(a[..., :2], b[..., :2])
    diagonal = hull.pow(2).sum(dim=-1) + eps
    centre_distance = ((a[..., :2] + a[..., 2:]) - (b[..., :2] + b[..., 2:])).pow(2).sum(dim=-1) / 4
    wa, ha = (a[..., 2] - a[..., 0]).clamp(min=eps), (a[..., 3] - a[..., 1]).clamp(min=eps)
    wb, hb = (b[..., 2] - b[..., 0]).clamp(min=eps), (b[..., 3] - b[..., 1]).clamp(min=eps)
    v = (4 / math.pi**2) * (torch.atan(wb / hb) - torch.atan(wa / ha)).pow(2)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return iou - centre_distance / diagonal - alpha * v


def distribution_focal_loss(logits: Tensor, target: Tensor) -> Tensor:
    """DFL (GFL): cross-entropy towards the two bins around each continuous ``target`` in [0, reg_max - 1),
    weighted by nearness; ``logits`` [P, reg_max], ``target`` [P] -> [P]."""
    left = target.long()
    right_weight = target - left
    return (F.cross_entropy(logits, left, reduction="none") * (1 - right_weight)
            + F.cross_entropy(logits, left + 1, reduction="none") * right_weight)


__all__ = ["anchor_points", "box_ciou", "box_iou", "boxes_to_distances", "cxcywh_to_xyxy", "dfl_expectation", "distances_to_boxes",
           "distribution_focal_loss", "xyxy_to_cxcywh"]
