"""Image reading and letterbox resizing shared by the detection, classification and calibration loaders.

One preprocessing path for training, calibration and evaluation keeps int8 calibration ranges
faithful to what the network sees at deployment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import EdgeCompressError, describe

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
PAD_VALUE = 114  # grey letterbox padding, as in YOLOv5/v8
SIXTEEN_BIT_MAX = 65535.0


@dataclass(frozen=True)
class Letterbox:
    """Affine map from source pixels to output pixels: ``out = src * scale + pad``."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float

    def map_xyxy(self, boxes: np.ndarray) -> np.ndarray:
        """Map pixel boxes ``[N,4]`` (x1,y1,x2,y2) of the source image into the output image."""
        scale = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y], dtype=np.float32)
        pad = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], dtype=np.float32)
        return boxes * scale + pad


def list_images(folder: Path) -> list[Path]:
    """All images under ``folder`` (recursive), sorted so every run sees the same order."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_image(path: Path) -> Image.Image:
    """Open an image upright (EXIF orientation: labels refer to the upright image), ready for :func:`letterbox`.

    Most images come back as 8-bit "RGB" (palette, grey+alpha, RGBA and CMYK converted; alpha dropped,
    as OpenCV reads them at deployment). Greyscale wider than 8 bits (a 16-bit PNG opens as "I;16" or
    "I") comes back as "F" scaled from [0, 65535] to [0, 1], keeping its precision:
    ``convert("RGB")`` would clip every value above 255 to white.
    """
    try:
        with Image.open(path) as image:
            return _letterbox_mode(ImageOps.exif_transpose(image))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise EdgeCompressError(f"cannot read image {path} ({describe(exc)}); delete or re-save the file") from None


def _letterbox_mode(image: Image.Image) -> Image.Image:
    if image.mode == "I" or image.mode.startswith("I;16"):
        return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) / SIXTEEN_BIT_MAX, 0.0, 1.0))
    if image.mode == "F":  # floating-point samples are taken to be in [0, 1] already
        return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # what PIL asks for before dropping a palette's transparency
    return image.convert("RGB")


def letterbox(
    image: Image.Image, size: int, *, zoom: float = 1.0, shift: tuple[float, float] = (0.0, 0.0)
) -> tuple[torch.Tensor, Letterbox]:
    """Resize keeping aspect ratio into a ``size`` x ``size`` grey canvas; return ``[3,S,S]`` in [0,1].

    ``image``: as :func:`load_image` returns it, "RGB" or, for wide greyscale, "F" in [0,1].

    ``zoom`` and ``shift`` (output pixels) perturb the placement for augmentation; the defaults
    give the plain centred letterbox used at inference.
    """
    width, height = image.size
    ratio = size / max(width, height) * zoom
    new_w, new_h = max(1, round(width * ratio)), max(1, round(height * ratio))
    pad_x = round((size - new_w) / 2 + shift[0])
    pad_y = round((size - new_h) / 2 + shift[1])
    if image.mode == "F":  # wide greyscale from load_image: resized in float, then repeated over three channels
        canvas = Image.new("F", (size, size), PAD_VALUE / 255.0)
        canvas.paste(image.resize((new_w, new_h), Image.BILINEAR), (pad_x, pad_y))
        array = np.repeat(np.asarray(canvas, dtype=np.float32)[..., None], 3, axis=2)
    else:
        canvas = Image.new("RGB", (size, size), (PAD_VALUE,) * 3)
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        canvas.paste(rgb.resize((new_w, new_h), Image.BILINEAR), (pad_x, pad_y))
        array = np.asarray(canvas, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array.transpose(2, 0, 1).copy())
    return tensor, Letterbox(new_w / width, new_h / height, float(pad_x), float(pad_y))
