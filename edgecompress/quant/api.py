"""``edgecompress.quantize``: fold BN, swap in int8 fake-quant layers, calibrate, then optionally QAT, in one call."""

from __future__ import annotations

import itertools
from typing import Callable, Iterable, Sequence

from torch import Tensor, nn

from ..errors import EdgeCompressError
from .calibrators import CALIBRATORS
from .quantize import calibrate, quantize_model

LossFn = Callable[[object, Tensor], Tensor]


def _images(batch: object) -> Tensor:
    """The image tensor of a batch: a tensor, or the first item of an (images, targets) tuple."""
    images = batch[0] if isinstance(batch, (tuple, list)) else batch
    if not isinstance(images, Tensor):
        raise EdgeCompressError(f"calibration batches must be tensors or (images, ...) tuples, got {type(images).__name__}; pass a DataLoader of images")
    return images


def calibrated_model(
    model: nn.Module, calib_loader: Iterable, *, method: str = "mse", skip: Sequence[str] = (), backend: str = "tensorrt",
    example_input: Tensor | None = None, percentile: float = 99.99,
) -> nn.Module:
    """A quantized copy of ``model`` (BN folded, layers swapped) calibrated on ``calib_loader``; ``model`` is untouched."""
    if method not in CALIBRATORS:
        raise EdgeCompressError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATORS)}")
    batches = iter(calib_loader)
    first = next(batches, None)
    if first is None:
        raise EdgeCompressError("the calibration loader is empty; pass a few hundred representative images")
    example = example_input if example_input is not None else _images(first)[:1]
    quantized = quantize_model(model, example, skip=tuple(skip), backend=backend)
    calibrate(quantized, itertools.chain([first], batches), method=method, percentile=percentile)
    return quantized


def train_qat(model: nn.Module, train_loader: Iterable, loss_fn: LossFn, *, epochs: int, lr: float = 1e-4, description: str = "qat") -> nn.Module:
    """Quantization-aware training of a calibrated model, in place, with the project's training loop (no warm-up)."""
    from ..train.loop import TrainConfig, fit

    fit(model, train_loader, loss_fn, TrainConfig(epochs, lr=lr, warmup_steps=0), description=description)
    return model


def quantize(
    model: nn.Module,
    calib_loader: Iterable,
    *,
    method: str = "mse",
    qat_epochs: int = 0,
    skip: Sequence[str] = (),
    backend: str = "tensorrt",
    train_loader: Iterable | None = None,
    loss_fn: LossFn | None = None,
    lr: float = 1e-4,
    example_input: Tensor | None = None,
) -> nn.Module:
    """An int8 fake-quantized copy of ``model``, ready for :func:`~edgecompress.export.export_onnx`.

    Folds BatchNorm, swaps every Conv2d/Linear not in ``skip`` for its quantized twin, calibrates
    activation ranges with ``method`` on ``calib_loader`` (tensors or (images, ...) batches), then
    runs ``qat_epochs`` of quantization-aware training on ``train_loader`` with ``loss_fn``.
    """
    if qat_epochs < 0:
        raise EdgeCompressError(f"qat_epochs must be >= 0, got {qat_epochs}")
    if qat_epochs and (train_loader is None or loss_fn is None):
        raise EdgeCompressError("qat_epochs > 0 needs train_loader and loss_fn; pass both, or qat_epochs=0 for calibration only")
    quantized = calibrated_model(model, calib_loader, method=method, skip=skip, backend=backend, example_input=example_input)
    if qat_epochs:
        train_qat(quantized, train_loader, loss_fn, epochs=qat_epochs, lr=lr)
    return quantized.eval()
