"""Activation quantizers on add / concat / pooling inputs, per backend, and the uint8 / narrow-range numerics."""

from __future__ import annotations

import copy
import operator

import pytest
import torch
from torch import fx, nn

from edgecompress.artifacts import load_model, save_model
from edgecompress.errors import EdgeCompressError
from edgecompress.models import YoloMobileNetV2
from edgecompress.profile.cpu import int8_dot_products_saturate
from edgecompress.quant import PercentileCalibrator, QuantConv2d, TensorQuantizer, calibrate, quantize_model, quantizers


def _unit(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU())


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.branch, self.pool = _unit(3, 8), nn.Conv2d(8, 8, 3, padding=1), nn.MaxPool2d(2)

    def forward(self, x):
        x = self.stem(x)
        return self.pool(x + self.branch(x))


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.left, self.right, self.fuse = _unit(3, 4), _unit(3, 4), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.fuse(torch.cat([self.left(x), self.right(x)], dim=1))


def _example() -> torch.Tensor:
    return torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def _quantizer_inputs(model: fx.GraphModule, op) -> list[object]:
    """The modules feeding each argument of the first ``op`` node (None for a non-quantizer argument)."""
    node = next(n for n in model.graph.nodes if n.target is op)
    args = node.args[0] if op is torch.cat else node.args[:2]
    return [model.get_submodule(a.target) if a.op == "call_module" and isinstance(model.get_submodule(a.target), TensorQuantizer) else None for a in args]


def test_tensorrt_quantizes_the_residual_input_of_an_add_once():
    torch.manual_seed(0)
    model = quantize_model(Residual(), _example())
    assert isinstance(model, fx.GraphModule)
    residual, conv_output = _quantizer_inputs(model, operator.add)
    assert isinstance(residual, TensorQuantizer) and conv_output is None  # TensorRT fuses the conv output into the add
    assert isinstance(model.branch, QuantConv2d) and isinstance(model.branch.input_quantizer, nn.Identity)  # shares the residual's Q
    assert isinstance(model.get_submodule("stem.0").input_quantizer, TensorQuantizer)
    pool = next(n for n in model.graph.nodes if n.target == "pool")
    assert pool.args[0].target is operator.add  # TensorRT moves Q/DQ through pooling itself


def test_onnxruntime_quantizes_every_add_and_pooling_input():
    torch.manual_seed(0)
    model = quantize_model(Residual(), _example(), backend="onnxruntime")
    assert all(isinstance(q, TensorQuantizer) for q in _quantizer_inputs(model, operator.add))
    pool = next(n for n in model.graph.nodes if n.target == "pool")
    assert isinstance(model.get_submodule(pool.args[0].target), TensorQuantizer)


@pytest.mark.parametrize("backend", ["tensorrt", "onnxruntime"])
def test_concat_inputs_share_one_quantizer(backend):
    torch.manual_seed(0)
    model = quantize_model(Concat(), _example(), backend=backend)
    left, right = _quantizer_inputs(model, torch.cat)
    assert isinstance(left, TensorQuantizer) and left is right
    calibrate(model, [torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))])
    assert torch.equal(left.amax, right.amax)


def test_onnxruntime_activations_are_uint8_with_zero_point_from_calibration():
    torch.manual_seed(0)
    model = quantize_model(Residual(), _example(), backend="onnxruntime")
    calibrate(model, [torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))])
    found = quantizers(model)
    activations = {name: q for name, q in found.items() if q.axis is None}
    assert all(q.uint8 for q in activations.values())
    images = activations["stem.0.input_quantizer"]
    assert 0 < images.zero_point < 255  # signed input: asymmetric, zero point from the calibrated min and max
    relu_output = next(q for name, q in activations.items() if name.startswith("stem_1"))
    assert relu_output.zero_point == 0  # after ReLU: zero point at the range minimum, so ORT drops the ReLU
    assert all(not q.uint8 for q in found.values() if q.axis is not None)  # weights stay int8 per channel


def test_uint8_fake_quantization_grid():
    quantizer = TensorQuantizer(uint8=True)
    quantizer.begin_calibration(_max_calibrator())
    quantizer(torch.tensor([0.0, 2.55]))
    quantizer.end_calibration()
    x = torch.tensor([0.0, 0.004, 0.006, 1.0, 3.0])
    assert torch.allclose(quantizer(x), torch.tensor([0.0, 0.0, 0.01, 1.0, 2.55]))  # scale 2.55 / 255
    signed = TensorQuantizer(uint8=True)
    signed.begin_calibration(_max_calibrator())
    signed(torch.tensor([-0.51, 2.04]))  # range 2.55 over 255 steps: scale 0.01, zero point 51
    signed.end_calibration()
    assert signed.zero_point == 51 and float(signed.amax) == pytest.approx(2.04)
    got = signed(torch.tensor([-2.0, -0.006, 0.5, 3.0]))
    assert torch.allclose(got, torch.tensor([-0.51, -0.01, 0.5, 2.04]), atol=1e-6)


def test_asymmetric_range_is_clipped_to_the_calibrated_magnitude():
    signed = TensorQuantizer(uint8=True)
    signed.begin_calibration(PercentileCalibrator(99.0))
    x = torch.randn(20000, generator=torch.Generator().manual_seed(3)).abs() * 2 - 0.5  # mostly positive, long upper tail
    signed(x)
    signed.end_calibration()
    scale = float(signed.amax) / (255 - signed.zero_point)
    top, bottom = float(signed.amax), -signed.zero_point * scale
    assert top == pytest.approx(float(x.abs().quantile(0.99)), rel=0.02) and top < float(x.max())
    assert bottom == pytest.approx(float(x.min()), abs=scale)  # the small negative end is kept whole


def test_tensorrt_activations_stay_symmetric_int8():
    model = quantize_model(Residual(), _example(), backend="tensorrt")
    calibrate(model, [torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))])
    assert all(not q.uint8 and q.zero_point == 0 for q in quantizers(model).values())


def _max_calibrator():
    from edgecompress.quant import MaxCalibrator

    return MaxCalibrator()


def test_weights_are_narrow_range():
    quantizer = TensorQuantizer(axis=0, channels=2, narrow_range=True)
    quantizer.set_amax(torch.tensor([1.27, 1.27]))
    out = quantizer(torch.tensor([[-5.0, 0.5], [-1.28, 1.3]]))
    assert torch.allclose(out, torch.tensor([[-1.27, 0.5], [-1.27, 1.27]]))  # never -128 * scale


def test_detector_keeps_its_contract_through_deepcopy_and_save_and_load(tmp_path):
    torch.manual_seed(0)
    model = YoloMobileNetV2(num_classes=2, width=0.25, image_size=64).eval()
    quantized = quantize_model(model, torch.rand(1, 3, 64, 64), backend="onnxruntime")
    calibrate(quantized, [torch.rand(2, 3, 64, 64)])
    restored = load_model(save_model(quantized, tmp_path / "q.pt")).eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    for copy_ in (quantized, copy.deepcopy(quantized), restored):
        assert torch.equal(copy_.anchors, model.anchors) and tuple(copy_.strides) == tuple(model.strides)
        assert copy_.num_classes == 2
        with torch.no_grad():
            assert all(torch.equal(a, b) for a, b in zip(copy_(x), quantized(x)))


def test_unknown_backend_is_a_user_error():
    with pytest.raises(EdgeCompressError, match="unknown quantization backend"):
        quantize_model(Residual(), _example(), backend="tflite")


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        return y + x.mean() if x.sum() > 0 else y


def test_untraceable_model_keeps_conv_quantizers_with_a_warning():
    with pytest.warns(UserWarning, match="adds and concats stay float"):
        model = quantize_model(DataDependent(), _example(), fold=False)
    assert type(model) is DataDependent and isinstance(model.conv, QuantConv2d)


@pytest.mark.parametrize("backend", ["tensorrt", "onnxruntime"])
def test_learned_scales_get_gradients_and_export_like_fixed_ones(backend, tmp_path):
    from edgecompress.export import export_onnx, verify_onnx

    torch.manual_seed(0)
    model = quantize_model(Residual(), _example(), backend=backend, learn_scales=True)
    calibrate(model, [torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(4))])
    activations = [q for q in quantizers(model).values() if q.axis is None]
    assert activations and all(isinstance(q.amax, nn.Parameter) for q in activations)
    model.train()
    model(torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(5))).square().mean().backward()
    assert all(q.amax.grad is not None and q.amax.grad.abs() > 0 for q in activations)
    model.eval()
    path = export_onnx(model, _example(), tmp_path / "learned.onnx", int8=True)
    exact_kernels = not int8_dot_products_saturate()  # else compare with the unfused graph (x86 without VNNI)
    assert verify_onnx(model, path, (1, 3, 8, 8), trials=2, optimized=exact_kernels).max_rel_error < 0.05
