"""Knowledge distillation while training: a frozen teacher runs on every batch its student trains on, and a
distillation term (the student's outputs against the teacher's) is added to the task loss.

:func:`fit` is used as it is. While :func:`distilling` is active, a forward pre-hook on the student runs the
teacher on the same input (eval mode, no gradient, on the input's device and, under ``amp``, inside the same
autocast), and the loss it yields adds ``weight * distillation(student outputs, teacher outputs)``. The student
module itself is untouched, so its state dict, in checkpoints and in the saved model, has the same keys as
without distillation; under DistributedDataParallel the hook fires inside the wrapped module's forward.

The divergences the tasks build their distillation terms from are here: :func:`softmax_kl` (Hinton et al. 2015,
with temperature) and :func:`binary_kl` (per sigmoid output, for detectors' class and objectness scores). Both
are exactly zero when the student's logits equal the teacher's.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..helpers import evaluating, model_device
from .device import map_tensors
from .loop import LossFn

DistillationFn = Callable[[Any, Any], Tensor]
"""``distillation(student_outputs, teacher_outputs) -> scalar``: zero when the two are equal."""


def softmax_kl(student: Tensor, teacher: Tensor, *, dim: int = -1, temperature: float = 1.0) -> Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) along ``dim`` (reduced; the other dims kept), times T^2, which keeps
    the gradients' scale as T changes (Hinton et al. 2015)."""
    log_student, log_teacher = F.log_softmax(student / temperature, dim=dim), F.log_softmax(teacher / temperature, dim=dim)
    return F.kl_div(log_student, log_teacher, reduction="none", log_target=True).sum(dim=dim) * temperature**2


def binary_kl(student: Tensor, teacher: Tensor) -> Tensor:
    """Elementwise KL between the Bernoulli distributions of two logit tensors, sigmoid(teacher) || sigmoid(student): the
    soft-target binary cross-entropy less the teacher's entropy, so it is zero where they agree. Its gradient in the
    student's logit is sigmoid(student) - sigmoid(teacher)."""
    p = torch.sigmoid(teacher)
    return p * (F.logsigmoid(teacher) - F.logsigmoid(student)) + (1 - p) * (F.logsigmoid(-teacher) - F.logsigmoid(-student))


class TeacherOutputs:
    """The teacher's outputs on the input of the student's latest training forward, computed by a forward pre-hook."""

    def __init__(self, teacher: nn.Module):
        self.teacher = teacher
        self._outputs: Any = None

    def hook(self, student: nn.Module, args: tuple) -> None:
        """Forward pre-hook of the student: run the teacher on the student's input (on its device), in eval mode, without gradients."""
        if not student.training:  # evaluation of the student needs no teacher
            return
        inputs = args[0]
        if model_device(self.teacher) != inputs.device:
            self.teacher.to(inputs.device)
        with evaluating(self.teacher):
            self._outputs = self.teacher(*args)

    def take(self) -> Any:
        """The outputs of the latest training forward, each once, as float32 (a teacher under autocast returns half precision)."""
        if self._outputs is None:
            raise RuntimeError("the distillation loss was called without a training forward of the student before it")
        outputs, self._outputs = self._outputs, None
        return map_tensors(outputs, lambda tensor: tensor.float() if tensor.is_floating_point() else tensor)


class DistillationLoss:
    """``task_loss(outputs, targets) + weight * distillation(outputs, teacher's outputs on the same batch)``."""

    def __init__(self, task_loss: LossFn, distillation: DistillationFn, teacher_outputs: TeacherOutputs, weight: float):
        self.task_loss, self.distillation, self.teacher_outputs, self.weight = task_loss, distillation, teacher_outputs, weight

    def __call__(self, outputs: Any, targets: Any) -> Tensor:
        return self.task_loss(outputs, targets) + self.weight * self.distillation(outputs, self.teacher_outputs.take())


@contextmanager
def distilling(student: nn.Module, teacher: nn.Module, task_loss: LossFn, distillation: DistillationFn,
               weight: float = 1.0) -> Iterator[DistillationLoss]:
    """Within the block, every training-mode forward of ``student`` also runs ``teacher`` on the same input; yields the loss
    to train ``student`` with (e.g. by :func:`~edgecompress.train.fit`). The teacher is never trained: it runs in eval
    mode without gradients, its own modes restored after each call."""
    outputs = TeacherOutputs(teacher)
    handle = student.register_forward_pre_hook(outputs.hook)
    try:
        yield DistillationLoss(task_loss, distillation, outputs, weight)
    finally:
        handle.remove()


__all__ = ["DistillationFn", "DistillationLoss", "TeacherOutputs", "binary_kl", "distilling", "softmax_kl"]
