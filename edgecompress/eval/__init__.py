"""Measuring models: prediction functions, NMS, COCO-style detection mAP, classification accuracy."""

from .classification import classification_accuracy, evaluate_classification
from .detection import DetectionMetrics, evaluate_detections, targets_to_pixel_xyxy
from .nms import batched_nms, box_area, box_iou, nms
from .predict import Predict, onnx_predict, openvino_predict, torch_predict

__all__ = [
    "DetectionMetrics",
    "Predict",
    "batched_nms",
    "box_area",
    "box_iou",
    "classification_accuracy",
    "evaluate_classification",
    "evaluate_detections",
    "nms",
    "onnx_predict",
    "openvino_predict",
    "targets_to_pixel_xyxy",
    "torch_predict",
]
