"""A real-pixel detection dataset built from the handwritten digits scikit-learn ships.

Each canvas holds 1-4 of the 1797 scanned 8x8 digits, upscaled and blended onto a textured, tinted
background; a box is the tight box of the digit's ink. Train, val and calibration canvases draw on
disjoint source digits, so val measures generalisation to unseen handwriting. Its ``data.yaml`` says
``flip: false``: a mirrored digit is another digit or none, so training never flips it.
Regenerate the committed calibration images with ``python -m edgecompress.data --calib calib_data``.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import yaml
from PIL import Image

from ..artifacts import atomic_dir, write_json, write_text, writers_queued
from ..errors import EdgeCompressError

GENERATOR_VERSION = 1
POOL_FRACTIONS = {"train": 0.7, "val": 0.2, "calib": 0.1}  # contiguous blocks of each class, in index order
DIGIT_SIDE = (14, 44)  # pixels, before the 1-pixel padding is cropped away by the ink threshold
MIN_CANVAS = 64  # widest digit patch: 44 px * 1.15 aspect jitter * 10/8 padding
INK_THRESHOLD = 0.3  # alpha above which a pixel counts as ink for the box
MAX_IOU = 0.1
JPEG_QUALITY = 90
PARAMS_FILE = "generation.json"


@lru_cache(maxsize=1)
def _source_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


def split_source_digits() -> dict[str, np.ndarray]:
    """Disjoint index pools ``train``/``val``/``calib`` (70/20/10 per class, contiguous in index order)."""
    targets = _source_digits()[1]
    pools: dict[str, list[int]] = {name: [] for name in POOL_FRACTIONS}
    for cls in range(10):
        indices = np.flatnonzero(targets == cls)
        cut_train = round(len(indices) * POOL_FRACTIONS["train"])
        cut_val = cut_train + round(len(indices) * POOL_FRACTIONS["val"])
        pools["train"] += indices[:cut_train].tolist()
        pools["val"] += indices[cut_train:cut_val].tolist()
        pools["calib"] += indices[cut_val:].tolist()
    return {name: np.array(sorted(idx), dtype=np.int64) for name, idx in pools.items()}


def _background(rng: np.random.Generator, size: int, level: float) -> np.ndarray:
    """Tinted base level plus low-frequency blotches and fine pixel noise, ``[S,S,3]`` in float."""
    coarse = rng.normal(0.0, 0.08, (6, 6)).astype(np.float32)
    blotches = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.BICUBIC))
    tint = rng.normal(0.0, 0.05, 3).astype(np.float32)
    noise = rng.standard_normal((size, size, 3), dtype=np.float32) * 0.03
    return level + tint + blotches[..., None] + noise


def _digit_alpha(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Upscale a padded 8x8 digit to a random size (slight aspect jitter); alpha in [0,1]."""
    side = rng.integers(DIGIT_SIDE[0], DIGIT_SIDE[1] + 1)
    width = int(round(side * rng.uniform(0.85, 1.15)))
    padded = np.pad(digit, 1)
    scale = 10 / 8  # the padded digit is 10 cells wide, the ink 8
    size = (max(2, round(width * scale)), max(2, round(side * scale)))
    alpha = np.asarray(Image.fromarray(padded, mode="F").resize(size, Image.BICUBIC))
    return np.clip(alpha, 0.0, 1.0)


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    lt = np.maximum(box[:2], others[:, :2])
    rb = np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    return inter / (_area(box) + _area(others) - inter)


def render_canvas(rng: np.random.Generator, pool: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One canvas: ``uint8 [S,S,3]`` image and ``[N,5]`` rows (cls, x1, y1, x2, y2) in pixels."""
    images, targets = _source_digits()
    dark = rng.random() < 0.5
    canvas = _background(rng, size, rng.uniform(0.05, 0.3) if dark else rng.uniform(0.7, 0.95))
    boxes: list[list[float]] = []
    for _ in range(rng.integers(1, 5)):
        index = int(rng.choice(pool))
        alpha = _digit_alpha(images[index], rng)
        ys, xs = np.nonzero(alpha > INK_THRESHOLD)
        ink = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
        height, width = alpha.shape
        for _attempt in range(30):
            x0, y0 = rng.integers(0, size - width + 1), rng.integers(0, size - height + 1)
            box = ink + np.array([x0, y0, x0, y0], dtype=np.float32)
            if not boxes or _iou(box, np.array(boxes)[:, 1:]).max() <= MAX_IOU:
                break
        else:
            continue
        level = rng.uniform(0.75, 1.0) if dark else rng.uniform(0.0, 0.25)
        colour = np.clip(level + rng.normal(0.0, 0.08, 3), 0.0, 1.0).astype(np.float32)
        patch = canvas[y0 : y0 + height, x0 : x0 + width]
        canvas[y0 : y0 + height, x0 : x0 + width] = patch * (1 - alpha[..., None]) + colour * alpha[..., None]
        boxes.append([float(targets[index]), *box.tolist()])
    image = (np.clip(canvas, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    return image, np.array(boxes, dtype=np.float32).reshape(-1, 5)


def _label_text(boxes: np.ndarray, size: int) -> str:
    lines = []
    for cls, x1, y1, x2, y2 in boxes.tolist():
        cx, cy, w, h = ((x1 + x2) / 2 / size, (y1 + y2) / 2 / size, (x2 - x1) / size, (y2 - y1) / size)
        lines.append(f"{int(cls)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return "".join(line + "\n" for line in lines)


def _write_split(root: Path, split: str, count: int, size: int, seed: int, pool: np.ndarray, labels: bool) -> None:
    """Render ``count`` canvases; canvas ``i`` uses its own RNG stream so the output never depends on order."""
    image_dir = root / "images" / split if labels else root
    image_dir.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        rng = np.random.default_rng([seed, GENERATOR_VERSION, list(POOL_FRACTIONS).index(split), i])
        image, boxes = render_canvas(rng, pool, size)
        Image.fromarray(image).save(image_dir / f"{split}_{i:05d}.jpg", quality=JPEG_QUALITY)
        if labels:
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{split}_{i:05d}.txt").write_text(_label_text(boxes, size))


def _build_atomically(root: Path, params: dict, build: Callable[[Path], None]) -> Path:
    """Build into a sibling temp folder, then swap it in; refuse to replace a folder we did not make.

    Processes building the same folder at once queue: the first builds it, the others reuse it.
    """
    with writers_queued(root):
        if _is_current(root, params):
            return root
        if root.exists() and any(root.iterdir()) and not (root / PARAMS_FILE).is_file():
            raise EdgeCompressError(f"{root} exists and was not made by the digits generator; pass an empty or new folder")
        with atomic_dir(root) as tmp:
            build(tmp)
            write_json(tmp / PARAMS_FILE, params)
    return root


def _check_canvas_size(image_size: int) -> None:
    if image_size < MIN_CANVAS:
        raise EdgeCompressError(f"digits canvases need image_size >= {MIN_CANVAS}, got {image_size}; pass a larger size")


def _is_current(root: Path, params: dict) -> bool:
    try:
        return json.loads((root / PARAMS_FILE).read_text()) == params
    except (OSError, ValueError):
        return False


def make_digits_detection(
    root: str | os.PathLike, *, n_train: int = 2000, n_val: int = 400, image_size: int = 128, seed: int = 0
) -> Path:
    """Build (or reuse, if built with the same parameters) the digits detection set; return its ``data.yaml``."""
    _check_canvas_size(image_size)
    root = Path(root).resolve()
    params = {"generator": "sklearn-digits-detection", "version": GENERATOR_VERSION, "root": str(root),
              "n_train": n_train, "n_val": n_val, "image_size": image_size, "seed": seed, "flip": False}  # a set without it gets the key
    if (root / "data.yaml").is_file() and _is_current(root, params):
        return root / "data.yaml"
    pools = split_source_digits()

    def build(tmp: Path) -> None:
        _write_split(tmp, "train", n_train, image_size, seed, pools["train"], labels=True)
        _write_split(tmp, "val", n_val, image_size, seed, pools["val"], labels=True)
        config = {"path": str(root), "train": "images/train", "val": "images/val", "nc": 10,
                  "names": [str(d) for d in range(10)], "flip": False}
        write_text(tmp / "data.yaml", yaml.safe_dump(config, sort_keys=False))

    _build_atomically(root, params, build)
    return root / "data.yaml"


def make_calibration_images(folder: str | os.PathLike, *, count: int = 300, image_size: int = 128, seed: int = 1) -> Path:
    """Write ``count`` unlabelled canvases from the calibration pool of digits into ``folder/images``."""
    _check_canvas_size(image_size)
    root = Path(folder).resolve() / "images"
    params = {"generator": "sklearn-digits-calibration", "version": GENERATOR_VERSION,
              "count": count, "image_size": image_size, "seed": seed}
    if _is_current(root, params):
        return root
    pool = split_source_digits()["calib"]
    return _build_atomically(
        root, params, lambda tmp: _write_split(tmp, "calib", count, image_size, seed, pool, labels=False)
    )
