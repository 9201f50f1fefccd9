"""NMS against a brute-force reference written straight from the definition."""

import time

import torch

from edgecompress.eval import batched_nms, box_iou, nms


def _random_boxes(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    xy = torch.rand(count, 2, generator=generator) * 200
    wh = torch.rand(count, 2, generator=generator) * 60 + 2
    return torch.cat([xy, xy + wh], dim=1), torch.rand(count, generator=generator)


def _iou(a: list[float], b: list[float]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _reference_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: -scores[i].item())
    kept: list[int] = []
    for i in order:
        if all(_iou(boxes[i].tolist(), boxes[k].tolist()) <= threshold for k in kept):
            kept.append(i)
    return kept


def test_box_iou_matches_the_definition():
    a, _ = _random_boxes(7, 0)
    b, _ = _random_boxes(5, 1)
    expected = torch.tensor([[_iou(x.tolist(), y.tolist()) for y in b] for x in a])
    assert torch.allclose(box_iou(a, b), expected, atol=1e-6)


def test_nms_equals_brute_force():
    for seed, threshold in [(0, 0.3), (1, 0.5), (2, 0.7), (3, 0.0)]:
        boxes, scores = _random_boxes(150, seed)
        assert nms(boxes, scores, threshold).tolist() == _reference_nms(boxes, scores, threshold)


def test_batched_nms_suppresses_only_within_a_class():
    boxes, scores = _random_boxes(120, 4)
    classes = torch.randint(0, 3, (120,), generator=torch.Generator().manual_seed(5))
    kept = set(batched_nms(boxes, scores, classes, 0.4).tolist())
    expected = set()
    for c in range(3):
        index = torch.nonzero(classes == c).flatten()
        expected |= {index[i].item() for i in _reference_nms(boxes[index], scores[index], 0.4)}
    assert kept == expected
    assert len(kept) > len(nms(boxes, scores, 0.4))


def test_empty_and_identical_boxes():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0), 0.5).shape == (0,)
    same = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3)
    assert nms(same, torch.tensor([0.2, 0.9, 0.5]), 0.5).tolist() == [1]


def test_a_few_thousand_boxes_are_fast():
    boxes, scores = _random_boxes(3000, 6)
    classes = torch.randint(0, 80, (3000,), generator=torch.Generator().manual_seed(7))
    start = time.perf_counter()
    batched_nms(boxes, scores, classes, 0.5)
    assert time.perf_counter() - start < 1.0
