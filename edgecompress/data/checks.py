"""Checks of a dataset's image files, made once before training: every image is decoded, so a broken
file is named in one line before any training starts rather than when a loader first reaches it."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from PIL import Image
from torch.utils.data import Dataset, Subset

from ..errors import EdgeCompressError, describe

DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def image_paths(dataset: Dataset) -> list[Path] | None:
    """The image file of each sample of ``dataset`` (a :class:`Subset` of one included), or None for
    a dataset that does not read image files (its class has no ``image_paths``)."""
    if isinstance(dataset, Subset):
        paths = image_paths(dataset.dataset)
        return None if paths is None else [paths[i] for i in dataset.indices]
    paths = getattr(dataset, "image_paths", None)
    return None if paths is None else list(paths)


def decode_error(path: Path) -> str | None:
    """Why ``path`` cannot be decoded (``Type: message``), or None when it decodes. A JPEG is decoded at
    reduced scale (every compressed byte is still read, so truncation is caught) to keep this fast."""
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft(image.mode, (1, 1))
            image.load()
    except DECODE_ERRORS as exc:
        return describe(exc)
    return None


def check_images(paths: Sequence[Path], *, cache: Path | None = None) -> None:
    """Decode every image of ``paths``; the first that fails (in the given order) is a one-line error.

    With ``cache`` (a folder), a list that decoded before, with every file's size and modification
    time unchanged, is not decoded again.
    """
    paths = list(dict.fromkeys(paths))  # a calibration sample may repeat training images
    marker = cache / f"{_fingerprint(paths)}.ok" if cache is not None and paths else None
    if marker is not None and marker.is_file():
        return
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        errors = list(pool.map(decode_error, paths))
    failed = [(path, error) for path, error in zip(paths, errors) if error is not None]
    if failed:
        path, error = failed[0]
        others = f"; {len(failed) - 1} more images fail too" if len(failed) > 1 else ""
        raise EdgeCompressError(f"cannot read image {path} ({error}){others}; delete or re-save the file")
    if marker is not None:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()


def _fingerprint(paths: Sequence[Path]) -> str:
    """A digest of the files' resolved paths, sizes and modification times."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            stat = path.stat()
        except OSError as exc:
            raise EdgeCompressError(f"cannot read image {path} ({describe(exc)}); check the file exists") from None
        digest.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]
