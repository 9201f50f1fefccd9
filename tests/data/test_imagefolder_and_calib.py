"""Classification folders and calibration images: shapes, shared preprocessing, clear errors."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgecompress.data import (
    ImageFolderDataset,
    YoloDetectionDataset,
    calib_batches,
    list_images,
    load_calibration_images,
)
from edgecompress.errors import EdgeCompressError

CALIB_DATA = Path(__file__).resolve().parents[2] / "calib_data"


def _save_random_image(path: Path, size: tuple[int, int], seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def test_image_folder_classes_and_items(tmp_path):
    _save_random_image(tmp_path / "zebra" / "a.png", (40, 30), 0)
    _save_random_image(tmp_path / "ant" / "b.jpg", (20, 20), 1)
    _save_random_image(tmp_path / "ant" / "nested" / "c.png", (20, 50), 2)
    dataset = ImageFolderDataset(tmp_path, 32)
    assert dataset.classes == ["ant", "zebra"]
    assert [label for _, label in dataset.samples] == [0, 0, 1]
    image, label = dataset[2]
    assert image.shape == (3, 32, 32) and label == 1
    light = ImageFolderDataset(tmp_path, 32, augment="light")
    augmented, _ = light[2]
    assert augmented.shape == (3, 32, 32) and not torch.equal(augmented, image)
    assert torch.equal(light[2][0], augmented)  # drawn from (seed, epoch, index)
    light.set_epoch(1)
    assert not torch.equal(light[2][0], augmented)


def test_image_folder_errors(tmp_path):
    with pytest.raises(EdgeCompressError, match="dataset folder not found"):
        ImageFolderDataset(tmp_path / "absent", 32)
    with pytest.raises(EdgeCompressError, match="no class sub-folders"):
        ImageFolderDataset(tmp_path, 32)
    (tmp_path / "cats").mkdir()
    with pytest.raises(EdgeCompressError, match="hold no images"):
        ImageFolderDataset(tmp_path, 32)


def test_committed_calibration_images():
    paths = list_images(CALIB_DATA)
    assert len(paths) == 300
    assert sum(p.stat().st_size for p in paths) < 3_000_000
    images = load_calibration_images(CALIB_DATA, 128, limit=20)
    assert images.shape == (20, 3, 128, 128) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.std() > 0.05


def test_limit_spreads_over_the_sorted_folder(tmp_path):
    for i in range(10):
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(tmp_path / f"{i:02d}.png")
    picked = load_calibration_images(tmp_path, 8, limit=4)[:, 0, 4, 4] * 255
    assert torch.allclose(picked, torch.tensor([0.0, 60.0, 120.0, 180.0]), atol=0.5)


def test_calibration_preprocessing_matches_the_detection_loader(tmp_path):
    _save_random_image(tmp_path / "images" / "frame.png", (90, 60), 3)
    calibration = load_calibration_images(tmp_path, 64)
    loader_image, _ = YoloDetectionDataset(tmp_path / "images", 64)[0]
    assert torch.equal(calibration[0], loader_image)


def test_calibration_folder_errors(tmp_path):
    with pytest.raises(EdgeCompressError, match="has no images .*--calib DIR"):
        load_calibration_images(tmp_path, 64)
    with pytest.raises(EdgeCompressError, match="not found"):
        load_calibration_images(tmp_path / "absent", 64)


def test_calib_batches_cover_every_image_once():
    images = torch.randn(10, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    batches = list(calib_batches(images, 4))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat(batches), images)
