"""Detection datasets in the Ultralytics/YOLO layout: ``data.yaml``, ``images/<split>``, ``labels/<split>``.

Label files hold one object per line, ``cls cx cy w h`` normalised to [0,1]. All labels are read and
checked when the dataset is built, so a bad line is reported before any training starts.

Besides Ultralytics' keys, ``data.yaml`` may say ``flip: false``: training never mirrors its images (digits,
text, signs whose mirror image means something else). Without the key, flipping is allowed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import Dataset

from ..errors import EdgeCompressError
from .augment import Augmentation, EpochSeeded, augment_detection, get_augmentation, mixup
from .calib import spread
from .preprocess import list_images, load_image


@dataclass(frozen=True)
class DataConfig:
    """What a ``data.yaml`` says: dataset root, the two image folders, class count and names, and whether
    training may mirror its images (``flip``)."""

    root: Path
    train_images: Path
    val_images: Path
    nc: int
    names: tuple[str, ...]
    flip: bool = True


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise EdgeCompressError(f"dataset yaml not found: {path}; pass --data PATH/data.yaml (Ultralytics layout)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise EdgeCompressError(f"{path} is not valid YAML ({str(exc).splitlines()[0]}); fix its syntax") from None
    if not isinstance(data, dict):
        raise EdgeCompressError(f"{path} must be a YAML mapping with keys path, train, val, nc, names")
    return data


def _class_names(data: dict[str, Any], path: Path) -> tuple[int, tuple[str, ...]]:
    names = data.get("names")
    if isinstance(names, dict):
        names = [str(names[k]) for k in sorted(names, key=int)]
    if names is not None and not isinstance(names, list):
        raise EdgeCompressError(f"{path}: 'names' must be a list or a mapping id -> name")
    if "nc" not in data and names is None:
        raise EdgeCompressError(f"{path} has neither 'nc' nor 'names'; add 'nc: <number of classes>'")
    nc = int(data["nc"]) if "nc" in data else len(names)
    names = [str(n) for n in names] if names is not None else [str(i) for i in range(nc)]
    if len(names) != nc:
        raise EdgeCompressError(f"{path}: nc is {nc} but 'names' lists {len(names)} classes; make them agree")
    return nc, tuple(names)


def load_data_yaml(path: str | os.PathLike) -> DataConfig:
    """Read an Ultralytics ``data.yaml``; ``path`` is relative to the yaml's folder unless absolute."""
    path = Path(path)
    data = _read_yaml(path)
    for key in ("train", "val"):
        if key not in data:
            raise EdgeCompressError(f"{path} has no '{key}' entry; add '{key}: images/{key}'")
    root = path.parent / data.get("path", ".")
    nc, names = _class_names(data, path)
    folders = {}
    for key in ("train", "val"):
        folder = root / str(data[key])
        if not folder.is_dir():
            raise EdgeCompressError(f"{path}: {key} image folder {folder} does not exist; fix '{key}' or 'path'")
        folders[key] = folder
    flip = data.get("flip", True)
    if not isinstance(flip, bool):
        raise EdgeCompressError(f"{path}: 'flip' must be true or false, got {flip!r}; false keeps training from mirroring the images")
    return DataConfig(root, folders["train"], folders["val"], nc, names, flip)


def label_path(image: Path) -> Path:
    """The label file of an image: last ``images`` path component replaced by ``labels``, suffix ``.txt``."""
    parts = list(image.parts)
    if "images" not in parts:
        return image.with_suffix(".txt")
    index = len(parts) - 1 - parts[::-1].index("images")
    parts[index] = "labels"
    return Path(*parts).with_suffix(".txt")


def _parse_line(fields: list[str], where: str, nc: int | None) -> list[float]:
    if len(fields) != 5:
        raise EdgeCompressError(f"{where}: expected 5 fields 'cls cx cy w h', got {len(fields)}; fix or delete the line")
    try:
        cls, *xywh = (float(f) for f in fields)
    except ValueError:
        raise EdgeCompressError(f"{where}: non-numeric value in {' '.join(fields)!r}; fix or delete the line") from None
    if cls != int(cls) or cls < 0 or (nc is not None and cls >= nc):
        allowed = "a non-negative integer" if nc is None else f"an integer in 0..{nc - 1}"
        raise EdgeCompressError(f"{where}: class id {fields[0]} is not {allowed}; fix the class id or nc in data.yaml")
    if not all(0.0 <= v <= 1.0 for v in xywh) or xywh[2] <= 0 or xywh[3] <= 0:
        raise EdgeCompressError(
            f"{where}: box {' '.join(fields[1:])} is not normalised (0 < w,h; all in [0,1]); "
            "divide pixel coordinates by the image size"
        )
    return [cls, *xywh]


def read_labels(path: Path, nc: int | None = None) -> np.ndarray:
    """Parse a label file into ``[N,5]`` float32 (cls, cx, cy, w, h); a missing file means no objects."""
    if not path.is_file():
        return np.zeros((0, 5), dtype=np.float32)
    rows = [
        _parse_line(line.split(), f"{path}:{number}", nc)
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if line.strip()
    ]
    return np.array(rows, dtype=np.float32).reshape(-1, 5)


def _xywhn_to_xyxy(labels: np.ndarray, width: float, height: float) -> np.ndarray:
    cx, cy, w, h = (labels[:, i] for i in range(1, 5))
    return np.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], 1)


def _xyxy_to_xywhn(boxes: np.ndarray, size: int) -> np.ndarray:
    x1, y1, x2, y2 = boxes.T
    return np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], 1) / size


class YoloDetectionDataset(EpochSeeded, Dataset):
    """Images and YOLO labels of one split, letterboxed to ``image_size``.

    Items are ``(image [3,S,S] float32 in [0,1], targets [N,5] float32 (cls, cx, cy, w, h))`` with
    boxes normalised to the output image. ``augment``: a level of :data:`~edgecompress.data.augment.AUGMENTATIONS`
    (``none``, ``light``, ``full``) or an :class:`Augmentation`, drawn per sample from ``seed`` and the epoch
    (:class:`EpochSeeded`). ``limit``: keep at most that many images, evenly spread (every label is still checked).
    """

    def __init__(self, images_dir: str | os.PathLike, image_size: int, *, augment: str | Augmentation = "none",
                 num_classes: int | None = None, seed: int = 0, limit: int | None = None):
        self.images_dir = Path(images_dir)
        if not self.images_dir.is_dir():
            raise EdgeCompressError(f"image folder not found: {self.images_dir}; check 'path' and 'train'/'val' in data.yaml")
        images = list_images(self.images_dir)
        if not images:
            raise EdgeCompressError(
                f"image folder {self.images_dir} has no images (.jpg/.jpeg/.png/.bmp); add images or fix data.yaml"
            )
        labels = [read_labels(label_path(image), num_classes) for image in images]
        kept = spread(range(len(images)), limit)
        self.images = [images[i] for i in kept]
        self.labels = [labels[i] for i in kept]
        self.image_size = image_size
        self.augmentation = get_augmentation(augment)
        super().__init__(seed)

    @classmethod
    def from_config(cls, config: DataConfig, split: str, image_size: int, *, augment: str | Augmentation = "none",
                    seed: int = 0, limit: int | None = None) -> YoloDetectionDataset:
        """The ``train`` or ``val`` split of a :class:`DataConfig`, with class ids checked against ``nc``; never
        flipped when the yaml says ``flip: false``."""
        folder = {"train": config.train_images, "val": config.val_images}[split]
        augmentation = get_augmentation(augment)
        augmentation = augmentation if config.flip else augmentation.without_flip()
        return cls(folder, image_size, augment=augmentation, num_classes=config.nc, seed=seed, limit=limit)

    @property
    def image_paths(self) -> list[Path]:
        """The image file of each sample, in order (what the input checks decode)."""
        return self.images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = self.sample_rng(index) if self.augmentation.active else None
        image, boxes, classes = self._sample(index, rng)
        if rng is not None and rng.random() < self.augmentation.mixup and len(self) > 1:
            partner = (index + 1 + int(rng.integers(len(self) - 1))) % len(self)  # any other sample
            other, other_boxes, other_classes = self._sample(partner, rng)
            image = mixup(image, other, rng)
            boxes, classes = np.concatenate([boxes, other_boxes]), np.concatenate([classes, other_classes])
        targets = np.concatenate([classes[:, None], _xyxy_to_xywhn(boxes, self.image_size)], axis=1)
        return image, torch.from_numpy(targets.astype(np.float32))

    def _sample(self, index: int, rng: np.random.Generator | None) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """Image ``index`` letterboxed and augmented: ``[3,S,S]``, its kept boxes in output pixels and their classes."""
        image = load_image(self.images[index])
        labels = self.labels[index]
        tensor, boxes, keep = augment_detection(image, _xywhn_to_xyxy(labels, *image.size), self.image_size, self.augmentation, rng)
        return tensor, boxes[keep], labels[keep, 0]


def collate_detection(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack images to ``[B,3,S,S]`` and targets to ``[M,6]`` rows (batch_index, cls, cx, cy, w, h)."""
    images = torch.stack([image for image, _ in batch])
    targets = [
        torch.cat([torch.full((t.shape[0], 1), float(i)), t], dim=1) for i, (_, t) in enumerate(batch)
    ]
    return images, torch.cat(targets, dim=0) if targets else torch.zeros((0, 6))
