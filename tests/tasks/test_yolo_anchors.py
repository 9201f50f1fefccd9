"""The anchor-based YOLO head: assignment, loss, decoding, anchor fitting; and the shared NMS postprocess."""

import numpy as np
import pytest
import torch

from edgecompress import EdgeCompressError
from edgecompress.models import build_model
from edgecompress.tasks import YoloAnchorHead, detection_head_for, get_task
from edgecompress.tasks.detect import postprocess
from edgecompress.tasks.yolo_anchors import DetectionLoss, box_giou, decode, fit_anchors


def _targets():
    # (batch index, class, cx, cy, w, h), normalised
    return torch.tensor([[0, 3, 0.30, 0.40, 0.15, 0.20], [1, 7, 0.70, 0.60, 0.30, 0.35], [1, 1, 0.52, 0.20, 0.08, 0.12]])


def test_loss_is_finite_and_trains_every_head():
    torch.manual_seed(0)
    model = build_model("yolo-mbv2")
    loss = DetectionLoss(model)(model(torch.rand(2, 3, 128, 128)), _targets())
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    for head in (model.head8, model.head16, model.head32):
        assert head.predict.weight.grad.abs().sum() > 0


def test_assignment_places_targets_in_their_cells():
    model = build_model("yolo-mbv2")
    loss = DetectionLoss(model)
    anchors = model.anchors[0] / 8
    b, a, gy, gx, tbox, tcls = loss._assign(_targets(), anchors, 16, 16)
    first = (b == 0) & (tcls == 3)
    assert first.any()
    # the centre cell (0.30*16, 0.40*16) = (4.8, 6.4) is always among the assigned cells
    assert ((gx[first] == 4) & (gy[first] == 6)).any()
    assert (tbox[:, :2] > -0.5).all() and (tbox[:, :2] < 1.5).all()


def test_decode_inverts_the_parametrisation():
    model = build_model("yolo-mbv2")
    outputs = [torch.zeros(1, 45, 16, 16), torch.zeros(1, 45, 8, 8), torch.zeros(1, 45, 4, 4)]
    decoded = decode(outputs, model.anchors, model.strides)
    assert decoded.shape == (1, 3 * (256 + 64 + 16), 15)
    # sigmoid(0) = 0.5: centre at the cell centre, size equal to the anchor
    first = decoded[0, 0]
    torch.testing.assert_close(first[:2], torch.tensor([4.0, 4.0]))
    torch.testing.assert_close(first[2:4], model.anchors[0, 0])


def test_postprocess_keeps_confident_boxes_only():
    decoded = torch.zeros(1, 3, 15)
    decoded[0, :, :4] = torch.tensor([[20.0, 20, 10, 10], [21, 20, 10, 10], [80, 80, 12, 12]])
    decoded[0, :, 4] = torch.tensor([0.9, 0.8, 0.0001])
    decoded[0, :, 5 + 2] = 1.0
    (boxes,) = postprocess(decoded, conf_threshold=0.01)
    assert boxes.shape == (1, 6)  # the overlapping duplicate is suppressed, the unlikely box dropped
    torch.testing.assert_close(boxes[0, :4], torch.tensor([15.0, 15, 25, 25]))
    assert boxes[0, 5] == 2


def test_giou_of_identical_boxes_is_one():
    boxes = torch.tensor([[5.0, 5, 2, 3], [1, 1, 1, 1]])
    torch.testing.assert_close(box_giou(boxes, boxes), torch.ones(2), atol=1e-5, rtol=0)
    assert box_giou(boxes[:1], torch.tensor([[50.0, 50, 2, 3]])) < 0


def test_fit_anchors_sorted_by_area():
    rng = np.random.default_rng(0)
    sizes = np.concatenate([rng.normal(m, 1, size=(40, 2)) for m in (8, 12, 16, 20, 26, 32, 40, 48, 60)])
    anchors = fit_anchors(np.abs(sizes))
    areas = anchors.view(-1, 2).prod(dim=1)
    assert anchors.shape == (3, 3, 2) and torch.all(areas[1:] >= areas[:-1])


def test_prepare_fits_anchors_to_the_training_boxes(tmp_path):
    task = get_task("detect")
    data = task.load(task.default_data(tmp_path, train_images=8, val_images=2, image_size=128, seed=0), 128, batch_size=4)
    model = build_model("yolo-mbv2")
    before = model.anchors.clone()
    task.prepare(model, data)
    areas = model.anchors.view(-1, 2).prod(dim=1)
    assert not torch.equal(model.anchors, before) and torch.all(areas[1:] >= areas[:-1])


def test_the_head_is_picked_by_the_model_and_checks_its_anchors():
    model = build_model("yolo-mbv2")
    assert isinstance(detection_head_for(model), YoloAnchorHead)
    model.anchors = model.anchors[:2]
    with pytest.raises(EdgeCompressError, match=r"has anchors of shape \(2, 3, 2\) for 3 strides; the yolo-anchors head needs"):
        get_task("detect").check_model(model)
