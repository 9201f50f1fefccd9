"""Calibration images for int8 quantization, preprocessed exactly like the detection loader's inputs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence, TypeVar

import numpy as np
import torch

from ..errors import EdgeCompressError
from .preprocess import letterbox, list_images, load_image

CALIB_HINT = "pass --calib DIR with a few hundred images from your deployment data"
T = TypeVar("T")


def calibration_paths(folder: str | os.PathLike) -> list[Path]:
    """Every image under ``folder`` (recursive, sorted); a missing folder or one without images is a one-line error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgeCompressError(f"calibration folder {folder} not found; {CALIB_HINT}")
    paths = list_images(folder)
    if not paths:
        raise EdgeCompressError(f"calibration folder {folder} has no images (.jpg/.jpeg/.png/.bmp); {CALIB_HINT}")
    return paths


def spread(items: Sequence[T], limit: int | None) -> list[T]:
    """At most ``limit`` of ``items``, spread evenly over the whole list, so a folder sorted by time,
    scene or class is still sampled across its range."""
    if limit is not None and limit < 1:
        raise EdgeCompressError(f"calibration image limit must be at least 1, got {limit}")
    if limit is None or limit >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def load_images(paths: Sequence[Path], image_size: int) -> torch.Tensor:
    """``[N,3,S,S]`` float32 in [0,1]: each image letterboxed as at inference."""
    return torch.stack([letterbox(load_image(path), image_size)[0] for path in paths])


def load_calibration_images(folder: str | os.PathLike, image_size: int, *, limit: int | None = None) -> torch.Tensor:
    """Read the images under ``folder`` (recursive, sorted) into ``[N,3,S,S]`` float32 in [0,1];
    with ``limit``, that many spread evenly over the sorted list."""
    return load_images(spread(calibration_paths(folder), limit), image_size)


def calib_batches(images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Consecutive batches of at most ``batch_size`` images (the last one may be smaller)."""
    yield from torch.split(images, batch_size)
