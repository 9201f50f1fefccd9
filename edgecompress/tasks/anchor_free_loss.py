"""Training an anchor-free detector: the task-aligned assigner (TOOD), the loss (BCE classes, CIoU + DFL boxes) and
the distillation term (a teacher's class scores and box distributions).

Written from the papers: TOOD (Feng et al. 2021) for the assignment, GFL (Li et al. 2020) for the
distribution focal loss, DIoU/CIoU (Zheng et al. 2020) for the box loss, localization distillation (LD,
Zheng et al. 2022) for distilling the box distributions. Every term is normalised by the sum of the soft
class targets (the teacher's scores, when distilling), so the loss does not grow with the number of objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..train.distill import binary_kl, softmax_kl
from .anchor_free_boxes import anchor_points, box_ciou, box_iou, boxes_to_distances, cxcywh_to_xyxy, dfl_expectation, distances_to_boxes, \
    distribution_focal_loss


@dataclass(frozen=True)
class Assignment:
    """Per anchor point: its target box (x1, y1, x2, y2 pixels), soft class targets and whether it is a positive."""

    boxes: Tensor  # [B, N, 4]
    scores: Tensor  # [B, N, C]
    foreground: Tensor  # [B, N] bool


class TaskAlignedAssigner:
    """TOOD's assignment: each ground-truth box takes the ``top_k`` anchor points inside it with the highest
    alignment ``score ** alpha * iou ** beta`` (the predicted probability of its class, the IoU of the
    predicted box); a point claimed twice goes to the box it overlaps most. A positive's class target is
    its alignment, rescaled so that each box's best point gets that box's best IoU."""

    def __init__(self, top_k: int = 10, alpha: float = 0.5, beta: float = 6.0, eps: float = 1e-9):
        self.top_k, self.alpha, self.beta, self.eps = top_k, alpha, beta, eps

    @torch.no_grad()
    def __call__(self, scores: Tensor, pred_boxes: Tensor, points: Tensor, gt_labels: Tensor, gt_boxes: Tensor, gt_mask: Tensor) -> Assignment:
        """``scores`` [B, N, C] probabilities, ``pred_boxes`` [B, N, 4] and ``points`` [N, 2] in pixels;
        ground truth padded to M per image: ``gt_labels`` [B, M], ``gt_boxes`` [B, M, 4] pixels, ``gt_mask`` [B, M]."""
        b, n, c = scores.shape
        if gt_boxes.shape[1] == 0:
            return Assignment(torch.zeros_like(pred_boxes), torch.zeros_like(scores), torch.zeros(b, n, dtype=torch.bool, device=scores.device))
        inside = (boxes_to_distances(points[None, None], gt_boxes[:, :, None]).amin(dim=-1) > self.eps) & gt_mask[..., None]  # [B, M, N]
        iou = box_iou(gt_boxes[:, :, None], pred_boxes[:, None]).clamp(min=0)  # [B, M, N]
        class_score = scores.gather(2, gt_labels[:, None, :].expand(b, n, -1)).transpose(1, 2)  # [B, M, N]
        alignment = class_score.pow(self.alpha) * iou.pow(self.beta) * inside
        top = alignment.topk(min(self.top_k, n), dim=-1).indices
        chosen = torch.zeros_like(inside).scatter_(-1, top, True) & inside
        claimed_twice = chosen.sum(dim=1, keepdim=True) > 1
        most_overlapped = F.one_hot(iou.masked_fill(~chosen, -1).argmax(dim=1), gt_boxes.shape[1]).transpose(1, 2).bool()
        chosen = torch.where(claimed_twice, most_overlapped & chosen, chosen)
        foreground = chosen.any(dim=1)
        gt_index = chosen.float().argmax(dim=1)  # [B, N]
        boxes = gt_boxes.gather(1, gt_index[..., None].expand(-1, -1, 4))
        labels = gt_labels.gather(1, gt_index)
        alignment = alignment * chosen
        best_iou = (iou * chosen).amax(dim=-1, keepdim=True)
        quality = (alignment * best_iou / (alignment.amax(dim=-1, keepdim=True) + self.eps)).amax(dim=1)  # [B, N]
        targets = F.one_hot(labels, c).to(scores.dtype) * (quality * foreground)[..., None]
        return Assignment(boxes, targets, foreground)


@dataclass(frozen=True)
class AnchorFreeLossWeights:
    """Gains of the box (CIoU), class (BCE) and distribution focal terms (YOLOv8's documented defaults)."""

    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5


def padded_targets(targets: Tensor, batch: int, width: float, height: float) -> tuple[Tensor, Tensor, Tensor]:
    """Rows (batch index, class, cx, cy, w, h) normalised -> per image, padded: labels [B, M], boxes [B, M, 4] xyxy pixels, mask [B, M]."""
    device = targets.device
    index = targets[:, 0].long()
    counts = torch.bincount(index, minlength=batch)
    m = int(counts.max()) if len(targets) else 0
    labels = torch.zeros(batch, m, dtype=torch.long, device=device)
    boxes = torch.zeros(batch, m, 4, dtype=targets.dtype, device=device)
    mask = torch.zeros(batch, m, dtype=torch.bool, device=device)
    if m:
        order = torch.argsort(index, stable=True)
        index = index[order]
        first_row = torch.cumsum(counts, 0) - counts  # of each image, in the sorted rows
        slot = torch.arange(len(index), device=device) - first_row[index]
        scale = torch.tensor([width, height, width, height], dtype=targets.dtype, device=device)
        labels[index, slot] = targets[order, 1].long()
        boxes[index, slot] = cxcywh_to_xyxy(targets[order, 2:6]) * scale
        mask[index, slot] = True
    return labels, boxes, mask


class AnchorFreeLoss(nn.Module):
    """Loss of a model with ``num_classes``, ``reg_max`` and ``strides`` returning one [B, 4 * reg_max + C, H/s, W/s] map per stride."""

    def __init__(self, model: nn.Module, weights: AnchorFreeLossWeights = AnchorFreeLossWeights(), assigner: TaskAlignedAssigner | None = None):
        super().__init__()
        self.num_classes, self.reg_max, self.strides = model.num_classes, model.reg_max, tuple(model.strides)
        self.weights = weights
        self.assigner = assigner or TaskAlignedAssigner()

    def forward(self, outputs: list[Tensor], targets: Tensor) -> Tensor:
        """``targets`` rows are (batch index, class, cx, cy, w, h), normalised to the image."""
        terms = self.terms(outputs, targets)
        w = self.weights
        return w.box * terms["box"] + w.cls * terms["cls"] + w.dfl * terms["dfl"]

    def terms(self, outputs: list[Tensor], targets: Tensor) -> dict[str, Tensor]:
        """The unweighted box, class and DFL terms."""
        r, batch = self.reg_max, outputs[0].shape[0]
        flat = torch.cat([o.flatten(2) for o in outputs], dim=2).float()  # [B, 4R + C, N]
        points, strides = anchor_points([tuple(o.shape[-2:]) for o in outputs], self.strides, device=flat.device)
        box_logits = flat[:, : 4 * r].transpose(1, 2)  # [B, N, 4R]
        class_logits = flat[:, 4 * r:].transpose(1, 2)  # [B, N, C]
        pred_boxes = distances_to_boxes(points, dfl_expectation(flat[:, : 4 * r], r).transpose(1, 2)) * strides  # pixels
        height, width = outputs[0].shape[-2] * self.strides[0], outputs[0].shape[-1] * self.strides[0]
        labels, gt_boxes, mask = padded_targets(targets.to(flat.device, flat.dtype), batch, width, height)
        assigned = self.assigner(class_logits.detach().sigmoid(), pred_boxes.detach(), points * strides, labels, gt_boxes, mask)
        score_sum = assigned.scores.sum().clamp(min=1)
        cls = F.binary_cross_entropy_with_logits(class_logits, assigned.scores, reduction="sum") / score_sum
        fg = assigned.foreground
        if not fg.any():
            zero = pred_boxes.sum() * 0
            return {"box": zero, "cls": cls, "dfl": zero}
        weight = assigned.scores.sum(dim=-1)[fg]
        box = ((1 - box_ciou(pred_boxes[fg], assigned.boxes[fg])) * weight).sum() / score_sum
        point_strides = strides.expand(batch, -1, -1)[fg]
        target_distances = boxes_to_distances(points.expand(batch, -1, -1)[fg], assigned.boxes[fg] / point_strides).clamp(0, r - 1 - 0.01)
        dfl = distribution_focal_loss(box_logits[fg].reshape(-1, r), target_distances.reshape(-1)).view(-1, 4).mean(dim=-1)
        return {"box": box, "cls": cls, "dfl": (dfl * weight).sum() / score_sum}


class AnchorFreeDistillation(nn.Module):
    """Distillation between two anchor-free detectors' raw maps, level by level, in the task loss's units.

    Class scores: binary KL of the teacher's probabilities, every cell and class (a sigmoid classifier's classes are
    independent binary problems, so each is distilled as one). Box: each side's distribution over the ``reg_max``
    bins, KL(teacher || student) (LD), averaged over the four sides and weighted by the teacher's best class
    probability at the cell, so background cells, whose boxes mean nothing, hardly count. Both are divided by the
    sum of those weights (the teacher's soft count of objects), as the loss divides by the sum of its soft class
    targets, and take the loss's class and DFL gains, so a weight of 1 weighs the teacher as much as the labels.
    """

    def __init__(self, model: nn.Module, weights: AnchorFreeLossWeights = AnchorFreeLossWeights()):
        super().__init__()
        self.reg_max, self.weights = model.reg_max, weights

    def forward(self, student: list[Tensor], teacher: list[Tensor]) -> Tensor:
        r = self.reg_max
        cls, box, total_weight = (torch.zeros((), device=student[0].device) for _ in range(3))
        for raw_student, raw_teacher in zip(student, teacher):
            s, t = raw_student.flatten(2).float(), raw_teacher.flatten(2).float()  # [B, 4R + C, H*W]
            weight = t[:, 4 * r:].sigmoid().amax(dim=1)  # [B, H*W]
            cls = cls + binary_kl(s[:, 4 * r:], t[:, 4 * r:]).sum()
            sides = softmax_kl(s[:, : 4 * r].unflatten(1, (4, r)), t[:, : 4 * r].unflatten(1, (4, r)), dim=2)  # [B, 4, H*W]
            box = box + (sides.mean(dim=1) * weight).sum()
            total_weight = total_weight + weight.sum()
        return (self.weights.cls * cls + self.weights.dfl * box) / total_weight.clamp(min=1)


__all__ = ["AnchorFreeDistillation", "AnchorFreeLoss", "AnchorFreeLossWeights", "Assignment", "TaskAlignedAssigner", "padded_targets"]
