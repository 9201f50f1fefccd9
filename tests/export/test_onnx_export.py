"""ONNX export: int8 Q/DQ layout TensorRT expects, agreement with PyTorch in ONNX Runtime, fp16 copies."""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from edgecompress.errors import EdgeCompressError
from edgecompress.export import convert_fp16, export_onnx, ort_optimized_int8_ops, qdq_summary, verify_onnx
from edgecompress.models import YoloMobileNetV2
from edgecompress.profile.cpu import int8_dot_products_saturate
from edgecompress.quant import QuantConv2d, calibrate, quantize_model

from .export_models import TinyDetector, conv_stack, randomise_batchnorm

# ONNX Runtime and PyTorch agree on every Q/DQ (same scale, zero point 0, round half to even,
# saturation to [-128, 127]) but accumulate convolutions in a different order. An activation within
# float32 noise (~1e-6 relative) of a rounding boundary then lands one int8 step apart, and that step
# propagates through the remaining layers. Measured on these models (5 trials, batch 2): at most
# 1.6% of the largest |output|, with most values identical; the int8 quantization noise itself
# (fake-quant vs float) is 1-14% on the same models. A one-layer model has no upstream rounding to
# propagate and agrees to float precision (test_single_quant_conv_is_exact_in_onnxruntime).
INT8_REL_BOUND = 0.05

# onnxruntime's fused int8 kernels match the fake-quant model within the bounds below only where 8-bit dot
# products do not saturate; elsewhere (x86 without VNNI) the checks compare against the unfused graph instead.
INT8_KERNELS_EXACT = not int8_dot_products_saturate()
FLOAT_REL_BOUND = 1e-4
FP16_REL_BOUND = 1e-2  # fp16 keeps ~11 bits: ~5e-4 per operation, summed over a few layers


def _int8_export(model: nn.Module, size: int, path, **kwargs):
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(10))
    quantized = quantize_model(model, example)
    generator = torch.Generator().manual_seed(11)
    calibrate(quantized, [torch.randn(4, 3, size, size, generator=generator) for _ in range(4)])
    return quantized, example, export_onnx(quantized, example, path, **kwargs)


def _conv_count(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in model.modules())


def test_int8_export_quantizes_every_conv_for_tensorrt(small_model, tmp_path):
    name, model, size = small_model
    quantized, example, path = _int8_export(model, size, tmp_path / f"{name}.onnx")
    summary = qdq_summary(path)
    assert summary.conv == _conv_count(model)
    assert summary.conv_quantized == summary.conv  # input and weight of every Conv come from DequantizeLinear
    assert summary.weights_per_channel and summary.zero_points_zero and summary.fully_quantized
    # activations keep Q -> DQ pairs; weights are stored as int8 initializers feeding their DQ directly
    assert summary.quantize_linear + summary.conv == summary.dequantize_linear
    graph = onnx.load(str(path)).graph
    int8_initializers = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.INT8}
    weight_dqs = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int8_initializers]
    assert len(weight_dqs) == summary.conv

    raw = qdq_summary(export_onnx(quantized, example, tmp_path / f"{name}-raw.onnx", simplify=False))
    assert raw.conv_quantized == summary.conv_quantized and raw.weights_per_channel  # onnxslim kept every pair

    report = verify_onnx(quantized, path, example.shape, trials=5, optimized=INT8_KERNELS_EXACT)
    assert report.trials == 5
    assert report.max_rel_error < INT8_REL_BOUND, report


def test_float_export_matches_pytorch(small_model, tmp_path):
    name, model, size = small_model
    example = torch.randn(1, 3, size, size)
    path = export_onnx(model, example, tmp_path / f"{name}.onnx")
    assert qdq_summary(path).quantize_linear == 0
    report = verify_onnx(model, path, example.shape)
    assert report.max_rel_error < FLOAT_REL_BOUND, report
    assert report.mismatched_fraction == 0.0


def test_single_quant_conv_is_exact_in_onnxruntime(tmp_path):
    torch.manual_seed(0)
    conv = QuantConv2d.from_float(nn.Conv2d(3, 8, 3, padding=1))
    # Ranges narrower than the test inputs, so saturation at -128 / 127 is exercised too.
    calibrate(conv, [0.5 * torch.randn(4, 3, 8, 8)])
    path = export_onnx(conv, torch.randn(1, 3, 8, 8), tmp_path / "conv.onnx")
    report = verify_onnx(conv, path, (1, 3, 8, 8), trials=3)
    assert report.max_rel_error < 1e-5, report


def test_onnxruntime_runs_int8_kernels(tmp_path):
    # Conv -> Q directly (a linear bottleneck feeding the next conv) is what ORT fuses into QLinearConv;
    # Conv -> Relu -> Q stays float in ORT, since Relu is not redundant for signed symmetric int8.
    torch.manual_seed(0)
    _, _, path = _int8_export(randomise_batchnorm(conv_stack()), 16, tmp_path / "stack.onnx")
    int8_ops = ort_optimized_int8_ops(path)
    print("ORT int8 kernels:", int8_ops)
    assert int8_ops.get("QLinearConv", 0) >= 1


def test_outputs_are_named_and_batch_is_dynamic(tmp_path):
    model = randomise_batchnorm(TinyDetector())
    path = export_onnx(model, torch.randn(1, 3, 64, 64), tmp_path / "det.onnx")
    graph = onnx.load(str(path)).graph
    assert [o.name for o in graph.output] == ["output0", "output1", "output2"]
    assert [i.name for i in graph.input] == ["images"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param
    static = export_onnx(model, torch.randn(1, 3, 64, 64), tmp_path / "static.onnx", dynamic_batch=False, output_names=["a", "b", "c"])
    static_graph = onnx.load(str(static)).graph
    assert static_graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    assert [o.name for o in static_graph.output] == ["a", "b", "c"]


def test_fp16_copy_matches_pytorch(small_model, tmp_path):
    name, model, size = small_model
    example = torch.randn(1, 3, size, size)
    fp32 = export_onnx(model, example, tmp_path / f"{name}.onnx")
    fp16 = convert_fp16(fp32, tmp_path / f"{name}-fp16.onnx")
    weights = onnx.load(str(fp16)).graph.initializer
    assert any(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)
    assert verify_onnx(model, fp16, example.shape).max_rel_error < FP16_REL_BOUND


def test_fp16_refuses_int8_models_and_missing_files(tmp_path):
    _, _, path = _int8_export(randomise_batchnorm(conv_stack()), 16, tmp_path / "q.onnx")
    with pytest.raises(EdgeCompressError, match="Q/DQ"):
        convert_fp16(path, tmp_path / "q16.onnx")
    with pytest.raises(EdgeCompressError, match="not found"):
        qdq_summary(tmp_path / "missing.onnx")


def test_bundled_detector_exports_int8_but_its_prediction_convs(tmp_path):
    torch.manual_seed(0)
    model = randomise_batchnorm(YoloMobileNetV2(num_classes=2, width=0.25, image_size=64))
    quantized, example, path = _int8_export(model, 64, tmp_path / "yolo-int8.onnx")
    summary = qdq_summary(path)
    assert summary.conv == _conv_count(model) and summary.conv_quantized == summary.conv - len(model.prediction_layers()) == summary.conv - 3
    assert summary.weights_per_channel and summary.zero_points_zero
    assert len(onnx.load(str(path)).graph.output) == 3
    assert verify_onnx(quantized, path, example.shape, trials=2, optimized=INT8_KERNELS_EXACT).max_rel_error < INT8_REL_BOUND
    assert ort_optimized_int8_ops(path).get("QLinearConv", 0) >= 1


def test_int8_onnx_has_the_fake_quant_semantics_exactly(tmp_path):
    """Without onnxruntime's kernel fusions, the int8 ONNX computes what the PyTorch fake-quant model does.

    Inputs are fresh uniform images, inside the calibrated range; any difference would be a
    Q/DQ placement, scale or rounding error in the export, not accumulation order.
    """
    import numpy as np
    import onnxruntime as ort

    torch.manual_seed(0)
    model = randomise_batchnorm(YoloMobileNetV2(num_classes=2, width=0.25, image_size=64))
    example = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(20))
    quantized = quantize_model(model, example)
    calibrate(quantized, [torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(21))])
    path = export_onnx(quantized.eval(), example, tmp_path / "yolo-int8.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(22))
    with torch.no_grad():
        expected = [o.numpy() for o in quantized(images)]
    for got, want in zip(session.run(None, {"images": images.numpy()}), expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())
