"""The task and detection-head registries: registering, finding by name, and one-line errors."""

import pytest
import torch
from torch import nn

from edgecompress import EdgeCompressError
from edgecompress.tasks import (
    DETECTION_HEADS,
    TASKS,
    DetectionHead,
    Task,
    TaskData,
    get_task,
    register_detection_head,
    register_task,
    torch_predict,
)

NUM_CLASSES = 3
IMAGE_SIZE = 32


@pytest.fixture(autouse=True)
def restore_registries():
    tasks, heads = dict(TASKS), dict(DETECTION_HEADS)
    yield
    TASKS.clear()
    TASKS.update(tasks)
    DETECTION_HEADS.clear()
    DETECTION_HEADS.update(heads)


class CountPixels(Task):
    name = "count-pixels"
    primary_metric = "error"

    def load(self, data, image_size, batch_size, limit=None, *, augment="light", seed=0) -> TaskData:
        raise NotImplementedError

    def loss(self, model):
        return lambda outputs, targets: (outputs - targets).abs().mean()

    def evaluate(self, predict, model, loader):
        return {"error": sum(float((predict(x) - y).abs().mean()) for x, y in loader)}


class ToyDetector(nn.Module):
    """Outputs already-decoded boxes: the extent of the lit pixels, its class the lit channel, shifted by ``shift`` pixels."""

    toy_head = True

    def __init__(self, shift: float = 0.0):
        super().__init__()
        self.shift = shift

    def forward(self, images):
        rows = []
        for image in images:
            ys, xs = torch.nonzero(image.sum(0) > 0, as_tuple=True)
            w, h = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
            box = torch.stack([xs.min() + w / 2 + self.shift, ys.min() + h / 2, w, h]).float()
            probs = (image.amax(dim=(1, 2)) > 0).float()
            rows.append(torch.cat([box, torch.ones(1), probs]))
        return [torch.stack(rows)[:, None]]  # [B, 1, 5 + C]


class ToyHead(DetectionHead):
    name = "toy"
    requires = ("toy_head",)

    def loss(self, model):
        return lambda outputs, targets: outputs[0].sum() * 0

    def decode(self, outputs, model):
        return outputs[0]


def _squares_loader(batches: int = 3, batch_size: int = 4):
    """Batches of one lit square per image, class = its channel; targets (batch index, class, cx, cy, w, h) normalised."""
    generator = torch.Generator().manual_seed(0)
    loader = []
    for _ in range(batches):
        images, targets = torch.zeros(batch_size, NUM_CLASSES, IMAGE_SIZE, IMAGE_SIZE), []
        for b in range(batch_size):
            cls, size = (int(v) for v in (torch.randint(NUM_CLASSES, (1,), generator=generator), torch.randint(6, 14, (1,), generator=generator)))
            x0, y0 = (int(v) for v in torch.randint(0, IMAGE_SIZE - size, (2,), generator=generator))
            images[b, cls, y0 : y0 + size, x0 : x0 + size] = 1
            targets.append([b, cls, (x0 + size / 2) / IMAGE_SIZE, (y0 + size / 2) / IMAGE_SIZE, size / IMAGE_SIZE, size / IMAGE_SIZE])
        loader.append((images, torch.tensor(targets)))
    return loader


def test_a_registered_task_is_found_by_name():
    task = register_task(CountPixels())
    assert get_task("count-pixels") is task
    loader = [(torch.ones(2, 3), torch.zeros(2, 3))]
    assert task.evaluate(lambda x: x, None, loader) == {"error": 1.0}
    assert task.loss(None)(torch.ones(2), torch.zeros(2)) == 1


def test_unknown_task_is_a_one_line_error_listing_the_choices():
    with pytest.raises(EdgeCompressError, match=r"unknown task 'segment'; choose one of detect, classify$") as error:
        get_task("segment")
    assert "\n" not in str(error.value)


def test_a_registered_detection_head_decodes_for_the_detect_task():
    register_detection_head(ToyHead())
    task, loader = get_task("detect"), _squares_loader()
    task.check_model(ToyDetector())
    exact = task.evaluate(torch_predict(ToyDetector()), ToyDetector(), loader)
    assert exact == {"map50": pytest.approx(1.0), "map50_95": pytest.approx(1.0)}
    shifted = task.evaluate(torch_predict(ToyDetector(shift=1.5)), ToyDetector(), loader)
    assert shifted["map50"] == pytest.approx(1.0) and 0.2 < shifted["map50_95"] < 1.0


def test_a_model_no_head_reads_is_a_one_line_error_naming_what_it_lacks():
    register_detection_head(ToyHead())
    task, model = get_task("detect"), nn.Sequential(nn.Conv2d(3, 8, 3))
    expected = (r"model Sequential is not a YOLO detector \(no anchors, strides, num_classes for the yolo-anchors head; "
                r"no num_classes, reg_max, strides for the anchor-free head; no toy_head for the toy head\)")
    for call in (task.check_model, task.loss, lambda m: task.evaluate(torch_predict(m), m, _squares_loader(1))):
        with pytest.raises(EdgeCompressError, match=expected) as error:
            call(model)
        assert "\n" not in str(error.value) and "--task classify" in str(error.value)


def test_tasks_without_bundled_data_ask_for_data(tmp_path):
    with pytest.raises(EdgeCompressError, match="task classify has no bundled dataset; pass --data PATH"):
        get_task("classify").default_data(tmp_path, train_images=4, val_images=2, image_size=32, seed=0)
    with pytest.raises(EdgeCompressError, match="task count-pixels has no bundled dataset"):
        register_task(CountPixels()).default_data(tmp_path, train_images=4, val_images=2, image_size=32, seed=0)


def test_detect_bundles_the_digits_detection_set(tmp_path):
    task = get_task("detect")
    path = task.default_data(tmp_path / "digits", train_images=4, val_images=2, image_size=64, seed=0)
    data = task.load(path, 64, batch_size=2)
    assert path.name == "data.yaml" and path.parent == (tmp_path / "digits").resolve()
    assert data.num_classes == 10 and len(data.train.dataset) == 4 and len(data.val.dataset) == 2
