"""Classification data in the ``root/<class_name>/*.jpg|png`` layout (torchvision's ImageFolder convention)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import EdgeCompressError
from .augment import Augmentation, EpochSeeded, get_augmentation, jitter_photometric, random_placement
from .preprocess import letterbox, list_images, load_image


class ImageFolderDataset(EpochSeeded, Dataset):
    """Images letterboxed to ``image_size``; items are ``(image [3,S,S] float32 in [0,1], class index)``.

    Classes are the sub-folder names in sorted order (``classes``). ``augment``: ``none`` or ``light`` (a small
    random zoom/shift and brightness/contrast, as the detection loader's), drawn per sample from ``seed`` and the
    epoch (:class:`EpochSeeded`); crops, warps, flips and mixup are for detection.
    """

    def __init__(self, root: str | os.PathLike, image_size: int, *, augment: str | Augmentation = "none", seed: int = 0):
        augmentation = get_augmentation(augment)
        if augmentation.moves_labels:
            raise EdgeCompressError(f"augmentation {augmentation.name!r} crops, warps, flips or mixes images, which only detection "
                                    "supports; pass --augment light or none for classification")
        self.root = Path(root)
        if not self.root.is_dir():
            raise EdgeCompressError(f"dataset folder not found: {self.root}; pass a folder laid out as ROOT/<class_name>/*.jpg")
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not self.classes:
            raise EdgeCompressError(f"{self.root} has no class sub-folders; lay it out as ROOT/<class_name>/*.jpg")
        self.samples = [(path, label) for label, name in enumerate(self.classes) for path in list_images(self.root / name)]
        if not self.samples:
            raise EdgeCompressError(f"the class folders of {self.root} hold no images (.jpg/.jpeg/.png/.bmp); add images")
        self.image_size = image_size
        self.augmentation = augmentation
        super().__init__(seed)

    @property
    def image_paths(self) -> list[Path]:
        """The image file of each sample, in order (what the input checks decode)."""
        return [path for path, _ in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        image = load_image(path)
        if not self.augmentation.active:
            return letterbox(image, self.image_size)[0], label
        rng = self.sample_rng(index)
        zoom, shift = random_placement(self.image_size, rng) if self.augmentation.placement else (1.0, (0.0, 0.0))
        tensor, _ = letterbox(image, self.image_size, zoom=zoom, shift=shift)
        return (jitter_photometric(tensor, rng) if self.augmentation.photometric else tensor), label
