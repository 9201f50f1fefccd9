"""Model-level QAT preparation: fold BN, swap layers for quantized ones, calibrate the ranges."""

from __future__ import annotations

import copy
from typing import Iterable, Sequence

import torch
from torch import nn

from ..errors import EdgeCompressError
from .calibrators import MaxCalibrator, make_calibrator
from .fold import fold_batchnorm
from .modules import QUANT_MODULES
from .placement import get_backend, place_activation_quantizers
from .quantizer import TensorQuantizer


def quantize_model(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    skip: Sequence[str] = (),
    fold: bool = True,
    backend: str = "tensorrt",
    learn_scales: bool = False,
) -> nn.Module:
    """A copy of ``model`` with BN folded, every Conv2d/Linear (except names in ``skip``) quantized and
    activation quantizers placed for ``backend`` ("tensorrt" or "onnxruntime"; see :mod:`.placement`).

    A model whose forward has adds, concats (or, for onnxruntime, pooling) to quantize comes back as a
    ``torch.fx.GraphModule`` that keeps the model's buffers and attributes. ``learn_scales=True``
    makes every activation range a Parameter that QAT trains (LSQ). The quantizers start disabled;
    :func:`calibrate` sets their ranges and turns them on.
    """
    get_backend(backend)
    modules = dict(model.named_modules())
    unknown = [name for name in skip if name not in modules]
    if unknown:
        raise EdgeCompressError(f"skip names {unknown} are not modules of the model; use names from model.named_modules()")
    quantized = fold_batchnorm(model, example_input) if fold else copy.deepcopy(model)
    for name, module in list(quantized.named_modules()):
        quant_type = QUANT_MODULES.get(type(module))
        if quant_type is not None and name not in skip:
            quantized.set_submodule(name, quant_type.from_float(module))
    quantized = place_activation_quantizers(quantized, backend)
    if learn_scales:
        for quantizer in quantizers(quantized).values():
            if quantizer.axis is None:
                quantizer.learn_amax()
    return quantized


def quantizers(model: nn.Module) -> dict[str, TensorQuantizer]:
    """Every TensorQuantizer of ``model`` by module name."""
    return {name: module for name, module in model.named_modules() if isinstance(module, TensorQuantizer)}


def calibrate(
    model: nn.Module, batches: Iterable[torch.Tensor], *, method: str = "max", percentile: float = 99.99
) -> dict[str, float]:
    """Collect ranges on ``batches``, then switch every quantizer to fake quantization.

    Activations use ``method`` (see :data:`~edgecompress.quant.calibrators.CALIBRATORS`); weights
    always use the per-channel max of |w|. A batch may also be an (images, ...) tuple from a
    DataLoader. Returns the range (amax) of every activation quantizer, by the name of the layer it
    feeds (or of the quantizer, for one placed on an add/concat input).
    """
    found = quantizers(model)
    if not found:
        raise EdgeCompressError("the model has no quantizers; call quantize_model(model, example_input) before calibrate")
    for quantizer in found.values():
        quantizer.begin_calibration(make_calibrator(method, percentile=percentile) if quantizer.axis is None else MaxCalibrator(quantizer.axis))
    try:
        _collect_statistics(model, batches, found)
    except BaseException:
        for quantizer in found.values():
            quantizer.abort_calibration()
        raise
    ranges = {}
    for name, quantizer in found.items():
        amax = quantizer.end_calibration()
        if quantizer.axis is None:
            ranges[name.removesuffix(".input_quantizer")] = float(amax.detach())
    return ranges


def _collect_statistics(model: nn.Module, batches: Iterable[torch.Tensor], found: dict[str, TensorQuantizer]) -> None:
    if _run_batches(model, batches) == 0:
        raise EdgeCompressError("calibration got no batches; pass a non-empty iterable of input tensors")
    unused = [name for name, quantizer in found.items() if quantizer.calibrator.collected == 0]
    if unused:
        raise EdgeCompressError(f"quantizers {unused} received no input during calibration; skip their layers in quantize_model(skip=...)")


@torch.no_grad()
def _run_batches(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    model.eval()
    seen = 0
    try:
        for batch in batches:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(images.to(device))
            seen += 1
    finally:
        model.train(was_training)
    return seen

