"""COCO-style detection mAP (pycocotools' COCOeval), fed from in-memory tensors."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class DetectionMetrics:
    """mAP at IoU 0.5 and averaged over IoU 0.5:0.95 (COCO), plus AP50 of each class that has targets."""

    map50: float
    map50_95: float
    ap50_per_class: dict[int, float] = field(default_factory=dict)


def _coco_ground_truth(targets: list[torch.Tensor], num_classes: int) -> dict:
    annotations = []
    for image_id, rows in enumerate(targets):
        for cls, x1, y1, x2, y2 in rows.detach().cpu().double().tolist():
            w, h = x2 - x1, y2 - y1
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cls),
                                "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0})
    return {"images": [{"id": i} for i in range(len(targets))], "annotations": annotations,
            "categories": [{"id": c} for c in range(num_classes)]}


def _coco_detections(predictions: list[torch.Tensor]) -> list[dict]:
    return [
        {"image_id": image_id, "category_id": int(cls), "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
        for image_id, rows in enumerate(predictions)
        for x1, y1, x2, y2, score, cls in rows.detach().cpu().double().tolist()
    ]


def _ap50_per_class(precision: np.ndarray, class_ids: list[int]) -> dict[int, float]:
    """Mean interpolated precision at IoU 0.5, all areas, max detections; -1 marks classes without targets."""
    per_class = {}
    for k, cls in enumerate(class_ids):
        curve = precision[0, :, k, 0, -1]
        if (curve > -1).any():
            per_class[int(cls)] = float(curve[curve > -1].mean())
    return per_class


def evaluate_detections(
    predictions: list[torch.Tensor], targets: list[torch.Tensor], num_classes: int
) -> DetectionMetrics:
    """mAP of ``predictions`` (per image ``[K,6]`` x1,y1,x2,y2,score,cls) against ``targets`` (``[M,5]`` cls,x1,y1,x2,y2).

    Both in pixels of the same image frame. Images without targets still count their false
    positives; classes without any target are left out of the mean (COCO's rule). With no
    targets at all, or no predictions, every AP is 0.0.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} prediction lists for {len(targets)} target lists")
    ground_truth = _coco_ground_truth(targets, num_classes)
    detections = _coco_detections(predictions)
    if not detections or not ground_truth["annotations"]:
        return DetectionMetrics(0.0, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):  # COCO prints progress lines
        coco_gt = COCO()
        coco_gt.dataset = ground_truth
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(detections), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    map50_95, map50 = (max(0.0, float(v)) for v in evaluator.stats[:2])
    per_class = _ap50_per_class(evaluator.eval["precision"], evaluator.params.catIds)
    return DetectionMetrics(map50, map50_95, per_class)


def targets_to_pixel_xyxy(targets: torch.Tensor, image_size: int) -> torch.Tensor:
    """Convert ``[M,5]`` (cls, cx, cy, w, h) normalised rows to ``[M,5]`` (cls, x1, y1, x2, y2) pixels."""
    cls, cx, cy, w, h = targets.unbind(dim=1)
    half_w, half_h = w * image_size / 2, h * image_size / 2
    cx, cy = cx * image_size, cy * image_size
    return torch.stack([cls, cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=1)
