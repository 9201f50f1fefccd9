"""Training augmentations: boxes move exactly with the pixels, flips obey the dataset, draws are seeded per
(seed, epoch, sample), mixup keeps both label sets, and validation and calibration images are never augmented."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler

from edgecompress.data import (Augmentation, YoloDetectionDataset, collate_detection, letterbox, load_data_yaml, load_image,
                               make_digits_detection)
from edgecompress.data.augment import MIN_BOX_SIDE, clip_boxes, homography, warp_boxes
from edgecompress.errors import EdgeCompressError
from edgecompress.run import Run
from edgecompress.settings import BuildConfig
from edgecompress.tasks import get_task
from edgecompress.train import distributed
from edgecompress.train.loop import TrainConfig, fit

SIZE = 96
# White rectangles on black 200x100 images; the second image's rectangle is off-centre so a flip moves it.
RECTS = {"a": (2, (40, 20, 120, 60)), "b": (0, (130, 10, 190, 45))}


def _write_rects(root: Path, yaml_extra: str = "") -> Path:
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for name, (cls, (x1, y1, x2, y2)) in RECTS.items():
            pixels = np.zeros((100, 200, 3), dtype=np.uint8)
            pixels[y1:y2, x1:x2] = 255
            Image.fromarray(pixels).save(root / "images" / split / f"{name}.png")
            (root / "labels" / split / f"{name}.txt").write_text(f"{cls} {(x1 + x2) / 400} {(y1 + y2) / 200} {(x2 - x1) / 200} {(y2 - y1) / 100}\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnc: 3\n" + yaml_extra)
    return root / "data.yaml"


def _bright_box(image: torch.Tensor) -> np.ndarray:
    """Pixel xyxy of the bright region of ``image`` (pixels at least 85% white)."""
    ys, xs = torch.nonzero(image.mean(dim=0) >= image.mean(dim=0).max() - 0.15, as_tuple=True)
    return np.array([xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1], dtype=np.float32)


def _pixel_boxes(targets: torch.Tensor) -> np.ndarray:
    cx, cy, w, h = (targets[:, i].numpy() * SIZE for i in range(1, 5))
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


@pytest.mark.parametrize("augmentation", [
    Augmentation("placement", placement=True),
    Augmentation("crop", crop=1.0),
    Augmentation("warp", warp=1.0),
    Augmentation("flip", flip=1.0),
    Augmentation("all", placement=True, photometric=True, crop=1.0, warp=1.0, flip=1.0),
], ids=lambda augmentation: augmentation.name)
def test_the_box_lands_on_the_transformed_rectangle(tmp_path, augmentation):
    dataset = YoloDetectionDataset.from_config(load_data_yaml(_write_rects(tmp_path)), "train", SIZE, augment=augmentation)
    checked = 0
    for epoch in range(12):
        dataset.set_epoch(epoch)
        image, targets = dataset[0]
        if len(targets) == 0:  # the crop left too little of it: dropped
            continue
        assert targets[0, 0] == 2 and len(targets) == 1
        box, bright = _pixel_boxes(targets)[0], _bright_box(image)
        np.testing.assert_allclose(box, bright, atol=1.5)
        assert np.all(box[:2] <= bright[:2] + 0.5) and np.all(box[2:] >= bright[2:] - 0.5)  # it covers the rectangle
        checked += 1
    assert checked >= 8


def test_warped_corners_are_the_ones_asked_for_and_boxes_are_clipped_and_dropped():
    rng = np.random.default_rng(1)
    source = np.array([[0, 0], [64, 0], [64, 64], [0, 64]], dtype=np.float64)
    target = source + rng.uniform(-5, 5, (4, 2))
    matrix = homography(source, target)
    mapped = warp_boxes(np.array([[0, 0, 64, 64]], dtype=np.float32), matrix)[0]
    np.testing.assert_allclose(mapped, [*target.min(0), *target.max(0)], atol=1e-4)
    clipped, visible = clip_boxes(np.array([[-30, 0, 10, 10], [5, 5, 15, 25]], dtype=np.float32), 64, 64)
    np.testing.assert_allclose(clipped, [[0, 0, 10, 10], [5, 5, 15, 25]])
    np.testing.assert_allclose(visible, [0.25, 1.0])


def test_no_kept_box_is_outside_the_image_or_thinner_than_the_minimum(tmp_path):
    config = load_data_yaml(make_digits_detection(tmp_path / "digits", n_train=16, n_val=2, image_size=64))
    dataset = YoloDetectionDataset.from_config(config, "train", 64, augment="full")
    labels = sum(len(label) for label in dataset.labels)
    kept = 0
    for index in range(len(dataset)):
        _, targets = dataset[index]
        boxes = _pixel_boxes(targets) * 64 / SIZE
        assert np.all(boxes >= -1e-4) and np.all(boxes <= 64 + 1e-4)
        assert np.all(boxes[:, 2] - boxes[:, 0] > MIN_BOX_SIDE) and np.all(boxes[:, 3] - boxes[:, 1] > MIN_BOX_SIDE)
        kept += len(targets)
    assert kept >= labels // 2  # most objects survive


def test_flips_are_off_for_the_digits_and_follow_the_yaml(tmp_path):
    assert not load_data_yaml(make_digits_detection(tmp_path / "digits", n_train=2, n_val=2, image_size=64)).flip
    flip = Augmentation("flip", flip=1.0)
    plain, _ = YoloDetectionDataset.from_config(load_data_yaml(_write_rects(tmp_path / "default")), "train", SIZE)[1]
    for extra, flipped in (("", True), ("flip: true\n", True), ("flip: false\n", False)):
        config = load_data_yaml(_write_rects(tmp_path / f"yaml{len(extra)}", extra))
        image, _ = YoloDetectionDataset.from_config(config, "train", SIZE, augment=flip)[1]
        assert torch.equal(image, plain.flip(-1) if flipped else plain), extra
    with pytest.raises(EdgeCompressError, match="'flip' must be true or false"):
        load_data_yaml(_write_rects(tmp_path / "bad", "flip: sometimes\n"))


def _batches(dataset, epoch: int, workers: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = DataLoader(dataset, 4, shuffle=True, collate_fn=collate_detection, generator=torch.Generator().manual_seed(0), num_workers=workers)
    distributed.set_epoch(loader, epoch)  # what the training loop calls before every epoch
    return list(loader)


def _same(first, second) -> bool:
    return all(torch.equal(a, b) and torch.equal(x, y) for (a, x), (b, y) in zip(first, second))


def test_same_seed_same_batches_another_epoch_or_seed_others(tmp_path):
    config = load_data_yaml(make_digits_detection(tmp_path / "digits", n_train=8, n_val=2, image_size=64))
    dataset = YoloDetectionDataset.from_config(config, "train", 64, augment="full", seed=3)
    again = YoloDetectionDataset.from_config(config, "train", 64, augment="full", seed=3)
    reference = _batches(dataset, 1)
    assert _same(reference, _batches(again, 1))
    assert _same(reference, _batches(again, 1, workers=2))  # whatever process draws it
    assert not _same(reference, _batches(dataset, 2))
    other_seed = YoloDetectionDataset.from_config(config, "train", 64, augment="full", seed=4)
    assert not _same(reference, _batches(other_seed, 1))


def test_distributed_processes_draw_different_samples_each_as_one_process_would(tmp_path):
    config = load_data_yaml(make_digits_detection(tmp_path / "digits", n_train=8, n_val=2, image_size=64))
    dataset = YoloDetectionDataset.from_config(config, "train", 64, augment="full")
    dataset.set_epoch(5)
    shards = []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(5)
        shards.append({index: dataset[index] for index in sampler})
    assert not shards[0].keys() & shards[1].keys()
    single = YoloDetectionDataset.from_config(config, "train", 64, augment="full")
    single.set_epoch(5)
    for shard in shards:
        for index, (image, targets) in shard.items():
            expected, expected_targets = single[index]
            assert torch.equal(image, expected) and torch.equal(targets, expected_targets)
    first, second = (next(iter(shard.values()))[0] for shard in shards)
    assert not torch.equal(first, second)


def test_mixup_blends_both_images_and_keeps_both_label_sets(tmp_path):
    config = load_data_yaml(_write_rects(tmp_path))
    plain = YoloDetectionDataset.from_config(config, "train", SIZE)
    mixed = YoloDetectionDataset.from_config(config, "train", SIZE, augment=Augmentation("mixup", mixup=1.0))
    image, targets = mixed[0]
    (a, a_targets), (b, b_targets) = plain[0], plain[1]
    assert sorted(targets[:, 0].tolist()) == [0.0, 2.0]
    torch.testing.assert_close(targets, torch.cat([a_targets, b_targets]))
    differ = (a - b).abs() > 0.5
    weight = ((image - b)[differ] / (a - b)[differ]).mean()
    assert 0.05 < weight < 0.95
    torch.testing.assert_close(image, weight * a + (1 - weight) * b, atol=1e-5, rtol=0)


def test_validation_and_calibration_images_are_never_augmented(tmp_path):
    path = _write_rects(tmp_path / "user")
    data = get_task("detect").load(path, SIZE, batch_size=2, augment="full", seed=1)
    assert data.train.dataset.augmentation.name == "full"
    plain = torch.stack([letterbox(load_image(p), SIZE)[0] for p in sorted((tmp_path / "user" / "images" / "val").iterdir())])
    for epoch in range(3):
        distributed.set_epoch(data.val, epoch)
        distributed.set_epoch(data.train, epoch)
        assert torch.equal(next(iter(data.val))[0], plain)
    run = Run(BuildConfig(data=str(path), image_size=SIZE, augment="full", runs_dir=str(tmp_path / "runs")).resolved())
    calibration = run.calibration_images()
    expected = torch.stack([letterbox(load_image(p), SIZE)[0] for p in run.calibration_files()])
    assert torch.equal(calibration, expected)


def test_classification_refuses_what_moves_labels(tmp_path):
    from edgecompress.data import ImageFolderDataset

    (tmp_path / "cat").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "cat" / "a.png")
    ImageFolderDataset(tmp_path, 8, augment="light")
    with pytest.raises(EdgeCompressError, match="pass --augment light or none for classification"):
        ImageFolderDataset(tmp_path, 8, augment="full")


def test_a_detector_trains_an_epoch_on_fully_augmented_digits(tmp_path):
    from edgecompress.models import build_model

    task = get_task("detect")
    data = task.load(task.default_data(tmp_path, train_images=16, val_images=2, image_size=64, seed=0), 64, batch_size=8, augment="full")
    model = build_model("yolo-mbv2", num_classes=data.num_classes)
    data.train.dataset.set_epoch(7)
    history = fit(model, data.train, task.loss(model), TrainConfig(epochs=1, warmup_steps=1))
    assert len(history.epoch_losses) == 1 and np.isfinite(history.epoch_losses[0])
    assert data.train.dataset.epoch == 0  # the loop started the dataset's epoch 0
