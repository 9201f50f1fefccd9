"""Object detection on a dataset in the Ultralytics layout (``data.yaml``); metric: COCO mAP.

What differs between detector families (the model contract, the loss, priors fitted to the data,
decoding the raw output maps to boxes) lives in a detection head, picked for each model from a
registry; NMS and the metric are shared. A new family is one module with a :class:`DetectionHead`
subclass and one :func:`register_detection_head` call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from ..errors import EdgeCompressError
from ..eval import batched_nms, evaluate_detections, targets_to_pixel_xyxy
from ..eval.predict import Predict
from ..progress import track
from .base import Distillation, Loss, Task, TaskData


class DetectionHead(ABC):
    """How one family of detectors is trained and read: its model contract, loss, data priors and decoding.

    ``requires`` names the attributes a model of the family has; the default ``matches`` checks them.
    """

    name: str
    requires: tuple[str, ...] = ()
    multi_label: bool = False
    """Whether evaluation keeps every class above the threshold per box (YOLOv5/v8 validation) or only the best one."""

    def missing(self, model: nn.Module) -> list[str]:
        """The attributes of ``requires`` that ``model`` lacks."""
        return [attribute for attribute in self.requires if not hasattr(model, attribute)]

    def matches(self, model: nn.Module) -> bool:
        """Whether ``model`` belongs to this head's family."""
        return not self.missing(model)

    def mismatch(self, model: nn.Module) -> str:
        """Why ``matches`` is false, for the error message: what of the contract the model lacks."""
        missing = self.missing(model)
        return f"no {', '.join(missing)} for the {self.name} head" if missing else f"not a model the {self.name} head reads"

    def check(self, model: nn.Module) -> None:
        """Raise a one-line EdgeCompressError naming the fix when ``model`` breaks the contract."""
        if not self.matches(model):
            raise EdgeCompressError(f"model {type(model).__name__} does not fit the {self.name} detection head ({self.mismatch(model)})")

    @abstractmethod
    def loss(self, model: nn.Module) -> Loss:
        """Training loss ``loss(outputs, targets)``; targets rows are (batch index, class, cx, cy, w, h), normalised."""

    def distillation_loss(self, model: nn.Module) -> Distillation:
        """The distillation term between a student's and a teacher's raw outputs (see :meth:`Task.distillation_loss`);
        a family without one refuses ``--distill``."""
        raise EdgeCompressError(f"the {self.name} detection head has no distillation loss; build with --no-distill")

    def prepare(self, model: nn.Module, box_sizes: np.ndarray) -> None:
        """Fit priors (anchors) to the training boxes' [N, 2] (w, h) in pixels before training from scratch; nothing by default."""

    @abstractmethod
    def decode(self, outputs: list[Tensor], model: nn.Module) -> Tensor:
        """Outputs (of the model or of its :meth:`export_module`) -> [B, N, 5 + C] rows (cx, cy, w, h in pixels,
        objectness, C class probabilities), before NMS."""

    def export_module(self, model: nn.Module) -> nn.Module:
        """The module deployed for ``model`` (see :meth:`Task.export_module`): the model itself by default."""
        return model


DETECTION_HEADS: dict[str, DetectionHead] = {}


def register_detection_head(head: DetectionHead) -> DetectionHead:
    """Add ``head`` under ``head.name`` (replacing a head of the same name); heads are tried in registration order."""
    DETECTION_HEADS[head.name] = head
    return head


def detection_head_for(model: nn.Module) -> DetectionHead:
    """The registered head whose family ``model`` belongs to, its contract checked."""
    for head in DETECTION_HEADS.values():
        if head.matches(model):
            head.check(model)
            return head
    lacks = "; ".join(head.mismatch(model) for head in DETECTION_HEADS.values()) or "no detection head is registered"
    raise EdgeCompressError(f"model {type(model).__name__} is not a YOLO detector ({lacks}); use --task classify or a detector like the zoo's yolo-mbv2")


def postprocess(decoded: Tensor, *, conf_threshold: float = 0.001, iou_threshold: float = 0.6, max_detections: int = 100,
                multi_label: bool = False) -> list[Tensor]:
    """Per image: boxes scoring above ``conf_threshold`` after class-wise NMS, rows (x1, y1, x2, y2, score, class).

    ``multi_label``: a box is a candidate once per class scoring above the threshold, not only for its best class.
    """
    results = []
    for rows in decoded:
        if multi_label and rows.shape[1] > 5:
            index, classes = (rows[:, 5:] * rows[:, 4:5] > conf_threshold).nonzero(as_tuple=True)
            rows, scores = rows[index], (rows[:, 5:] * rows[:, 4:5])[index, classes]
        else:
            scores, classes = (rows[:, 5:] * rows[:, 4:5]).max(dim=1) if rows.shape[1] > 5 else (rows[:, 4], torch.zeros_like(rows[:, 4]))
            keep = scores > conf_threshold
            rows, scores, classes = rows[keep], scores[keep], classes[keep]
        boxes = torch.cat([rows[:, :2] - rows[:, 2:4] / 2, rows[:, :2] + rows[:, 2:4] / 2], dim=1)
        kept = batched_nms(boxes, scores, classes, iou_threshold)[:max_detections]
        results.append(torch.cat([boxes[kept], scores[kept, None], classes[kept, None].float()], dim=1))
    return results


class DetectionTask(Task):
    """Detection on a dataset in the Ultralytics layout (``data.yaml``); metric: COCO mAP; bundled data: digits detection."""

    name = "detect"
    primary_metric = "map50"

    def load(self, data: Path, image_size: int, batch_size: int, limit: int | None = None, *, augment: str = "light", seed: int = 0,
             workers: int = 0) -> TaskData:
        from ..data.loaders import evaluation_loader, training_loader
        from ..data.yolo import YoloDetectionDataset, collate_detection, load_data_yaml

        config = load_data_yaml(data)
        train = YoloDetectionDataset.from_config(config, "train", image_size, augment=augment, seed=seed, limit=limit)
        val = YoloDetectionDataset.from_config(config, "val", image_size, limit=limit and max(limit // 4, 8))
        return TaskData(
            train=training_loader(train, batch_size, seed=seed, workers=workers, collate_fn=collate_detection, drop_last=len(train) > batch_size),
            val=evaluation_loader(val, batch_size, workers=workers, collate_fn=collate_detection),
            num_classes=config.nc,
            image_size=image_size,
            names=list(config.names),
        )

    def default_data(self, root: Path, *, train_images: int, val_images: int, image_size: int, seed: int) -> Path:
        """The digits detection set (sklearn's digits pasted on canvases), built under ``root``; its ``data.yaml``."""
        from ..data.digits import make_digits_detection

        return make_digits_detection(root, n_train=train_images, n_val=val_images, image_size=image_size, seed=seed)

    def check_model(self, model: nn.Module) -> None:
        detection_head_for(model)

    def loss(self, model: nn.Module) -> Loss:
        return detection_head_for(model).loss(model)

    def distillation_loss(self, model: nn.Module) -> Distillation:
        return detection_head_for(model).distillation_loss(model)

    def export_module(self, model: nn.Module) -> nn.Module:
        return detection_head_for(model).export_module(model)

    def prepare(self, model: nn.Module, data: TaskData) -> None:
        """Fit the head's priors to the training boxes before training from scratch.

        Sizes are the labels' normalised (w, h) times the input size: exact for square images, a
        close prior for others (priors only seed the regression).
        """
        head = detection_head_for(model)
        dataset = data.train.dataset
        base, indices = (dataset.dataset, dataset.indices) if isinstance(dataset, Subset) else (dataset, range(len(dataset)))
        labels = [base.labels[i][:, 3:5] for i in indices]
        head.prepare(model, np.concatenate(labels) * data.image_size if labels else np.zeros((0, 2)))

    @torch.no_grad()
    def evaluate(self, predict: Predict, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        head = detection_head_for(model)
        predictions, truths, num_classes = [], [], 1
        for images, targets in track(loader, "evaluating"):
            outputs = predict(images)
            outputs = [outputs] if isinstance(outputs, Tensor) else [torch.as_tensor(o) for o in outputs]
            decoded = head.decode(outputs, model)
            num_classes = max(decoded.shape[-1] - 5, 1)  # rows are (box, objectness, class probabilities)
            predictions += postprocess(decoded, multi_label=head.multi_label)
            truths += [targets_to_pixel_xyxy(targets[targets[:, 0] == b, 1:], images.shape[-1]) for b in range(images.shape[0])]
        metrics = evaluate_detections(predictions, truths, num_classes)
        return {"map50": float(metrics.map50), "map50_95": float(metrics.map50_95)}
