"""Distillation: each task's term is zero for a student equal to its teacher and pulls a different one towards it;
training with it narrows the student-teacher gap on fresh inputs; the student's state dict keeps its keys; the
build's fine-tune and QAT stages distil with --distill (at the stage level: a whole build spends most of its time
profiling, which distillation does not touch)."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from torch import nn

import edgecompress as ec
from edgecompress.errors import EdgeCompressError
from edgecompress.models import YoloV8, build_model
from edgecompress.pipeline import BuildConfig, Run, _fingerprint, run_stage
from edgecompress.stages import STAGE_NAMES, STAGES
from edgecompress.tasks import Task, get_task
from edgecompress.train import TrainConfig, distilling, fit
from edgecompress.train.distill import binary_kl, softmax_kl

from ..reliability.conftest import one_line_error, refusal, write_tiny_project


def _classifier(seed: int = 0, classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, stride=2, padding=1),
                         nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes))


def _yolo_mbv2(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("yolo-mbv2", num_classes=5)


def _yolov8n(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return YoloV8(5, "n", image_size=64)


# (task, model builder, input size)
CASES = {"classify": ("classify", _classifier, 16), "yolo-mbv2": ("detect", _yolo_mbv2, 64), "yolov8n": ("detect", _yolov8n, 64)}


def test_the_divergences_are_zero_on_equal_logits_and_match_their_definitions():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 7, generator=g), torch.randn(6, 7, generator=g)
    assert torch.equal(softmax_kl(teacher, teacher, temperature=3.0), torch.zeros(6))
    assert torch.equal(binary_kl(teacher, teacher), torch.zeros(6, 7))
    p, q = teacher.div(2).softmax(-1), student.div(2).softmax(-1)
    torch.testing.assert_close(softmax_kl(student, teacher, temperature=2.0), 4 * (p * (p / q).log()).sum(-1))
    p, q = teacher.sigmoid(), student.sigmoid()
    torch.testing.assert_close(binary_kl(student, teacher), p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log())


@pytest.mark.parametrize("case", list(CASES))
def test_a_task_distillation_term_is_zero_for_the_teacher_itself_and_pulls_another_student(case):
    task_name, make, size = CASES[case]
    task = get_task(task_name)
    teacher, student = make(0).eval(), make(1).eval()
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    distillation = task.distillation_loss(student)
    with torch.no_grad():
        taught = teacher(images)
    same = copy.deepcopy(teacher)
    assert distillation(same(images), taught).item() == 0.0  # exactly, not nearly
    loss = distillation(student(images), taught)
    loss.backward()
    assert loss.item() > 0
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0


def test_a_task_without_a_distillation_term_refuses_distill():
    class Counting(Task):
        name = "counting"

        def load(self, data, image_size, batch_size, limit=None):
            raise NotImplementedError

        def loss(self, model):
            return nn.functional.mse_loss

        def evaluate(self, predict, model, loader):
            return {}

    with pytest.raises(EdgeCompressError, match="task counting has no distillation loss; build with --no-distill"):
        Counting().distillation_loss(_classifier())


COLOUR_MIX = torch.randn(10, 3, generator=torch.Generator().manual_seed(123))


def _images(count: int, seed: int) -> torch.Tensor:
    """Smooth random 16 px images (4x4 noise, upsampled): varied colours for a CNN that averages its features."""
    noise = torch.rand(count, 3, 4, 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return nn.functional.interpolate(noise, size=16, mode="bilinear", align_corners=False)


def _labelled_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """192 images labelled by which of 10 fixed colour mixes their mean colour matches best: a rule the classifier can learn."""
    images = _images(192, seed=0)
    labels = (images.mean(dim=(2, 3)) @ COLOUR_MIX.T).argmax(dim=1)
    return [(images[i:i + 32], labels[i:i + 32]) for i in range(0, 192, 32)]


def _gap(student: nn.Module, teacher: nn.Module) -> float:
    """Mean KL(teacher || student) of the class distributions on fresh random images."""
    images = _images(256, seed=7)
    with torch.no_grad():
        return softmax_kl(student.eval()(images), teacher.eval()(images)).mean().item()


def _fine_tune(student: nn.Module, teacher: nn.Module | None, checkpoint=None) -> nn.Module:
    task, loader, config = get_task("classify"), _labelled_batches(), TrainConfig(epochs=8, lr=1e-2, warmup_steps=0)
    torch.manual_seed(0)
    if teacher is None:
        fit(student, loader, task.loss(student), config, checkpoint=checkpoint)
    else:
        with distilling(student, teacher, task.loss(student), task.distillation_loss(student)) as loss_fn:
            fit(student, loader, loss_fn, config, checkpoint=checkpoint)
    return student


def test_fine_tuning_with_distillation_narrows_the_gap_to_the_teacher_on_fresh_inputs(tmp_path):
    teacher = _classifier(0)
    fit(teacher, _labelled_batches(), get_task("classify").loss(teacher), TrainConfig(epochs=15, lr=1e-2, warmup_steps=0))
    pruned = ec.prune(copy.deepcopy(teacher), torch.rand(1, 3, 16, 16), ratio=0.25)
    teacher_state = copy.deepcopy(teacher.state_dict())
    plain, distilled = _fine_tune(copy.deepcopy(pruned), None), _fine_tune(copy.deepcopy(pruned), teacher, tmp_path / "checkpoint.pt")
    before, without, with_teacher = _gap(pruned, teacher), _gap(plain, teacher), _gap(distilled, teacher)
    assert with_teacher < 0.6 * without < 0.6 * before, (before, without, with_teacher)
    # the teacher is never trained, nor left in training mode
    assert all(torch.equal(value, teacher_state[key]) for key, value in teacher.state_dict().items()) and not teacher.training
    # the checkpoint and the trained model hold the student's own keys: nothing of the teacher, no wrapper prefix
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]
    assert list(saved) == list(distilled.state_dict()) == list(plain.state_dict())


def test_the_teacher_runs_only_in_the_block_and_only_for_training_forwards():
    calls = []
    teacher, student = _classifier(0), _classifier(1)
    teacher.register_forward_hook(lambda *args: calls.append(1))
    images = torch.rand(4, 3, 16, 16)
    task = get_task("classify")
    with distilling(student, teacher, task.loss(student), task.distillation_loss(student)) as loss_fn:
        student.eval()(images)
        assert not calls
        loss_fn(student.train()(images), torch.zeros(4, dtype=torch.long)).backward()
        assert calls == [1] and all(p.grad is None for p in teacher.parameters())
    student(images)
    assert calls == [1]


def _stages_up_to_qat(config: BuildConfig) -> Run:
    """The build's first five stages, as the pipeline runs them: a stage whose fingerprint is unchanged is reused."""
    config = config.resolved()
    config.check()
    run = Run(config)
    run.preflight()
    previous = ""
    for stage in STAGES[:STAGE_NAMES.index("qat") + 1]:
        previous = _fingerprint(stage, config, previous)
        run.manifests[stage.name] = run_stage(run, stage, previous, force=False)
    return run


def test_the_build_stages_distil_finetune_and_qat_and_keep_the_saved_keys(tmp_path):
    tiny_project = write_tiny_project(tmp_path)
    config = BuildConfig(target="cpu", task="classify", model=f"{tiny_project / 'tiny.py'}:tiny", data=str(tiny_project / "data"),
                         calib=str(tiny_project / "data" / "train"), image_size=16, batch_size=16, epochs=2, sparse_epochs=1,
                         finetune_epochs=1, qat_epochs=1, calib_images=32, runs_dir=str(tmp_path), name="d")
    plain = _stages_up_to_qat(config)
    keys = {stage: list(plain.load_stage_model(stage).state_dict()) for stage in ("prune", "finetune", "qat")}
    assert keys["finetune"] == keys["prune"]
    distilled = _stages_up_to_qat(replace(config, distill=True, distill_weight=2.0))
    for stage in ("baseline", "sparse", "prune"):  # the teacher and the student to be are the plain build's
        reused, first = distilled.manifests[stage], plain.manifests[stage]
        assert (reused["fingerprint"], reused["finished"]) == (first["fingerprint"], first["finished"])
    for stage in ("finetune", "qat"):
        manifest = distilled.manifests[stage]
        assert manifest["settings"]["distill"] is True and manifest["settings"]["distill_weight"] == 2.0
        assert manifest["fingerprint"] != plain.manifests[stage]["fingerprint"] and manifest["metrics"]["epochs"]
        assert list(distilled.load_stage_model(stage).state_dict()) == keys[stage]


def test_a_bad_distill_weight_is_refused_in_one_line():
    result = refusal("build", "--distill", "--distill-weight", "-1")
    assert "--distill-weight must be >= 0, got -1.0" in one_line_error(result)
