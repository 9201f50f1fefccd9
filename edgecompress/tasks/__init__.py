"""What differs between detection and classification: data, loss, metrics. A registry keyed by task name.

A task turns a data spec into loaders, gives the loss the training engine minimises and evaluates a
prediction function (a PyTorch module or an onnxruntime session) on the validation set, so the
same metric is measured before and after every stage and on the exported ONNX.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from .errors import EdgeCompressError

Predict = Callable[[Tensor], object]


@dataclass
class TaskData:
    """Loaders and facts of a dataset."""

    train: DataLoader
    val: DataLoader
    num_classes: int
    image_size: int
    names: list[str]


def _limit(dataset: Dataset, limit: int | None) -> Dataset:
    """At most ``limit`` samples, evenly spread (an ImageFolder is sorted by class)."""
    if not limit or limit >= len(dataset):
        return dataset
    return Subset(dataset, np.linspace(0, len(dataset) - 1, limit).round().astype(int).tolist())


class Task(Protocol):
    name: str
    primary_metric: str

    def load(self, data: Path, image_size: int, batch_size: int, limit: int | None = None) -> TaskData: ...
    def loss(self, model: nn.Module) -> Callable[[object, Tensor], Tensor]: ...
    def prepare(self, model: nn.Module, data: TaskData) -> None: ...
    def evaluate(self, predict: Predict, model: nn.Module, loader: DataLoader) -> dict[str, float]: ...


class DetectionTask:
    """YOLO detection on a dataset in the Ultralytics layout (``data.yaml``); metric: COCO mAP."""

    name = "detect"
    primary_metric = "map50"

    def load(self, data: Path, image_size: int, batch_size: int, limit: int | None = None) -> TaskData:
        from .data.yolo import YoloDetectionDataset, collate_detection, load_data_yaml

        config = load_data_yaml(data)
        train = _limit(YoloDetectionDataset.from_config(config, "train", image_size, augment=True), limit)
        val = _limit(YoloDetectionDataset.from_config(config, "val", image_size), limit and max(limit // 4, 8))
        generator = torch.Generator().manual_seed(0)
        return TaskData(
            train=DataLoader(train, batch_size, shuffle=True, collate_fn=collate_detection, generator=generator, drop_last=len(train) > batch_size),
            val=DataLoader(val, batch_size, collate_fn=collate_detection),
            num_classes=config.nc,
            image_size=image_size,
            names=list(config.names),
        )

    def loss(self, model: nn.Module):
        from .train.detection import DetectionLoss

        _require_detector(model)
        return DetectionLoss(model)

    def prepare(self, model: nn.Module, data: TaskData) -> None:
        """Fit k-means anchors to the training boxes before training from scratch.

        Sizes are the labels' normalised (w, h) times the input size: exact for square images, a
        close prior for others (anchors only seed the regression).
        """
        from .train.detection import fit_anchors

        _require_detector(model)
        dataset = data.train.dataset
        base, indices = (dataset.dataset, dataset.indices) if isinstance(dataset, Subset) else (dataset, range(len(dataset)))
        labels = [base.labels[i][:, 3:5] for i in indices]
        sizes = np.concatenate(labels) * data.image_size if labels else np.zeros((0, 2))
        if len(sizes) >= model.anchors.numel() // 2:
            model.anchors.copy_(fit_anchors(sizes, *model.anchors.shape[:2]))

    @torch.no_grad()
    def evaluate(self, predict: Predict, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        from .eval import evaluate_detections, targets_to_pixel_xyxy
        from .train.detection import decode, postprocess

        predictions, truths = [], []
        for images, targets in loader:
            outputs = [torch.as_tensor(o) for o in predict(images)]
            predictions += postprocess(decode(outputs, model.anchors, tuple(model.strides)))
            truths += [targets_to_pixel_xyxy(targets[targets[:, 0] == b, 1:], images.shape[-1]) for b in range(images.shape[0])]
        metrics = evaluate_detections(predictions, truths, model.num_classes)
        return {"map50": float(metrics.map50), "map50_95": float(metrics.map50_95)}


def _require_detector(model: nn.Module) -> None:
    missing = [a for a in ("anchors", "strides", "num_classes") if not hasattr(model, a)]
    if missing:
        raise EdgeCompressError(
            f"model {type(model).__name__} is not a YOLO detector (no {', '.join(missing)}); use --task classify or a detector like the zoo's yolo-mbv2"
        )


class ClassificationTask:
    """Image classification on an ImageFolder layout; metric: top-1 accuracy."""

    name = "classify"
    primary_metric = "top1"

    def load(self, data: Path, image_size: int, batch_size: int, limit: int | None = None) -> TaskData:
        from .data.imagefolder import ImageFolderDataset

        root = Path(data)
        train_dir, val_dir = root / "train", root / "val"
        if not train_dir.is_dir() or not val_dir.is_dir():
            raise EdgeCompressError(f"{root} needs train/ and val/ folders of class sub-folders (ImageFolder layout)")
        train = ImageFolderDataset(train_dir, image_size, augment=True)
        val = ImageFolderDataset(val_dir, image_size)
        generator = torch.Generator().manual_seed(0)
        return TaskData(
            train=DataLoader(_limit(train, limit), batch_size, shuffle=True, generator=generator),
            val=DataLoader(_limit(val, limit), batch_size),
            num_classes=len(train.classes),
            image_size=image_size,
            names=list(train.classes),
        )

    def loss(self, model: nn.Module):
        return lambda logits, labels: F.cross_entropy(torch.as_tensor(logits), labels)

    def prepare(self, model: nn.Module, data: TaskData) -> None:
        """Nothing to fit before training a classifier."""

    @torch.no_grad()
    def evaluate(self, predict: Predict, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        from .eval import classification_accuracy

        logits, labels = [], []
        for images, batch_labels in loader:
            output = predict(images)
            logits.append(torch.as_tensor(output[0] if isinstance(output, (list, tuple)) else output))
            labels.append(batch_labels)
        return {"top1": classification_accuracy(torch.cat(logits), torch.cat(labels))}


TASKS: dict[str, Task] = {"detect": DetectionTask(), "classify": ClassificationTask()}


def get_task(name: str) -> Task:
    """Look a task up by name."""
    if name not in TASKS:
        raise EdgeCompressError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def torch_predict(model: nn.Module) -> Predict:
    """Prediction function of a PyTorch module in eval mode."""
    model.eval()
    return lambda images: model(images)


def onnx_predict(path: Path) -> Predict:
    """Prediction function of an ONNX model run by onnxruntime on the CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return lambda images: session.run(None, {input_name: images.numpy()})
