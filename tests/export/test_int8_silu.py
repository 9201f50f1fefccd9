"""SiLU models in the cpu target's int8 layout: onnxruntime runs every conv, sigmoid and product in integers.

onnxruntime has no fused conv + SiLU, so a conv whose output reached the SiLU unquantized ran in float
(DequantizeLinear -> Conv -> QuickGelu -> QuantizeLinear). The onnxruntime layout quantizes the conv's
output and the sigmoid's (on its fixed range [0, 1]), which its optimiser turns into QLinearConv ->
QLinearSigmoid -> QLinearMul. The last conv, whose output leaves the model, quantizes its output too (else
onnxruntime would run it in float on dequantized inputs), unless the caller keeps it float. Checked on the graph
onnxruntime actually runs, and against the fake-quant model; the TensorRT and OpenVINO layouts keep the SiLU whole
(both fuse it into the conv).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgecompress.export import export_onnx, ort_optimized_ops, verify_onnx
from edgecompress.models.yolov8 import C2f, SPPF, ConvBNSiLU
from edgecompress.quant import TensorQuantizer, calibrate, quantize_model, quantizers
from edgecompress.quant.sensitivity import layer_quantizers

from .export_models import randomise_batchnorm
from .test_int8_backends import FUSED_REL_BOUND, INT8_KERNELS_EXACT, UNFUSED_FLIPPED, UNFUSED_MAX_REL, _unfused_errors

SIZE = 32
FLOAT_COMPUTE = {"Conv", "Sigmoid", "Mul", "QuickGelu", "Add", "Concat", "MaxPool", "Resize"}


class SiluNet(nn.Module):
    """A YOLOv8-style backbone in miniature: strided ConvBNSiLU, C2f with and without shortcuts, SPPF, a float-output conv."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(ConvBNSiLU(3, 16, 3, 2), C2f(16, 16, 1, True), ConvBNSiLU(16, 32, 3, 2), C2f(32, 32, 1, False), SPPF(32, 32))
        self.head = nn.Conv2d(32, 6, 1)

    def forward(self, x):
        return self.head(self.body(x))


def _images(seed: int, batch: int = 4) -> torch.Tensor:
    return torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _calibrated(backend: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    quantized = quantize_model(randomise_batchnorm(SiluNet()), _images(1, 1), backend=backend, **kwargs)
    calibrate(quantized, [_images(2), _images(3)])
    return quantized


@pytest.fixture(scope="module")
def cpu_int8(tmp_path_factory):
    """(calibrated fake-quant SiluNet, its int8 ONNX) in the onnxruntime (cpu target) layout."""
    torch.set_num_threads(1)
    quantized = _calibrated("onnxruntime")
    return quantized, export_onnx(quantized, _images(1, 1), tmp_path_factory.mktemp("silu") / "int8.onnx", int8=True)


def test_no_float_sigmoid_or_mul_between_quantized_convs(cpu_int8):
    _, path = cpu_int8
    graph = onnx.load(str(path)).graph
    convs, silus = sum(n.op_type == "Conv" for n in graph.node), sum(n.op_type == "Sigmoid" for n in graph.node)
    ops = ort_optimized_ops(path)
    assert ops["QLinearConv"] == convs  # the head conv too: its output is quantized, then dequantized for the model's output
    assert ops["QLinearSigmoid"] == ops["QLinearMul"] == silus  # every SiLU: a sigmoid lookup table and an integer product
    assert ops["QLinearAdd"] == 1 and ops["QLinearConcat"] == 3 and ops["NhwcMaxPool"] == 3  # shortcut, C2f/SPPF concats, pools
    assert not {op: n for op, n in ops.items() if op in FLOAT_COMPUTE}
    assert ops["DequantizeLinear"] == 1 and ops["QuantizeLinear"] == 1  # the image in, the head's output out


def test_the_head_output_quantizer_belongs_to_the_head_conv(cpu_int8):
    quantized, _ = cpu_int8
    head = quantized.get_submodule("head")
    assert layer_quantizers(quantized)["head"] == [head.input_quantizer, head.weight_quantizer, head.output_quantizer]
    assert head.output_quantizer.uint8 and head.output_quantizer.amax is not None  # calibrated with the rest


def test_a_head_conv_kept_float_runs_in_float_on_its_dequantized_input(tmp_path):
    quantized = _calibrated("onnxruntime", float_layers=["head"])
    path = export_onnx(quantized, _images(1, 1), tmp_path / "int8.onnx", int8=True)
    graph = onnx.load(str(path)).graph
    convs = sum(n.op_type == "Conv" for n in graph.node)
    ops = ort_optimized_ops(path)
    assert ops["QLinearConv"] == convs - 1 and ops["Conv"] == 1
    assert ops["Sigmoid"] == ops["Mul"] == 1  # the SiLU only the float head reads stays float too
    assert ops["DequantizeLinear"] == 2  # its input, dequantized once for the sigmoid and once for the product


def test_int8_onnx_agrees_with_the_fake_quant_model(cpu_int8):
    quantized, path = cpu_int8
    worst, flipped = _unfused_errors(quantized, path, SIZE)  # the graph's own arithmetic, on images calibration never saw
    assert flipped < UNFUSED_FLIPPED and worst < UNFUSED_MAX_REL, (worst, flipped)
    report = verify_onnx(quantized, path, (1, 3, SIZE, SIZE), trials=2, optimized=INT8_KERNELS_EXACT)  # fresh torch.randn inputs
    assert report.max_rel_error < FUSED_REL_BOUND, report


def test_sigmoid_quantizers_have_the_fixed_range_of_a_sigmoid(cpu_int8):
    quantized, _ = cpu_int8
    silus = sum(isinstance(module, nn.SiLU) for module in SiluNet().modules())
    sigmoids = [q for name, q in quantizers(quantized).items() if name.endswith("_sigmoid_quantizer")]
    assert len(sigmoids) == silus and all(q.uint8 and q.zero_point == 0 and float(q.amax) == 1.0 for q in sigmoids)  # scale 1/255


def test_fixed_ranges_are_neither_calibrated_nor_learned():
    model = quantize_model(randomise_batchnorm(SiluNet()), _images(1, 1), backend="onnxruntime", learn_scales=True)
    found = quantizers(model)
    assert all(isinstance(q.amax, nn.Parameter) != (q.fixed_amax is not None) for name, q in found.items() if q.axis is None)
    ranges = calibrate(model, [_images(2) * 40])  # a range no sigmoid can reach
    assert all(ranges[name] == 1.0 for name, q in found.items() if q.fixed_amax is not None)


def test_a_silu_read_only_by_a_float_layer_keeps_its_sigmoid_float():
    model = _calibrated("onnxruntime", float_layers=["head"])
    names = set(quantizers(model))
    assert "body_4_cv2_2_sigmoid_quantizer" not in names and "body_4_cv1_2_sigmoid_quantizer" in names  # SPPF's last SiLU feeds the head
    assert "body_4_cv2_1_quantizer" in names  # its input is still quantized, so the conv before it runs as QLinearConv
    skipped = quantize_model(randomise_batchnorm(SiluNet()), _images(1, 1), backend="onnxruntime", skip=["body_0_2_sigmoid_quantizer"])
    assert quantizers(skipped)["body_0_2_sigmoid_quantizer"].kept_float  # a sensitivity report can name it like any placed quantizer


@pytest.mark.parametrize("backend", ["tensorrt", "openvino"])
def test_runtimes_that_fuse_conv_and_silu_get_the_silu_whole(backend):
    """TensorRT and OpenVINO fuse conv + SiLU: the SiLU stays one op, its input (the conv output) unquantized."""
    model = _calibrated(backend)
    silus = [node for node in model.graph.nodes if node.op == "call_module" and isinstance(model.get_submodule(node.target), nn.SiLU)]
    assert len(silus) == sum(isinstance(module, nn.SiLU) for module in SiluNet().modules())
    assert not any(isinstance(model.get_submodule(silu.args[0].target), TensorQuantizer) for silu in silus)
    assert not any(q.fixed_amax is not None for q in quantizers(model).values())


def test_float_silu_model_agrees_with_onnxruntime_in_float(tmp_path):
    """The decomposition ``x * sigmoid(x)`` changes nothing in float: with every quantizer off the outputs are the model's."""
    torch.manual_seed(0)
    model = randomise_batchnorm(SiluNet())
    quantized = quantize_model(model, _images(1, 1), backend="onnxruntime", fold=False)
    x = _images(4)
    with torch.no_grad():
        assert torch.allclose(quantized(x), model(x), atol=1e-6)  # quantizers start disabled
    path = export_onnx(quantized, x[:1], tmp_path / "float.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        assert np.allclose(session.run(None, {"images": x.numpy()})[0], model(x).numpy(), atol=1e-4)
