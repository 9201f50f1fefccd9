"""Calibration data as a forward loop: a callable that runs representative inputs through a model.

A forward loop lets the caller decide how a batch reaches the model (several inputs, a dict,
preprocessing), so calibration never guesses. An iterable of batches (tensors, or (images, ...)
tuples from a DataLoader) is the common case; :func:`batches_loop` turns it into a forward loop.
"""

from __future__ import annotations

from typing import Callable, Iterable, Union

from torch import Tensor, nn

from ..errors import EdgeCompressError
from ..helpers import model_device
from ..progress import track

ForwardLoop = Callable[[nn.Module], object]
CalibrationData = Union[ForwardLoop, Iterable]
"""A forward loop, or an iterable of batches (tensors or (images, ...) tuples)."""


def batch_images(batch: object) -> Tensor:
    """The image tensor of a batch: the batch itself, or the first item of an (images, ...) tuple or list."""
    images = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
    if not isinstance(images, Tensor):
        raise EdgeCompressError(f"batches must be tensors or (images, ...) tuples, got {type(images).__name__}; "
                                "pass a DataLoader of images, or a forward_loop(model) that feeds the model itself")
    return images


def batches_loop(batches: Iterable) -> ForwardLoop:
    """A forward loop that runs every batch's images through the model, on the model's device.

    The loop raises an EdgeCompressError when ``batches`` yields nothing (a generator yields only once).
    """

    def forward_loop(model: nn.Module) -> None:
        device = model_device(model)
        seen = 0
        for batch in track(batches, "calibrating"):
            model(batch_images(batch).to(device))
            seen += 1
        if seen == 0:
            raise EdgeCompressError("got no batches to run through the model; pass a non-empty iterable of input tensors or (images, ...) tuples")

    return forward_loop


def is_forward_loop(data: CalibrationData) -> bool:
    """True for a forward loop (a callable), False for an iterable of batches; an EdgeCompressError for anything else."""
    if callable(data):
        return True
    if isinstance(data, Iterable):
        return False
    raise EdgeCompressError(f"calibration data must be a forward_loop(model) callable or an iterable of batches, got {type(data).__name__}")


def as_forward_loop(data: CalibrationData) -> ForwardLoop:
    """``data`` itself when it is a forward loop, else :func:`batches_loop` over it."""
    return data if is_forward_loop(data) else batches_loop(data)
