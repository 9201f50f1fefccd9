"""Training-time augmentation of detection samples: the patent's random crop, perspective warp, horizontal flip
and mixup, on top of the light placement (zoom, shift) and colour jitter every training loader applies.

Every geometric step maps the image and its boxes with the same transform: a crop shifts and clips them, the
letterbox scales them, a warp maps each box's four corners through the warp's homography (the box becomes the
corners' enclosing box, exact for a rectangle), a flip mirrors them. Boxes are clipped to the image; one cut
thinner than :data:`MIN_BOX_SIDE` pixels, or with less than :data:`MIN_VISIBLE` of its area left inside the
image, is dropped. Mixup blends two augmented samples and keeps the boxes of both.

Levels (``--augment``): ``none``; ``light`` (placement and colour jitter); ``full`` (light plus crop, warp,
flip and mixup). Flipping is skipped for a dataset whose ``data.yaml`` says ``flip: false`` (the bundled
digits: a mirrored digit is another class or none).

Determinism: sample ``i`` in epoch ``e`` draws every random choice from ``np.random.default_rng([seed, e, i])``,
so a run is reproduced under a seed whatever the worker count (see :mod:`.loaders`), and a distributed run, whose
processes read disjoint indices of each epoch, draws each sample as one process would.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import EdgeCompressError
from .preprocess import PAD_VALUE, letterbox

MIN_BOX_SIDE = 2.0  # output pixels; boxes augmentation cuts thinner than this are dropped
MIN_VISIBLE = 0.2  # fraction of a box's area that must stay inside the image for it to be kept
CROP_SIDE = (0.6, 1.0)  # a crop keeps this fraction of each side of the source image
WARP_DEGREES = 5.0  # rotation of the warp, either way
WARP_CORNER = 0.05  # each image corner moves by up to this fraction of the side (perspective and shear)
MIXUP_BETA = 8.0  # the first image's weight is drawn from Beta(8, 8): mean 0.5, standard deviation 0.12


@dataclass(frozen=True)
class Augmentation:
    """What a training sample goes through; ``crop``, ``warp``, ``flip`` and ``mixup`` are per-sample probabilities."""

    name: str
    placement: bool = False  # letterbox zoom 0.8..1.2 and shift by up to 10% of the side
    photometric: bool = False  # contrast x0.7..1.3 and brightness +-0.1
    crop: float = 0.0  # a random window of CROP_SIDE of each side of the source image
    warp: float = 0.0  # rotation by up to WARP_DEGREES and a perspective warp moving corners by up to WARP_CORNER
    flip: float = 0.0  # horizontal mirror
    mixup: float = 0.0  # blend with another training sample, boxes of both kept

    @property
    def moves_labels(self) -> bool:
        """Whether it crops, warps, flips or mixes: what detection boxes follow, and a class label may not."""
        return bool(self.crop or self.warp or self.flip or self.mixup)

    @property
    def active(self) -> bool:
        """Whether it changes anything (``none`` does not)."""
        return self.placement or self.photometric or self.moves_labels

    def without_flip(self) -> Augmentation:
        """The same, never flipping (for a dataset whose data.yaml says ``flip: false``)."""
        return replace(self, flip=0.0)


AUGMENTATIONS: dict[str, Augmentation] = {
    augmentation.name: augmentation
    for augmentation in (
        Augmentation("none"),
        Augmentation("light", placement=True, photometric=True),
        Augmentation("full", placement=True, photometric=True, crop=0.5, warp=0.5, flip=0.5, mixup=0.15),
    )
}


def get_augmentation(augmentation: str | Augmentation) -> Augmentation:
    """An :class:`Augmentation`, or the level of that name in :data:`AUGMENTATIONS`."""
    if isinstance(augmentation, Augmentation):
        return augmentation
    if augmentation not in AUGMENTATIONS:
        raise EdgeCompressError(f"unknown augmentation {augmentation!r}; choose one of {', '.join(AUGMENTATIONS)}")
    return AUGMENTATIONS[augmentation]


class EpochSeeded:
    """For a dataset that augments: ``seed`` and ``epoch`` pick each sample's random stream. The training loop calls
    :meth:`set_epoch` before every epoch (as it does a DistributedSampler's), so each epoch draws afresh. The epoch is
    held in shared memory, so a DataLoader's worker processes, which keep their copy of the dataset between epochs,
    read the one set here."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def sample_rng(self, index: int) -> np.random.Generator:
        """The random stream of sample ``index`` in this epoch: ``np.random.default_rng([seed, epoch, index])``."""
        return np.random.default_rng([self.seed, self.epoch, index])


def jitter_photometric(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Random contrast (x0.7..1.3 about the mean) and brightness (+-0.1), clipped to [0,1]."""
    contrast = float(rng.uniform(0.7, 1.3))
    brightness = float(rng.uniform(-0.1, 0.1))
    mean = image.mean()
    return ((image - mean) * contrast + mean + brightness).clamp_(0.0, 1.0)


def random_placement(size: int, rng: np.random.Generator) -> tuple[float, tuple[float, float]]:
    """A small random zoom (0.8..1.2) and shift (+-10% of the side) for :func:`letterbox`."""
    zoom = float(rng.uniform(0.8, 1.2))
    shift = (float(rng.uniform(-0.1, 0.1) * size), float(rng.uniform(-0.1, 0.1) * size))
    return zoom, shift


def clip_boxes(boxes: np.ndarray, width: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel boxes ``[N,4]`` clipped to the image, and the fraction of each one's area left inside it."""
    clipped = np.stack([boxes[:, 0].clip(0, width), boxes[:, 1].clip(0, height), boxes[:, 2].clip(0, width), boxes[:, 3].clip(0, height)], 1)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    return clipped, np.divide(inside, area, out=np.zeros_like(area), where=area > 0)


def random_crop(image: Image.Image, boxes: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """A window of ``CROP_SIDE`` of each side at a random place; boxes shifted and clipped into it, with their visible fractions."""
    width, height = image.size
    new_w = max(1, round(width * rng.uniform(*CROP_SIDE)))
    new_h = max(1, round(height * rng.uniform(*CROP_SIDE)))
    left, top = int(rng.integers(0, width - new_w + 1)), int(rng.integers(0, height - new_h + 1))
    shifted = boxes - np.array([left, top, left, top], dtype=boxes.dtype)
    clipped, visible = clip_boxes(shifted, new_w, new_h)
    return image.crop((left, top, left + new_w, top + new_h)), clipped, visible


def homography(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 3x3 projective map taking four points ``source [4,2]`` to ``target [4,2]`` (the direct linear transform)."""
    rows, values = [], []
    for (x, y), (u, v) in zip(source, target):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        values += [u, v]
    return np.append(np.linalg.solve(np.array(rows, dtype=np.float64), np.array(values, dtype=np.float64)), 1.0).reshape(3, 3)


def warp_image(image: torch.Tensor, matrix: np.ndarray) -> torch.Tensor:
    """``image [C,H,W]`` mapped through the homography ``matrix`` (pixel coordinates, corners at integers), bilinear,
    the uncovered area filled with the letterbox grey."""
    height, width = image.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5, torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], -1) @ torch.from_numpy(np.linalg.inv(matrix)).T
    source = points[..., :2] / points[..., 2:]  # where each output pixel's centre comes from
    grid = (source / torch.tensor([width, height], dtype=torch.float64) * 2 - 1).to(image.dtype)
    pad = PAD_VALUE / 255.0
    sampled = F.grid_sample((image - pad)[None], grid[None], mode="bilinear", padding_mode="zeros", align_corners=False)
    return sampled[0] + pad


def warp_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Each box's four corners mapped through ``matrix``; the boxes enclosing them."""
    x1, y1, x2, y2 = boxes.T
    corners = np.stack([np.stack([x1, y1], 1), np.stack([x2, y1], 1), np.stack([x2, y2], 1), np.stack([x1, y2], 1)], 1)
    mapped = np.concatenate([corners, np.ones(corners.shape[:2] + (1,))], -1) @ matrix.T
    mapped = mapped[..., :2] / mapped[..., 2:]
    return np.concatenate([mapped.min(1), mapped.max(1)], 1).astype(np.float32)


def random_warp(image: torch.Tensor, boxes: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
    """Rotate by up to ``WARP_DEGREES`` about the centre and move each corner by up to ``WARP_CORNER`` of the side."""
    size = image.shape[-1]
    corners = np.array([[0, 0], [size, 0], [size, size], [0, size]], dtype=np.float64)
    angle = np.deg2rad(rng.uniform(-WARP_DEGREES, WARP_DEGREES))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    target = (corners - size / 2) @ rotation.T + size / 2 + rng.uniform(-WARP_CORNER, WARP_CORNER, (4, 2)) * size
    matrix = homography(corners, target)
    return warp_image(image, matrix), warp_boxes(boxes, matrix)


def flip_horizontal(image: torch.Tensor, boxes: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """The mirror image, and its boxes."""
    width = image.shape[-1]
    return image.flip(-1), np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)


def augment_detection(image: Image.Image, boxes: np.ndarray, size: int, augmentation: Augmentation,
                      rng: np.random.Generator | None) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """One detection sample letterboxed to ``size`` and augmented (no mixup: that takes two samples, see :func:`mixup`).

    ``boxes``: ``[N,4]`` source pixels (x1, y1, x2, y2). Returns the image ``[3,S,S]``, the boxes in output pixels
    clipped to it, and which boxes to keep; with ``rng`` None, the plain letterbox, keeping every box of positive size.
    """
    boxes = boxes.astype(np.float32)
    visible = np.ones(len(boxes), dtype=np.float32)
    if rng is None:
        tensor, box_map = letterbox(image, size)
        clipped, _ = clip_boxes(box_map.map_xyxy(boxes), size, size)
        return tensor, clipped, (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    if rng.random() < augmentation.crop:
        image, boxes, visible = random_crop(image, boxes, rng)
    zoom, shift = random_placement(size, rng) if augmentation.placement else (1.0, (0.0, 0.0))
    tensor, box_map = letterbox(image, size, zoom=zoom, shift=shift)
    boxes, inside = clip_boxes(box_map.map_xyxy(boxes), size, size)  # what the placement pushed off the canvas is gone
    visible = visible * inside
    if rng.random() < augmentation.warp:
        tensor, boxes = random_warp(tensor, boxes, rng)
        boxes, inside = clip_boxes(boxes, size, size)
        visible = visible * inside
    if rng.random() < augmentation.flip:
        tensor, boxes = flip_horizontal(tensor, boxes)
    if augmentation.photometric:
        tensor = jitter_photometric(tensor, rng)
    keep = ((boxes[:, 2] - boxes[:, 0]) > MIN_BOX_SIDE) & ((boxes[:, 3] - boxes[:, 1]) > MIN_BOX_SIDE) & (visible >= MIN_VISIBLE)
    return tensor, boxes, keep


def mixup(first: torch.Tensor, second: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """The two images blended with a weight drawn from Beta(MIXUP_BETA, MIXUP_BETA); the caller keeps both samples' boxes."""
    weight = float(rng.beta(MIXUP_BETA, MIXUP_BETA))
    return first * weight + second * (1.0 - weight)
