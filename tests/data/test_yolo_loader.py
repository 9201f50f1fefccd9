"""A user's dataset in the Ultralytics layout loads, boxes follow the letterbox, bad inputs fail clearly."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgecompress.data import YoloDetectionDataset, collate_detection, label_path, load_data_yaml
from edgecompress.errors import EdgeCompressError

# A white rectangle on black, in a 200x100 (wide) image: x 40..120, y 20..60.
RECT = (40, 20, 120, 60)
WIDTH, HEIGHT = 200, 100


def _write_user_dataset(root: Path) -> Path:
    """Two train images (png with a label, jpg without) and one val image, ``path`` relative, names a dict."""
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    pixels = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    x1, y1, x2, y2 = RECT
    pixels[y1:y2, x1:x2] = 255
    Image.fromarray(pixels).save(root / "images" / "train" / "rect.png")
    Image.fromarray(pixels).save(root / "images" / "val" / "rect.jpg", quality=95)
    label = f"2 {(x1 + x2) / 2 / WIDTH} {(y1 + y2) / 2 / HEIGHT} {(x2 - x1) / WIDTH} {(y2 - y1) / HEIGHT}\n"
    (root / "labels" / "train" / "rect.txt").write_text(label)
    (root / "labels" / "val" / "rect.txt").write_text(label)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "images" / "train" / "noise.jpg")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: {0: cat, 1: dog, 2: box}\n")
    return root / "data.yaml"


def _bright_box(image: torch.Tensor) -> tuple[float, ...]:
    """Normalised xyxy of the brightest region of ``image``."""
    grey = image.mean(dim=0)
    ys, xs = torch.nonzero(grey >= grey.max() - 0.15, as_tuple=True)
    size = image.shape[-1]
    return (xs.min().item() / size, ys.min().item() / size, (xs.max().item() + 1) / size, (ys.max().item() + 1) / size)


def _xyxy(target: torch.Tensor) -> tuple[float, ...]:
    _, cx, cy, w, h = target.tolist()
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def test_user_dataset_loads_with_names_dict_and_relative_path(tmp_path):
    config = load_data_yaml(_write_user_dataset(tmp_path / "user"))
    assert config.nc == 3 and config.names == ("cat", "dog", "box")
    assert config.train_images == tmp_path / "user" / "images" / "train"
    train = YoloDetectionDataset.from_config(config, "train", 96)
    assert [p.name for p in train.images] == ["noise.jpg", "rect.png"]
    image, targets = train[0]
    assert image.shape == (3, 96, 96) and image.dtype == torch.float32
    assert targets.shape == (0, 5)  # no label file: no objects
    assert 0.0 <= image.min() and image.max() <= 1.0


def test_letterbox_maps_the_box_onto_the_drawn_rectangle(tmp_path):
    config = load_data_yaml(_write_user_dataset(tmp_path / "user"))
    image, targets = YoloDetectionDataset.from_config(config, "val", 160)[0]
    # 200x100 -> 160x80, padded 40 px top and bottom with grey 114
    assert torch.allclose(image[:, 5, 80], torch.full((3,), 114 / 255), atol=1e-6)
    assert targets.shape == (1, 5) and targets[0, 0] == 2
    expected = (40 * 0.8 / 160, (20 * 0.8 + 40) / 160, 120 * 0.8 / 160, (60 * 0.8 + 40) / 160)
    assert np.allclose(_xyxy(targets[0]), expected, atol=1e-6)
    assert np.allclose(_bright_box(image), expected, atol=1.5 / 160)


def test_augmentation_moves_the_box_with_the_pixels(tmp_path):
    config = load_data_yaml(_write_user_dataset(tmp_path / "user"))
    dataset = YoloDetectionDataset.from_config(config, "train", 128, augment="light")
    placements = set()
    for epoch in range(8):
        dataset.set_epoch(epoch)
        image, targets = dataset[1]
        assert targets.shape == (1, 5)
        box = _xyxy(targets[0])
        assert np.allclose(box, _bright_box(image), atol=2.0 / 128)
        placements.add(tuple(round(v, 3) for v in box))
    assert len(placements) > 4  # really random


def test_collate_stacks_images_and_prefixes_batch_index(tmp_path):
    config = load_data_yaml(_write_user_dataset(tmp_path / "user"))
    dataset = YoloDetectionDataset.from_config(config, "train", 64)
    images, targets = collate_detection([dataset[1], dataset[0], dataset[1]])
    assert images.shape == (3, 3, 64, 64)
    assert targets.shape == (2, 6)
    assert targets[:, 0].tolist() == [0.0, 2.0]
    assert torch.equal(targets[0, 1:], dataset[1][1][0])


def test_label_path_replaces_the_last_images_component():
    assert label_path(Path("/d/images/x/images/train/a.b.jpg")) == Path("/d/images/x/labels/train/a.b.txt")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("2 0.5 0.5 0.2", "expected 5 fields"),
        ("2 0.5 0.5 0.2 abc", "non-numeric"),
        ("3 0.5 0.5 0.2 0.2", r"class id 3 is not an integer in 0\.\.2"),
        ("1.5 0.5 0.5 0.2 0.2", "class id 1.5"),
        ("0 0.5 0.5 20 30", "not normalised"),
    ],
)
def test_malformed_label_line_names_file_and_line(tmp_path, line, message):
    config = load_data_yaml(_write_user_dataset(tmp_path / "user"))
    label = tmp_path / "user" / "labels" / "train" / "rect.txt"
    label.write_text(label.read_text() + "\n" + line + "\n")
    with pytest.raises(EdgeCompressError, match=message) as error:
        YoloDetectionDataset.from_config(config, "train", 64)
    assert f"{label}:3:" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("val: images/val\nnc: 3\n", "no 'train' entry"),
        ("train: images/train\nval: images/val\n", "neither 'nc' nor 'names'"),
        ("train: images/train\nval: images/val\nnc: 2\nnames: [a, b, c]\n", "nc is 2 but 'names' lists 3"),
        ("train: images/nowhere\nval: images/val\nnc: 3\n", "train image folder .* does not exist"),
        ("train: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_yaml_is_reported(tmp_path, yaml_text, message):
    _write_user_dataset(tmp_path / "user")
    (tmp_path / "user" / "data.yaml").write_text(yaml_text)
    with pytest.raises(EdgeCompressError, match=message):
        load_data_yaml(tmp_path / "user" / "data.yaml")


def test_missing_yaml_and_empty_image_folder(tmp_path):
    with pytest.raises(EdgeCompressError, match="dataset yaml not found"):
        load_data_yaml(tmp_path / "absent.yaml")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(EdgeCompressError, match="has no images"):
        YoloDetectionDataset(tmp_path / "empty", 64)
    with pytest.raises(EdgeCompressError, match="image folder not found"):
        YoloDetectionDataset(tmp_path / "nowhere", 64)


def test_absolute_path_in_yaml(tmp_path):
    _write_user_dataset(tmp_path / "user")
    elsewhere = tmp_path / "configs" / "data.yaml"
    elsewhere.parent.mkdir()
    elsewhere.write_text(f"path: {tmp_path / 'user'}\ntrain: images/train\nval: images/val\nnc: 3\n")
    config = load_data_yaml(elsewhere)
    assert config.val_images == tmp_path / "user" / "images" / "val" and config.names == ("0", "1", "2")
