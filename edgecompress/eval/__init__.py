"""Measuring models: NMS, COCO-style detection mAP, classification accuracy."""

from .classification import classification_accuracy, evaluate_classification
from .detection import DetectionMetrics, evaluate_detections, targets_to_pixel_xyxy
from .nms import batched_nms, box_area, box_iou, nms

__all__ = [
    "DetectionMetrics",
    "batched_nms",
    "box_area",
    "box_iou",
    "classification_accuracy",
    "evaluate_classification",
    "evaluate_detections",
    "nms",
    "targets_to_pixel_xyxy",
]
