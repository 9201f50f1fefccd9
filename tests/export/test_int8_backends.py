"""Int8 ONNX per backend: TensorRT's Q/DQ layout, onnxruntime's int8 kernels, agreement with the fake-quant model.

Bounds. With onnxruntime's graph optimisations off, the int8 ONNX computes the fake-quant model's
arithmetic: same scales and zero points, round half to even, same saturation; only the float
accumulation order of each conv differs (~1e-6 relative), which rarely moves an intermediate value
across a rounding boundary. Such a flip changes that value by one LSB, and the outputs it feeds by
up to about 1% of the largest output (measured on an AVX2 CPU: 4 to 12 of 2048 output values, at most
1.2%). So almost every output value must agree to 1e-3 of the largest output, and none may be off by
more than 2%. With optimisations on, onnxruntime requantizes inside its integer kernels (QLinearConv: int32
accumulator times one fixed-point multiplier), which rounds differently by at most one LSB per layer;
those steps propagate, so the fused model is held to 5% of the largest output, well below the int8
quantization noise itself (fake-quant vs float: 1-14% on these models).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
import pytest
import torch
from torch import nn

from edgecompress.errors import EdgeCompressError
from edgecompress.export import export_onnx, ort_optimized_int8_ops, qdq_summary, verify_onnx
from edgecompress.models import YoloMobileNetV2
from edgecompress.profile.cpu import int8_dot_products_saturate
from edgecompress.quant import calibrate, quantize_model, quantizers
from edgecompress.quant.quantizer import QuantMode

from .export_models import randomise_batchnorm

UNFUSED_REL_BOUND = 1e-3  # for all but UNFUSED_FLIPPED of the output values
UNFUSED_FLIPPED = 0.01  # share of output values a rounding-boundary flip may move further
UNFUSED_MAX_REL = 0.02
FUSED_REL_BOUND = 0.05

# onnxruntime's fused int8 kernels match the fake-quant model within the bounds below only where 8-bit dot
# products do not saturate; elsewhere (x86 without VNNI) the checks compare against the unfused graph instead.
INT8_KERNELS_EXACT = not int8_dot_products_saturate()


def _quantized_export(model: nn.Module, size: int, path, backend: str):
    example = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(10))
    quantized = quantize_model(model, example, backend=backend)
    generator = torch.Generator().manual_seed(11)
    calibrate(quantized, [torch.rand(4, 3, size, size, generator=generator) for _ in range(3)])
    return quantized, export_onnx(quantized, example, path, int8=True)


def _unfused_errors(model: nn.Module, path, size: int) -> tuple[float, float]:
    """Largest error relative to the largest |output|, and the share of output values off by more than UNFUSED_REL_BOUND."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        output = model(images)
    expected = [output] if isinstance(output, torch.Tensor) else list(output)
    actual = session.run(None, {"images": images.numpy()})
    errors = [np.abs(got - want.numpy()) / np.abs(want.numpy()).max() for got, want in zip(actual, expected)]
    return max(float(e.max()) for e in errors), float(np.mean(np.concatenate([e.ravel() for e in errors]) > UNFUSED_REL_BOUND))


def _head_convs(path) -> int:
    graph = onnx.load(str(path)).graph
    outputs = {o.name for o in graph.output}
    return sum(node.op_type == "Conv" and node.output[0] in outputs for node in graph.node)


@pytest.mark.parametrize("backend", ["tensorrt", "onnxruntime"])
def test_int8_export_per_backend(small_model, backend, tmp_path):
    name, model, size = small_model
    quantized, path = _quantized_export(model, size, tmp_path / f"{name}-{backend}.onnx", backend)
    summary = qdq_summary(path)
    assert summary.conv == summary.conv_quantized == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert summary.weights_per_channel
    assert summary.zero_points_zero or backend == "onnxruntime"  # onnxruntime: signed activations are asymmetric uint8
    worst, flipped = _unfused_errors(quantized, path, size)
    assert flipped < UNFUSED_FLIPPED and worst < UNFUSED_MAX_REL, (worst, flipped)
    assert verify_onnx(quantized, path, (1, 3, size, size), trials=2, optimized=INT8_KERNELS_EXACT).max_rel_error < FUSED_REL_BOUND
    if backend == "onnxruntime":  # every conv not producing a model output runs as an integer kernel
        int8_ops = ort_optimized_int8_ops(path)
        assert int8_ops.get("QLinearConv", 0) == summary.conv - _head_convs(path), int8_ops


def test_tensorrt_layout_is_symmetric_int8(small_model, tmp_path):
    name, model, size = small_model
    _, path = _quantized_export(model, size, tmp_path / f"{name}.onnx", "tensorrt")
    assert qdq_summary(path).fully_quantized  # zero points all 0, weights per channel on axis 0
    graph = onnx.load(str(path)).graph
    int8_weights = [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4]
    assert int8_weights and all(onnx.numpy_helper.to_array(w).min() >= -127 for w in int8_weights)  # narrow range


def test_onnxruntime_scheme_fuses_residual_adds_and_concats(small_model, tmp_path):
    name, model, size = small_model
    _, path = _quantized_export(model, size, tmp_path / f"{name}.onnx", "onnxruntime")
    int8_ops = ort_optimized_int8_ops(path)
    graph = onnx.load(str(path)).graph
    assert int8_ops.get("QLinearAdd", 0) == sum(n.op_type == "Add" for n in graph.node)
    assert int8_ops.get("QLinearConcat", 0) == sum(n.op_type == "Concat" for n in graph.node)
    uint8_zero_points = [i for i in graph.initializer if i.data_type == onnx.TensorProto.UINT8]
    constants = [n for n in graph.node if n.op_type == "Constant" and n.attribute[0].t.data_type == onnx.TensorProto.UINT8]
    assert uint8_zero_points or constants  # activations are uint8


def test_bundled_detector_runs_int8_kernels_in_onnxruntime(tmp_path):
    torch.manual_seed(0)
    model = randomise_batchnorm(YoloMobileNetV2(num_classes=2, width=0.25, image_size=64))
    quantized, path = _quantized_export(model, 64, tmp_path / "yolo.onnx", "onnxruntime")
    summary = qdq_summary(path)
    int8_ops = ort_optimized_int8_ops(path)
    assert summary.conv_quantized == summary.conv - 3  # the three prediction convs stay float
    # and so does the conv only the stride-8 prediction conv reads: its output reaches no QuantizeLinear (the others'
    # outputs also feed the next level, read quantized)
    assert int8_ops["QLinearConv"] == summary.conv - 4
    assert int8_ops["QLinearAdd"] >= 1 and int8_ops["QLinearConcat"] == 2
    calibrated = {q.zero_point for q in quantizers(quantized).values() if q.axis is None}
    assert _activation_zero_points(path) == calibrated and calibrated - {0}  # signed tensors: zero point from min and max
    worst, flipped = _unfused_errors(quantized, path, 64)
    assert flipped < UNFUSED_FLIPPED and worst < UNFUSED_MAX_REL, (worst, flipped)
    assert verify_onnx(quantized, path, (1, 3, 64, 64), trials=2, optimized=INT8_KERNELS_EXACT).max_rel_error < FUSED_REL_BOUND


def _activation_zero_points(path) -> set[int]:
    """Zero points of the QuantizeLinear nodes left in the graph (weights are stored already quantized)."""
    graph = onnx.load(str(path)).graph
    constants = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    constants |= {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"}
    return {int(constants[n.input[2]]) for n in graph.node if n.op_type == "QuantizeLinear"}


def test_onnx_simplifier_keeps_the_pairs(small_model, tmp_path):
    onnxsim = pytest.importorskip("onnxsim", reason="onnx-simplifier (the dev extra) is not installed")
    name, model, size = small_model
    _, path = _quantized_export(model, size, tmp_path / f"{name}.onnx", "tensorrt")
    simplified, ok = onnxsim.simplify(onnx.load(str(path)))
    onnx.save(simplified, str(tmp_path / "sim.onnx"))
    assert ok and qdq_summary(tmp_path / "sim.onnx").conv_quantized == qdq_summary(path).conv_quantized


def test_int8_export_requires_a_calibrated_model(tmp_path):
    model = randomise_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()))
    example = torch.rand(1, 3, 8, 8)
    with pytest.raises(EdgeCompressError, match="not quantized"):
        export_onnx(model, example, tmp_path / "float.onnx", int8=True)
    with pytest.raises(EdgeCompressError, match="run calibrate"):
        export_onnx(quantize_model(model, example), example, tmp_path / "idle.onnx", int8=True)
    assert not (tmp_path / "float.onnx").exists() and not (tmp_path / "idle.onnx").exists()


def test_int8_export_keeps_layers_turned_back_to_float(tmp_path):
    """Mixed precision: a layer whose quantizers are off exports as a float Conv beside the int8 ones."""
    model = randomise_batchnorm(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3)))
    example = torch.rand(1, 3, 12, 12)
    quantized = quantize_model(model, example)
    calibrate(quantized, [torch.rand(4, 3, 12, 12) for _ in range(2)])
    for quantizer in (quantized[3].input_quantizer, quantized[3].weight_quantizer):
        quantizer.mode = QuantMode.DISABLED
    path = export_onnx(quantized, example, tmp_path / "mixed.onnx", int8=True)
    summary = qdq_summary(path)
    assert summary.conv == 2 and summary.conv_quantized == 1


@pytest.mark.parametrize("backend", ["tensorrt", "onnxruntime"])
def test_fused_int8_kernels_agree_with_the_fake_quant_model_with_7_bit_weights(small_model, backend, tmp_path):
    """With 7-bit weights (codes in [-63, 63]) no pair of products can overflow 16 bits, so onnxruntime's fused
    kernels compute what the fake-quant model does on every CPU, those without VNNI included."""
    name, model, size = small_model
    example = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(10))
    quantized = quantize_model(model, example, backend=backend, weight_bits=7)
    calibrate(quantized, [torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(11)) for _ in range(3)])
    path = export_onnx(quantized, example, tmp_path / f"{name}-{backend}-7bit.onnx", int8=True)
    weights = [numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4]
    assert weights and max(int(np.abs(w).max()) for w in weights) == 63
    assert verify_onnx(quantized, path, (1, 3, size, size), trials=2).max_rel_error < FUSED_REL_BOUND
