"""Model-level quantization: fold BN, swap layers for their quantized twins, calibrate the ranges."""

from __future__ import annotations

import copy
import warnings
from typing import Sequence

import torch
from torch import nn

from ..errors import EdgeCompressError
from ..helpers import evaluating
from .calibrators import MaxCalibrator, make_calibrator
from .fold import fold_batchnorm
from .forward_loop import CalibrationData, as_forward_loop
from .modules import overrides_forward, quant_module_for
from .placement import get_backend, place_activation_quantizers
from .quantizer import TensorQuantizer


def quantize_model(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    skip: Sequence[str] = (),
    float_layers: Sequence[str] | None = None,
    fold: bool = True,
    backend: str = "tensorrt",
    learn_scales: bool = False,
    weight_bits: int = 8,
) -> nn.Module:
    """A copy of ``model`` with BN folded, every layer with a registered twin (Conv2d, Linear, see
    :func:`~edgecompress.quant.modules.quant_module_for`) quantized and activation quantizers placed
    for ``backend`` ("tensorrt", "onnxruntime" or "openvino"; see :mod:`.placement`).

    ``skip`` names layers (or whole submodules) to keep in float, and may also name quantizers placed
    on add/concat inputs (``add_1_quantizer``), as a sensitivity report lists them. Quantizers are
    placed as if every layer were quantized, then skipped layers get their float module back and
    skipped placed quantizers stay off for good, so a report's list reproduces the model it measured.

    ``float_layers`` names the layers kept in float by the model's own choice, on top of ``skip``:
    None takes :func:`default_float_layers` (a detector's box/class prediction convs), ``()``
    quantizes those too, and any other list replaces the default.

    A model whose forward has adds, concats (or, for onnxruntime, pooling) to quantize comes back as a
    ``torch.fx.GraphModule`` that keeps the model's buffers and attributes. ``learn_scales=True``
    makes every calibrated activation range a Parameter that QAT trains (LSQ). The quantizers start disabled;
    :func:`calibrate` sets their ranges and turns them on. ``weight_bits=7`` quantizes every weight to
    7 bits (codes in [-63, 63], stored as int8), for x86 CPUs whose int8 kernels saturate (no VNNI).
    """
    get_backend(backend)
    kept_float = (*(default_float_layers(model) if float_layers is None else float_layers), *skip)
    quantized = fold_batchnorm(model, example_input) if fold else copy.deepcopy(model)
    replaced = _swap_in_twins(quantized)
    _warn_unmatched_subclasses(quantized, kept_float)
    quantized = place_activation_quantizers(quantized, backend, float_layers=[name for name in replaced if _is_under(name, kept_float)])
    _keep_float(quantized, kept_float, dict(model.named_modules()), replaced)
    for quantizer in quantizers(quantized).values():
        if quantizer.axis is not None:
            quantizer.set_bits(weight_bits)
    if learn_scales:
        for quantizer in quantizers(quantized).values():
            if quantizer.axis is None and quantizer.fixed_amax is None:
                quantizer.learn_amax()
    return quantized


def default_float_layers(model: nn.Module) -> tuple[str, ...]:
    """The layers ``model`` keeps in float when quantized: those its ``prediction_layers()`` names, else none.

    A detector's final box/class convs (and a DFL conv inside its network) write the raw outputs that
    the decoder reads in float; NVIDIA's and Ultralytics' QAT recipes leave them unquantized. A
    model opts in by defining ``prediction_layers()`` (module names), as ``models.YoloV8`` does.
    """
    prediction_layers = getattr(model, "prediction_layers", None)
    return tuple(prediction_layers()) if callable(prediction_layers) else ()


def _swap_in_twins(model: nn.Module) -> dict[str, nn.Module]:
    """Replace every layer that has a quantized twin, in place; returns the float layers by name."""
    float_layers = {}
    for name, module in list(model.named_modules()):
        quant_type = quant_module_for(module)
        if quant_type is None or _is_under(name, float_layers):  # inside a layer already replaced
            continue
        twin = quant_type.from_float(module)
        if not isinstance(getattr(twin, "input_quantizer", None), TensorQuantizer):
            raise EdgeCompressError(f"{quant_type.__name__}.from_float must return a module with an input_quantizer (a TensorQuantizer)")
        float_layers[name] = module
        model.set_submodule(name, twin)
    return float_layers


def _warn_unmatched_subclasses(model: nn.Module, skip: Sequence[str]) -> None:
    """Warn about layers that subclass a registered float type but stay float because they override forward."""
    names = [name for name, module in model.named_modules()
             if overrides_forward(module) and not _is_under(name, skip)]
    if names:
        warnings.warn(f"layers {names} subclass a quantizable layer type but override forward, so they stay float; "
                      "register a quantized twin for their class with register_quant_module, or name them in skip", stacklevel=3)


def _keep_float(quantized: nn.Module, skip: Sequence[str], original: dict[str, nn.Module], float_layers: dict[str, nn.Module]) -> None:
    """Put the float layers named in ``skip`` (or under a named submodule) back, and keep the named placed quantizers off."""
    placed = quantizers(quantized)
    unknown = [name for name in skip if name not in original and name not in placed]
    if unknown:
        raise EdgeCompressError(f"skip names {unknown} are neither modules of the model nor placed quantizers; "
                                "use names from model.named_modules() or from a sensitivity report")
    for name, layer in float_layers.items():
        if _is_under(name, skip):
            quantized.set_submodule(name, layer)
    for name in skip:
        if name in placed:
            placed[name].keep_float()


def _is_under(name: str, prefixes: Sequence[str]) -> bool:
    """Whether module ``name`` is one of ``prefixes`` or inside one of them."""
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def quantizers(model: nn.Module) -> dict[str, TensorQuantizer]:
    """Every TensorQuantizer of ``model`` by module name."""
    return {name: module for name, module in model.named_modules() if isinstance(module, TensorQuantizer)}


def learned_range_groups(model: nn.Module, lr: float | None) -> list[dict]:
    """Optimizer parameter groups that train the learned ranges (LSQ ``amax``) of ``model`` at their own ``lr``.

    For ``fit(..., param_groups=...)``: one group without weight decay, or none when ``lr`` is None
    or no quantizer learns its range (the ranges then train with the other parameters).
    """
    ranges = [q.amax for q in quantizers(model).values() if isinstance(q.amax, nn.Parameter) and q.amax.requires_grad]
    if lr is None or not ranges:
        return []
    return [{"params": ranges, "lr": lr, "weight_decay": 0.0}]


def calibrate(
    model: nn.Module, data: CalibrationData, *, method: str = "max", percentile: float = 99.99
) -> dict[str, float]:
    """Collect ranges on ``data``, then switch every quantizer (but those kept in float) to fake quantization.

    ``data`` is a ``forward_loop(model)`` callable that runs representative inputs through the
    model, or an iterable of batches (tensors or (images, ...) tuples from a DataLoader; see
    :func:`~edgecompress.quant.forward_loop.batches_loop`). It runs once, with the model in eval
    mode and without gradients. Activations use ``method`` (see
    :data:`~edgecompress.quant.calibrators.CALIBRATORS`); weights always use the per-channel max of
    |w|. Returns the range (amax) of every activation quantizer, by the name of the layer it feeds
    (or of the quantizer, for one placed on an add/concat input).
    """
    every = quantizers(model)
    if not every:
        raise EdgeCompressError("the model has no quantizers; call quantize_model(model, example_input) before calibrate")
    forward_loop = as_forward_loop(data)
    found = {name: quantizer for name, quantizer in every.items() if not quantizer.kept_float and quantizer.fixed_amax is None}
    fixed = {name: quantizer for name, quantizer in every.items() if not quantizer.kept_float and quantizer.fixed_amax is not None}
    for quantizer in found.values():
        quantizer.begin_calibration(make_calibrator(method, percentile=percentile) if quantizer.axis is None else MaxCalibrator(quantizer.axis))
    try:
        with evaluating(model):
            forward_loop(model)
        _check_every_quantizer_saw_data(found)
    except BaseException:
        for quantizer in found.values():
            quantizer.abort_calibration()
        raise
    ranges = {}
    for name, quantizer in found.items():
        amax = quantizer.end_calibration()
        if quantizer.axis is None:
            ranges[name.removesuffix(".input_quantizer")] = float(amax.detach())
    for name, quantizer in fixed.items():
        quantizer.set_amax(torch.tensor(quantizer.fixed_amax))
        ranges[name] = quantizer.fixed_amax
    return ranges


def _check_every_quantizer_saw_data(found: dict[str, TensorQuantizer]) -> None:
    unused = [name for name, quantizer in found.items() if quantizer.calibrator.collected == 0]
    if unused and len(unused) == len(found):
        raise EdgeCompressError("calibration ran no data through the model; the forward loop must call model(inputs) on representative batches")
    if unused:
        raise EdgeCompressError(f"quantizers {unused} received no input during calibration; skip their layers in quantize_model(skip=...)")
