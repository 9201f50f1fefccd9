"""The anchor-free head: family matching, box encoding and decoding, the task-aligned assigner, training,
the deployed ONNX layout, and a quick build of the zoo's yolov8n through every stage."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import edgecompress as ec
from edgecompress import EdgeCompressError
from edgecompress.export import export_onnx, verify_onnx
from edgecompress.models import YoloV8, build_model
from edgecompress.pipeline import BuildConfig
from edgecompress.quant import calibrate, quantize_model, quantizers
from edgecompress.tasks import AnchorFreeHead, detection_head_for, get_task
from edgecompress.tasks.anchor_free import DecodedOutput, decode_maps
from edgecompress.tasks.anchor_free_boxes import anchor_points, box_ciou, box_iou, boxes_to_distances
from edgecompress.tasks.anchor_free_loss import AnchorFreeLoss, TaskAlignedAssigner, padded_targets

REG_MAX, STRIDES = 16, (8, 16, 32)


def _yolov8n(num_classes: int = 3) -> YoloV8:
    torch.manual_seed(0)
    return YoloV8(num_classes, "n", image_size=64)


def test_each_head_reads_only_its_own_family():
    assert isinstance(detection_head_for(build_model("yolov8n", 5)), AnchorFreeHead)
    assert detection_head_for(build_model("yolo-mbv2", 5)).name == "yolo-anchors"
    head = AnchorFreeHead()
    assert not head.matches(build_model("yolo-mbv2", 5)) and "anchor-based" in head.mismatch(build_model("yolo-mbv2", 5))
    model = _yolov8n()
    model.reg_max = 1.5
    with pytest.raises(EdgeCompressError, match="int reg_max >= 2"):
        detection_head_for(model)


def _two_hot_logits(distances: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Logits whose softmax puts the weight of each distance on its two neighbouring bins (the DFL target)."""
    left = distances.floor().long()
    weights = F.one_hot(left, reg_max) * (left + 1 - distances)[..., None] + F.one_hot(left + 1, reg_max) * (distances - left)[..., None]
    return (weights + 1e-12).log()


def test_decoding_inverts_the_encoding_of_boxes_level_by_level():
    size, classes, batch = 96, 2, 2
    shapes = [(size // s, size // s) for s in STRIDES]
    points, strides = anchor_points(shapes, STRIDES)
    generator = torch.Generator().manual_seed(0)
    distances = torch.rand(batch, len(points), 4, generator=generator) * (REG_MAX - 1.01)  # strides, within the bins
    boxes = torch.cat([points - distances[..., :2], points + distances[..., 2:]], dim=-1) * strides  # pixels
    encoded = boxes_to_distances(points, boxes / strides)  # what the loss trains the bins towards
    torch.testing.assert_close(encoded, distances, atol=1e-4, rtol=0)
    logits = _two_hot_logits(encoded, REG_MAX).flatten(2)  # [B, N, 4 * reg_max], left/top/right/bottom
    class_logits = torch.randn(batch, len(points), classes, generator=generator)
    rows = torch.cat([logits, class_logits], dim=-1).transpose(1, 2)
    maps, start = [], 0
    for h, w in shapes:
        maps.append(rows[:, :, start:start + h * w].reshape(batch, -1, h, w))
        start += h * w
    model = type("Contract", (), {"num_classes": classes, "reg_max": REG_MAX, "strides": STRIDES})()
    decoded = AnchorFreeHead().decode(maps, model)
    centre, wh = (boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]
    torch.testing.assert_close(decoded[..., :4], torch.cat([centre, wh], dim=-1), atol=1e-3, rtol=0)
    assert (decoded[..., 4] == 1).all()
    torch.testing.assert_close(decoded[..., 5:], class_logits.sigmoid())
    torch.testing.assert_close(AnchorFreeHead().decode([decode_maps(maps, REG_MAX, STRIDES)], model), decoded)  # the deployed layout


def test_the_assigner_takes_the_best_aligned_points_inside_each_box():
    points, strides = anchor_points([(8, 8), (4, 4), (2, 2)], STRIDES)
    pixels = points * strides
    targets = torch.tensor([[0, 1, 0.30, 0.30, 0.25, 0.30], [0, 2, 0.70, 0.65, 0.40, 0.35], [1, 0, 0.5, 0.5, 0.6, 0.6]])
    labels, gt_boxes, mask = padded_targets(targets, 2, 64, 64)
    assert mask.tolist() == [[True, True], [True, False]] and labels.tolist() == [[1, 2], [0, 0]]
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(2, len(points), 3, generator=generator)
    jitter = torch.randn(2, len(points), 4, generator=generator) * 4
    pred = torch.cat([pixels - 12, pixels + 12], dim=-1) + jitter
    assigner = TaskAlignedAssigner(top_k=5)
    assigned = assigner(scores, pred, pixels, labels, gt_boxes, mask)
    for b in range(2):
        fg = assigned.foreground[b]
        assert (boxes_to_distances(pixels[fg], assigned.boxes[b, fg]).amin(dim=-1) > 0).all()  # every positive lies inside its box
        for box, label in zip(gt_boxes[b][mask[b]], labels[b][mask[b]]):
            mine = fg & (assigned.boxes[b] == box).all(dim=-1)
            assert 1 <= mine.sum() <= 5
            # soft targets on the box's class only; the best aligned point gets the box's best IoU
            assert (assigned.scores[b, mine].argmax(dim=-1) == label).all()
            best_iou = box_iou(box, pred[b, mine]).max()
            torch.testing.assert_close(assigned.scores[b, mine, label].max(), best_iou)
    assert assigned.scores[~assigned.foreground].abs().sum() == 0


def test_ciou_is_iou_for_equal_centres_and_shapes_and_penalises_distance():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    torch.testing.assert_close(box_ciou(a, a), torch.ones(1))
    shifted = box_ciou(a, a + torch.tensor([20.0, 0.0, 20.0, 0.0]))
    assert shifted < 0  # no overlap and a centre distance: below zero, as DIoU/CIoU are


def _digits(tmp_path, count: int, size: int = 64):
    task = get_task("detect")
    path = task.default_data(tmp_path / "digits", train_images=count, val_images=4, image_size=size, seed=0)
    return task.load(path, size, batch_size=count)


def test_the_loss_decreases_on_a_few_digits_images(tmp_path):
    data = _digits(tmp_path, 4)
    images, targets = next(iter(data.train))
    model = _yolov8n(num_classes=10)
    loss_fn = get_task("detect").loss(model)
    assert isinstance(loss_fn, AnchorFreeLoss)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(20):
        loss = loss_fn(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and np.mean(losses[-3:]) < 0.6 * losses[0], losses
    terms = loss_fn.terms(model(images), targets)
    assert all(terms[name] > 0 for name in ("box", "cls", "dfl"))
    empty = loss_fn(model(images), torch.zeros(0, 6))  # images without objects: only the class term
    assert torch.isfinite(empty)


def test_the_exported_model_keeps_the_ultralytics_layout_and_matches_torch(tmp_path):
    model = _yolov8n().eval()
    exported = get_task("detect").export_module(model)
    assert isinstance(exported, DecodedOutput)
    assert get_task("detect").export_module(build_model("yolo-mbv2", 3)).__class__.__name__ == "YoloMobileNetV2"
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    path = export_onnx(exported, x, tmp_path / "yolov8n.onnx", opset=13)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    fresh = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2
    (got,) = session.run(None, {session.get_inputs()[0].name: fresh.numpy()})
    with torch.no_grad():
        want = exported(fresh)
    assert got.shape == (2, 4 + 3, 8 * 8 + 4 * 4 + 2 * 2)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-3, rtol=1e-4)
    assert verify_onnx(exported, path, (1, 3, 64, 64)).max_rel_error < 1e-4


def test_an_int8_export_quantizes_the_network_and_decodes_in_float(tmp_path):
    model = _yolov8n().eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    quantized = quantize_model(model, x)
    calibrate(quantized, [torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))], method="max")
    exported = get_task("detect").export_module(quantized)
    assert set(quantizers(exported)) == {f"model.{name}" for name in quantizers(quantized)}  # none in the decoding
    path = export_onnx(exported, x, tmp_path / "int8.onnx", int8=True, opset=13)
    report = verify_onnx(exported, path, (1, 3, 64, 64), optimized=False)
    assert report.mismatched_fraction < 0.01
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.shape[1:] for o in session.get_outputs()] == [[4 + 3, 8 * 8 + 4 * 4 + 2 * 2]]  # static but for the batch


def test_a_quick_build_of_yolov8n_runs_every_stage(tmp_path):
    config = BuildConfig(model="yolov8n", target="cpu", quick=True, image_size=64, train_images=32, val_images=8, calib_images=8,
                         profile_runs=3, runs_dir=str(tmp_path), name="yolov8n")
    run_dir = ec.build(config)
    manifests = {stage: json.loads((run_dir / stage / "manifest.json").read_text())
                 for stage in ("baseline", "sparse", "prune", "finetune", "qat", "export", "engine", "report")}
    assert all(m["status"] == "done" for m in manifests.values())
    export = manifests["export"]["metrics"]
    assert export["baseline"]["max_rel_error"] < 1e-3 and export["pruned"]["max_rel_error"] < 1e-3
    assert export["int8"]["qdq"]["conv_quantized"] > 0
    session = ort.InferenceSession(str(run_dir / "export" / "int8.onnx"), providers=["CPUExecutionProvider"])
    assert [o.shape[1:] for o in session.get_outputs()] == [[4 + 10, 8 * 8 + 4 * 4 + 2 * 2]]
    report = json.loads((run_dir / "report.json").read_text())
    rows = {row["model"]: row for row in report["models"]}
    assert rows["pruned"]["macs"] < rows["baseline"]["macs"]
    pruned = ec.load_model(run_dir / "finetune" / "model.pt")
    assert {pruned.get_submodule(name).out_channels for name in pruned.prediction_layers()} == {4 * REG_MAX, 10}  # outputs kept whole
    float_by_default = manifests["qat"]["metrics"]["float_by_default"]
    assert sorted(float_by_default) == sorted(pruned.prediction_layers())  # kept float by default, and the report says so
    assert "6 prediction convs kept in float by default" in (run_dir / "report.md").read_text()


def test_evaluation_counts_every_class_above_the_threshold_as_ultralytics_val_does():
    from edgecompress.tasks.detect import postprocess

    row = torch.tensor([[[32.0, 32.0, 10.0, 10.0, 1.0, 0.6, 0.3, 0.0005]]])  # one box, two classes above 0.001
    single, multi = postprocess(row)[0], postprocess(row, multi_label=True)[0]
    assert single[:, 5].tolist() == [0.0] and sorted(multi[:, 5].tolist()) == [0.0, 1.0]
    assert torch.allclose(multi[:, 4].sort(descending=True).values, torch.tensor([0.6, 0.3]))
    assert AnchorFreeHead.multi_label and not detection_head_for(build_model("yolo-mbv2")).multi_label
