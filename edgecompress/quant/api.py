"""``edgecompress.quantize``: fold BN, swap in int8 fake-quant layers, calibrate, then optionally QAT, in one call."""

from __future__ import annotations

import itertools
from typing import Callable, Iterable, Sequence

from torch import Tensor, nn

from ..errors import EdgeCompressError
from .calibrators import CALIBRATORS
from .forward_loop import CalibrationData, batch_images, batches_loop, is_forward_loop
from .quantize import calibrate, learned_range_groups, quantize_model

LossFn = Callable[[object, Tensor], Tensor]


def calibrated_model(
    model: nn.Module, calib_data: CalibrationData, *, method: str = "mse", skip: Sequence[str] = (), backend: str = "tensorrt",
    example_input: Tensor | None = None, percentile: float = 99.99, float_layers: Sequence[str] | None = None, weight_bits: int = 8,
) -> nn.Module:
    """A quantized copy of ``model`` (BN folded, layers swapped) calibrated on ``calib_data``; ``model`` is untouched.

    ``calib_data`` is a ``forward_loop(model)`` callable, which needs ``example_input`` to trace the
    model, or an iterable of batches (tensors or (images, ...) tuples), whose first batch's first
    image is the example input unless ``example_input`` is given. ``skip`` and ``float_layers`` are
    :func:`~edgecompress.quant.quantize_model`'s (None: the model's default float layers), and so is ``weight_bits``.
    """
    if method not in CALIBRATORS:
        raise EdgeCompressError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATORS)}")
    if is_forward_loop(calib_data):
        if example_input is None:
            raise EdgeCompressError("calibrating with a forward loop needs example_input= (one input batch, e.g. images[:1]) to trace the model")
        example, forward_loop = example_input, calib_data
    else:
        batches = iter(calib_data)
        first = next(batches, None)
        if first is None:
            raise EdgeCompressError("the calibration loader is empty; pass a few hundred representative images")
        example = example_input if example_input is not None else batch_images(first)[:1]
        forward_loop = batches_loop(itertools.chain([first], batches))
    quantized = quantize_model(model, example, skip=tuple(skip), float_layers=float_layers, backend=backend, weight_bits=weight_bits)
    calibrate(quantized, forward_loop, method=method, percentile=percentile)
    return quantized


def train_qat(
    model: nn.Module, train_loader: Iterable, loss_fn: LossFn, *, epochs: int, lr: float = 1e-4, scale_lr: float | None = None,
    description: str = "qat", validate: Callable[[nn.Module], dict[str, float]] | None = None, keep_best: str | None = None,
):
    """Quantization-aware training of a calibrated model, in place, with the project's training loop (no warm-up);
    returns the :class:`~edgecompress.train.history.TrainHistory`.

    ``scale_lr`` gives learned ranges (``quantize_model(learn_scales=True)``) their own learning
    rate; None trains them with the other parameters at ``lr``. With ``validate`` (module -> metrics) and
    ``keep_best`` (one of its metric names) the calibrated weights and every epoch's are measured and the
    model ends with the best of them, so QAT never leaves it worse than calibration did.
    """
    from ..train.loop import TrainConfig, fit

    return fit(model, train_loader, loss_fn, TrainConfig(epochs, lr=lr, warmup_steps=0), param_groups=learned_range_groups(model, scale_lr),
               description=description, validate=validate, keep_best=keep_best)


def quantize(
    model: nn.Module,
    calib_data: CalibrationData,
    *,
    method: str = "mse",
    qat_epochs: int = 0,
    skip: Sequence[str] = (),
    float_layers: Sequence[str] | None = None,
    backend: str = "tensorrt",
    train_loader: Iterable | None = None,
    loss_fn: LossFn | None = None,
    lr: float = 1e-4,
    example_input: Tensor | None = None,
    weight_bits: int = 8,
) -> nn.Module:
    """An int8 fake-quantized copy of ``model``, ready for :func:`~edgecompress.export.export_onnx`.

    Folds BatchNorm, swaps every layer with a registered quantized twin (Conv2d, Linear) not in
    ``skip`` (nor in ``float_layers``: None keeps the model's default float layers, a detector's
    prediction convs, see :func:`~edgecompress.quant.quantize.default_float_layers`; ``()``
    quantizes them too) for that twin, calibrates activation ranges with ``method`` on ``calib_data`` (an
    iterable of tensors or (images, ...) batches, or a ``forward_loop(model)`` callable together
    with ``example_input``; ``weight_bits=7`` for x86 CPUs without VNNI), then runs ``qat_epochs`` of quantization-aware training on
    ``train_loader`` with ``loss_fn``.
    """
    if qat_epochs < 0:
        raise EdgeCompressError(f"qat_epochs must be >= 0, got {qat_epochs}")
    if qat_epochs and (train_loader is None or loss_fn is None):
        raise EdgeCompressError("qat_epochs > 0 needs train_loader and loss_fn; pass both, or qat_epochs=0 for calibration only")
    quantized = calibrated_model(model, calib_data, method=method, skip=skip, backend=backend, example_input=example_input,
                                 float_layers=float_layers, weight_bits=weight_bits)
    if qat_epochs:
        train_qat(quantized, train_loader, loss_fn, epochs=qat_epochs, lr=lr)
    return quantized.eval()
