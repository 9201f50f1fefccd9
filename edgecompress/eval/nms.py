"""Box IoU and non-maximum suppression without torchvision (torch and numpy only)."""

from __future__ import annotations

import numpy as np
import torch


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of ``[K,4]`` xyxy boxes (zero for degenerate ones)."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU ``[K,L]`` of xyxy boxes ``a [K,4]`` and ``b [L,4]``."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / union.clamp(min=torch.finfo(a.dtype).tiny)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: indices of kept boxes, highest score first (same result as torchvision.ops.nms).

    Each step keeps the best remaining box and drops the remaining ones overlapping it by more than
    ``iou_threshold``: one vectorised IoU row per kept box, memory O(K). It runs in numpy on the
    CPU, whose per-step overhead is a fraction of torch's; indices come back on ``boxes.device``.
    """
    xyxy = boxes.detach().float().cpu().numpy()
    order = np.argsort(-scores.detach().float().cpu().numpy(), kind="stable")
    x1, y1, x2, y2 = xyxy.T
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    kept = []
    while order.size:
        best, rest = order[0], order[1:]
        kept.append(best)
        width = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        height = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = width * height
        iou = inter / np.maximum(area[best] + area[rest] - inter, np.finfo(np.float32).tiny)
        order = rest[iou <= iou_threshold]
    return torch.as_tensor(np.array(kept, dtype=np.int64), device=boxes.device)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS within each class only: boxes of different classes are shifted apart so they never overlap."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    boxes = boxes.float()
    span = boxes.max() - boxes.min() + 1
    shifted = boxes + (classes.to(boxes.dtype) * span)[:, None]
    return nms(shifted, scores, iou_threshold)
