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
    """A copy of ``model`` with BN folded, every Conv2d/Linear quantized and activation quantizers placed
    for ``backend`` ("tensorrt" or "onnxruntime"; see :mod:`.placement`).

    ``skip`` names layers (or whole submodules) to keep in float, and may also name quantizers placed
    on add/concat inputs (``add_1_quantizer``), as a sensitivity report lists them. Quantizers are
    placed as if every layer were quantized, then skipped layers get their float module back and
    skipped placed quantizers stay off for good, so a report's list reproduces the model it measured.

    A model whose forward has adds, concats (or, for onnxruntime, pooling) to quantize comes back as a
    ``torch.fx.GraphModule`` that keeps the model's buffers and attributes. ``learn_scales=True``
    makes every activation range a Parameter that QAT trains (LSQ). The quantizers start disabled;
    :func:`calibrate` sets their ranges and turns them on.
    """
    get_backend(backend)
    quantized = fold_batchnorm(model, example_input) if fold else copy.deepcopy(model)
    float_layers = {}
    for name, module in list(quantized.named_modules()):
        quant_type = QUANT_MODULES.get(type(module))
        if quant_type is not None:
            float_layers[name] = module
            quantized.set_submodule(name, quant_type.from_float(module))
    quantized = place_activation_quantizers(quantized, backend)
    _keep_float(quantized, skip, dict(model.named_modules()), float_layers)
    if learn_scales:
        for quantizer in quantizers(quantized).values():
            if quantizer.axis is None:
                quantizer.learn_amax()
    return quantized


def _keep_float(quantized: nn.Module, skip: Sequence[str], original: dict[str, nn.Module], float_layers: dict[str, nn.Module]) -> None:
    """Put the float layers named in ``skip`` (or under a named submodule) back, and keep the named placed quantizers off."""
    placed = quantizers(quantized)
    unknown = [name for name in skip if name not in original and name not in placed]
    if unknown:
        raise EdgeCompressError(f"skip names {unknown} are neither modules of the model nor placed quantizers; "
                                "use names from model.named_modules() or from a sensitivity report")

    def skipped(name: str) -> bool:
        return any(name == prefix or name.startswith(prefix + ".") for prefix in skip)

    for name, layer in float_layers.items():
        if skipped(name):
            quantized.set_submodule(name, layer)
    for name in skip:
        if name in placed:
            placed[name].keep_float()


def quantizers(model: nn.Module) -> dict[str, TensorQuantizer]:
    """Every TensorQuantizer of ``model`` by module name."""
    return {name: module for name, module in model.named_modules() if isinstance(module, TensorQuantizer)}


def calibrate(
    model: nn.Module, batches: Iterable[torch.Tensor], *, method: str = "max", percentile: float = 99.99
) -> dict[str, float]:
    """Collect ranges on ``batches``, then switch every quantizer (but those kept in float) to fake quantization.

    Activations use ``method`` (see :data:`~edgecompress.quant.calibrators.CALIBRATORS`); weights
    always use the per-channel max of |w|. A batch may also be an (images, ...) tuple from a
    DataLoader. Returns the range (amax) of every activation quantizer, by the name of the layer it
    feeds (or of the quantizer, for one placed on an add/concat input).
    """
    every = quantizers(model)
    if not every:
        raise EdgeCompressError("the model has no quantizers; call quantize_model(model, example_input) before calibrate")
    found = {name: quantizer for name, quantizer in every.items() if not quantizer.kept_float}
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

