"""COCO mAP on hand-built cases whose answer is known."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from edgecompress.eval import classification_accuracy, evaluate_classification, evaluate_detections, targets_to_pixel_xyxy


def _targets(seed: int, images: int = 6) -> list[torch.Tensor]:
    """Per image 1-5 boxes (cls, x1, y1, x2, y2) of 3 classes, in a 320 px frame."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(images):
        count = int(torch.randint(1, 6, (1,), generator=generator))
        xy = torch.rand(count, 2, generator=generator) * 250
        wh = torch.rand(count, 2, generator=generator) * 50 + 10
        cls = torch.randint(0, 3, (count, 1), generator=generator).float()
        out.append(torch.cat([cls, xy, xy + wh], dim=1))
    return out


def _as_predictions(targets: list[torch.Tensor], score: float = 0.9) -> list[torch.Tensor]:
    return [torch.cat([t[:, 1:], torch.full((len(t), 1), score), t[:, :1]], dim=1) for t in targets]


def test_perfect_predictions_score_one():
    targets = _targets(0)
    metrics = evaluate_detections(_as_predictions(targets), targets, num_classes=3)
    assert metrics.map50 == pytest.approx(1.0) and metrics.map50_95 == pytest.approx(1.0)
    assert set(metrics.ap50_per_class) <= {0, 1, 2} and all(type(k) is int for k in metrics.ap50_per_class)
    assert all(v == pytest.approx(1.0) for v in metrics.ap50_per_class.values())


def test_disjoint_or_wrong_class_predictions_score_zero():
    targets = _targets(1)
    far = [p.clone() for p in _as_predictions(targets)]
    for p in far:
        p[:, :4] += 1000
    assert evaluate_detections(far, targets, 3).map50 == 0.0
    wrong = [p.clone() for p in _as_predictions(targets)]
    for p in wrong:
        p[:, 5] = (p[:, 5] + 1) % 3
    assert evaluate_detections(wrong, targets, 3).map50_95 == 0.0


def test_half_recall_gives_half_ap():
    targets = [torch.tensor([[0, 10, 10, 50, 50], [0, 100, 100, 150, 150.0]]) for _ in range(4)]
    predictions = [torch.tensor([[10, 10, 50, 50, 0.9, 0.0]]) for _ in range(4)]
    # precision 1 up to recall 0.5, nothing after: 51 of COCO's 101 recall points
    assert evaluate_detections(predictions, targets, 1).map50 == pytest.approx(51 / 101, abs=1e-6)


def test_loose_boxes_pass_iou_half_but_not_strict_thresholds():
    targets = [torch.tensor([[0, 0, 0, 100, 100.0]])]
    predictions = [torch.tensor([[0, 0, 100, 62, 0.8, 0.0]])]  # IoU 0.62: matches at 0.50, 0.55, 0.60
    metrics = evaluate_detections(predictions, targets, 1)
    assert metrics.map50 == pytest.approx(1.0) and metrics.map50_95 == pytest.approx(0.3)


def test_false_positives_on_images_without_targets_lower_the_score():
    targets = _targets(2) + [torch.zeros(0, 5)]
    predictions = _as_predictions(targets[:-1], score=0.5)
    clean = evaluate_detections(predictions + [torch.zeros(0, 6)], targets, 3)
    noisy = evaluate_detections(predictions + [torch.tensor([[5, 5, 40, 40, 0.99, 0.0]])], targets, 3)
    assert clean.map50 == pytest.approx(1.0) and 0.0 < noisy.map50 < clean.map50


def test_nothing_to_compare_gives_zero():
    targets = _targets(3)
    assert evaluate_detections([torch.zeros(0, 6)] * len(targets), targets, 3).map50 == 0.0
    empty = [torch.zeros(0, 5)] * 2
    assert evaluate_detections(_as_predictions(_targets(4, images=2)), empty, 3).map50_95 == 0.0


def test_targets_to_pixel_xyxy():
    normalised = torch.tensor([[4.0, 0.5, 0.25, 0.2, 0.1]])
    assert torch.allclose(targets_to_pixel_xyxy(normalised, 200), torch.tensor([[4.0, 80.0, 40.0, 120.0, 60.0]]))


def test_classification_accuracy_and_model_evaluation():
    generator = torch.Generator().manual_seed(0)
    inputs, labels = torch.randn(50, 8, generator=generator), torch.randint(0, 4, (50,), generator=generator)
    model = nn.Linear(8, 4)
    expected = classification_accuracy(model(inputs), labels)
    assert expected == pytest.approx((model(inputs).argmax(1) == labels).float().mean().item())
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=16)
    assert evaluate_classification(model, loader) == pytest.approx(expected)
