"""Export a model (float or fake-quantized) to ONNX, simplify it without losing Q/DQ pairs, convert to fp16.

Where the Q/DQ pairs sit is decided when the model is quantized, per backend (TensorRT or
onnxruntime; see :mod:`edgecompress.quant.placement`); ``export_onnx(..., int8=True)`` checks that
the model is calibrated and that every quantized conv kept its pairs.

The TorchScript exporter (``dynamo=False``) turns ``torch.fake_quantize_*`` into
QuantizeLinear/DequantizeLinear pairs: the explicit-quantization graph TensorRT builds int8
engines from. onnxslim never constant-folds Q/DQ nodes (unlike onnx-simplifier, which folds weight
DequantizeLinear back to float); export still checks that every quantized Conv kept its pairs.
Weight QuantizeLinear nodes are then folded into int8 initializers (weight -> DequantizeLinear, as
TensorRT and onnxruntime both accept), narrow range [-127, 127] (or the weight quantizers' fewer
bits: [-63, 63] for 7-bit weights), so an int8 file stores its weights in a quarter of the bytes.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import onnxslim
import onnxslim.third_party.onnx_graphsurgeon as gs
import torch
from onnx import numpy_helper
from onnxruntime.transformers.float16 import convert_float_to_float16
from torch import nn

from ..artifacts import atomic_path
from ..errors import EdgeCompressError, describe
from ..helpers import evaluating
from ..quant import QuantConv2d, QuantMode, quantizers
from ..quant.calibrators import INT8_BOUND
from .qdq import qdq_summary_of


def export_onnx(
    model: nn.Module,
    example_input: torch.Tensor,
    path: str | os.PathLike,
    *,
    simplify: bool = True,
    opset: int = 17,
    input_names: Sequence[str] = ("images",),
    output_names: Sequence[str] | None = None,
    dynamic_batch: bool = True,
    int8: bool = False,
) -> Path:
    """Write ``model`` (in eval mode) to ``path`` as a checked ONNX file; outputs default to output0..N-1.

    ``int8=True`` requires a calibrated fake-quant model (quantize_model + calibrate) and checks that
    every quantized conv kept DequantizeLinear input and per-channel weight in the written graph.
    """
    if int8:
        _require_quantized(model)
    with evaluating(model):
        names = list(output_names) if output_names is not None else _default_output_names(model, example_input)
        with atomic_path(path) as tmp:
            _torch_export(model, example_input, tmp, opset, list(input_names), names, dynamic_batch)
            if simplify:
                _simplify_keeping_qdq(tmp)
            _store_weights_as_int8(tmp, _weight_bound(model))
            onnx.checker.check_model(str(tmp))
            if int8:
                _require_int8_convs(tmp, expected=_expected_int8_convs(model))
    return Path(path)


def convert_fp16(onnx_in: str | os.PathLike, onnx_out: str | os.PathLike) -> Path:
    """Write an fp16 copy of a float ONNX model (float32 inputs and outputs kept), for fp16 targets."""
    model = _load(onnx_in)
    if qdq_summary_of(model).quantize_linear:
        raise EdgeCompressError(f"{onnx_in} holds Q/DQ (int8) nodes; convert the float export to fp16, not the int8 one")
    half = _toposorted(convert_float_to_float16(model, keep_io_types=True))
    with atomic_path(onnx_out) as tmp:
        onnx.save(half, str(tmp))
        onnx.checker.check_model(str(tmp))
    return Path(onnx_out)


def _require_quantized(model: nn.Module) -> None:
    """A calibrated fake-quant model: some quantizers on, none mid-calibration (off ones are layers kept in float)."""
    found = quantizers(model)
    if not found:
        raise EdgeCompressError(f"{type(model).__name__} is not quantized; call quantize_model and calibrate before export_onnx(int8=True)")
    if all(quantizer.mode is QuantMode.DISABLED for quantizer in found.values()):
        raise EdgeCompressError(f"no quantizer of {type(model).__name__} is enabled; run calibrate(model, batches) before export_onnx(int8=True)")
    calibrating = [name for name, quantizer in found.items() if quantizer.mode is QuantMode.CALIBRATING]
    if calibrating:
        raise EdgeCompressError(f"quantizers {calibrating[:3]} are still calibrating; finish calibrate(model, batches) before export_onnx(int8=True)")


def _weight_bound(model: nn.Module) -> int:
    """Largest int8 weight code of ``model``'s weight quantizers (127, or 63 for 7-bit weights); one for the whole model."""
    bounds = {quantizer.bound for quantizer in quantizers(model).values() if quantizer.axis is not None}
    if len(bounds) > 1:
        raise EdgeCompressError(f"weight quantizers of {type(model).__name__} use different bits ({sorted(bounds)} largest codes); "
                                "export needs one weight width: quantize_model(..., weight_bits=N) sets it for every layer")
    return bounds.pop() if bounds else INT8_BOUND


def _expected_int8_convs(model: nn.Module) -> int:
    """QuantConv2d layers the export must show with int8 input and weight. With layers kept in float
    (mixed precision) a conv may read a disabled shared quantizer, so only one is required then."""
    if any(quantizer.mode is QuantMode.DISABLED for quantizer in quantizers(model).values()):
        return 1
    return sum(isinstance(module, QuantConv2d) for module in model.modules())


def _require_int8_convs(path: Path, expected: int) -> None:
    summary = qdq_summary_of(onnx.load(str(path)))
    if summary.conv_quantized < expected or not summary.weights_per_channel:
        raise EdgeCompressError(
            f"the export has {summary.conv_quantized} Convs with int8 per-channel input and weight, the model {expected}; "
            "export with simplify=False, or report the model's layers that lost their Q/DQ"
        )


def _default_output_names(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    with torch.no_grad():
        output = model(example_input)
    count = 1 if isinstance(output, torch.Tensor) else len(output)
    return [f"output{i}" for i in range(count)]


def _torch_export(
    model: nn.Module, example_input: torch.Tensor, path: Path, opset: int, input_names: list[str], output_names: list[str], dynamic_batch: bool
) -> None:
    dynamic_axes = {name: {0: "batch"} for name in input_names + output_names} if dynamic_batch else None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", message=".*The feature will be removed.*")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                model, (example_input,), str(path), dynamo=False, opset_version=opset,
                input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
            )
    except Exception as exc:  # the exporter raises many types for unsupported operators
        raise EdgeCompressError(
            f"ONNX export of {type(model).__name__} failed ({describe(exc)}); "
            "try a newer --opset or replace the unsupported operator"
        ) from None


def _simplify_keeping_qdq(path: Path) -> None:
    model = onnx.load(str(path))
    before = qdq_summary_of(model)
    slimmed = onnxslim.slim(model)
    after = qdq_summary_of(slimmed)
    if after.conv_quantized < before.conv_quantized:
        raise EdgeCompressError("onnxslim removed Q/DQ pairs from the export; export with simplify=False")
    onnx.save(slimmed, str(path))


def _store_weights_as_int8(path: Path, bound: int) -> None:
    """Replace each constant weight -> QuantizeLinear by its int8 result (codes within +-``bound``), feeding the DequantizeLinear directly."""
    model = onnx.load(str(path))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    folded = []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or not all(name in initializers for name in node.input):
            continue
        weight, scale, zero_point = (numpy_helper.to_array(initializers[name]) for name in node.input)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * weight.ndim
        if scale.ndim:
            shape[axis] = -1
        quantized = np.rint(weight / scale.reshape(shape)) + zero_point.reshape(shape if zero_point.ndim else [])
        info = np.iinfo(zero_point.dtype)
        # int8 weights are narrow range [-bound, bound], as TensorRT wants
        low, high = (-bound, bound) if info.min < 0 else (info.min, info.max)
        graph.initializer.append(numpy_helper.from_array(quantized.clip(low, high).astype(zero_point.dtype), node.output[0]))
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    unused = [init for init in graph.initializer if init.name not in used]
    for init in unused:
        graph.initializer.remove(init)
    if folded:
        onnx.save(model, str(path))


def _toposorted(model: onnx.ModelProto) -> onnx.ModelProto:
    """Nodes in topological order (the fp16 converter appends its input Casts at the end of the graph)."""
    graph = gs.import_onnx(model)
    graph.toposort()
    return gs.export_onnx(graph)


def _load(path: str | os.PathLike) -> onnx.ModelProto:
    if not Path(path).is_file():
        raise EdgeCompressError(f"ONNX file not found: {path}; export the model first (edgecompress export)")
    return onnx.load(str(path))
