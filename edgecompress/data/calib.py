"""Calibration images for int8 quantization, preprocessed exactly like the detection loader's inputs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import EdgeCompressError
from .preprocess import letterbox, list_images, load_rgb

CALIB_HINT = "pass --calib DIR with a few hundred images from your deployment data"


def load_calibration_images(folder: str | os.PathLike, image_size: int, *, limit: int | None = None) -> torch.Tensor:
    """Read every image under ``folder`` (recursive, sorted) into ``[N,3,S,S]`` float32 in [0,1].

    With ``limit``, take that many images spread evenly over the sorted list, so a folder sorted
    by time or scene is still sampled across its whole range.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgeCompressError(f"calibration folder {folder} not found; {CALIB_HINT}")
    paths = list_images(folder)
    if not paths:
        raise EdgeCompressError(f"calibration folder {folder} has no images (.jpg/.png); {CALIB_HINT}")
    if limit is not None and limit < 1:
        raise EdgeCompressError(f"calibration image limit must be at least 1, got {limit}")
    if limit is not None and limit < len(paths):
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, limit).round().astype(int)]
    return torch.stack([letterbox(load_rgb(path), image_size)[0] for path in paths])


def calib_batches(images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Consecutive batches of at most ``batch_size`` images (the last one may be smaller)."""
    yield from torch.split(images, batch_size)
