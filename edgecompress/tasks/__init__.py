"""Tasks by name: each owns its data loading, model contract, loss, metric and bundled dataset.

The rest of the library asks a task (``get_task(name)``) instead of comparing task names. A new task
is a :class:`Task` subclass and one :func:`register_task` call; a new detector family is a
:class:`DetectionHead` subclass and one :func:`register_detection_head` call.
"""

from __future__ import annotations

from ..errors import EdgeCompressError
from ..eval.predict import Predict, onnx_predict, torch_predict
from .base import Loss, Task, TaskData
from .classify import ClassificationTask
from .detect import DETECTION_HEADS, DetectionHead, DetectionTask, detection_head_for, postprocess, register_detection_head
from .anchor_free import AnchorFreeHead
from .yolo_anchors import YoloAnchorHead

TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add ``task`` under ``task.name`` (replacing a task of the same name); returns it."""
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """Look a task up by name."""
    if name not in TASKS:
        raise EdgeCompressError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


register_task(DetectionTask())
register_task(ClassificationTask())
register_detection_head(YoloAnchorHead())
register_detection_head(AnchorFreeHead())

__all__ = [
    "AnchorFreeHead",
    "DETECTION_HEADS",
    "TASKS",
    "ClassificationTask",
    "DetectionHead",
    "DetectionTask",
    "Loss",
    "Predict",
    "Task",
    "TaskData",
    "YoloAnchorHead",
    "detection_head_for",
    "get_task",
    "onnx_predict",
    "postprocess",
    "register_detection_head",
    "register_task",
    "torch_predict",
]
