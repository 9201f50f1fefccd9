"""TensorQuantizer, calibrators and quantized layers: int8 numerics, modes and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgecompress.errors import EdgeCompressError
from edgecompress.quant import (
    CALIBRATORS,
    EntropyCalibrator,
    MaxCalibrator,
    MseCalibrator,
    PercentileCalibrator,
    QuantConv2d,
    QuantLinear,
    QuantMode,
    TensorQuantizer,
    make_calibrator,
)


def test_per_tensor_fake_quant_is_symmetric_int8_grid():
    quantizer = TensorQuantizer()
    quantizer.set_amax(torch.tensor(2.0))
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(0)) * 2
    scale = 2.0 / 127
    expected = torch.clamp(torch.round(x / scale), -128, 127) * scale
    assert quantizer.mode is QuantMode.QUANTIZING
    assert torch.allclose(quantizer(x), expected, atol=1e-6)
    assert quantizer(torch.tensor([5.0, -5.0])).tolist() == pytest.approx([127 * scale, -128 * scale])


def test_per_channel_weights_stay_in_narrow_range():
    weight = torch.randn(6, 3, 3, 3, generator=torch.Generator().manual_seed(1))
    quantizer = TensorQuantizer(axis=0, channels=6)
    calibrator = MaxCalibrator(axis=0)
    quantizer.begin_calibration(calibrator)
    assert torch.equal(quantizer(weight), weight)  # calibrating passes tensors through
    amax = quantizer.end_calibration()
    assert torch.allclose(amax, weight.abs().amax(dim=(1, 2, 3)))
    levels = quantizer(weight) / (amax / 127).view(-1, 1, 1, 1)
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert levels.min() >= -127 and levels.max() <= 127


def test_all_zero_channel_gets_a_valid_scale():
    quantizer = TensorQuantizer(axis=0, channels=2)
    quantizer.set_amax(torch.tensor([0.0, 1.0]))
    out = quantizer(torch.tensor([[0.0, 0.0], [0.5, -1.0]]))
    assert torch.isfinite(out).all() and out[0].abs().sum() == 0


def test_gradients_flow_straight_through_and_clip_outside_range():
    torch.manual_seed(0)
    conv = QuantConv2d(3, 4, 3, padding=1)
    conv.input_quantizer.set_amax(torch.tensor(1.0))
    conv.weight_quantizer.set_amax(conv.weight.detach().abs().amax(dim=(1, 2, 3)))
    x = (torch.randn(2, 3, 8, 8) * 2).requires_grad_()
    conv(x).square().mean().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert conv.bias.grad is not None
    scale = 1.0 / 127
    inside = (x.detach() >= -128 * scale) & (x.detach() <= 127 * scale)
    assert (x.grad[~inside] == 0).all()  # saturated values get no gradient
    assert x.grad[inside].abs().sum() > 0


def test_quant_layers_are_drop_in_replacements():
    conv = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2, bias=False)
    quant = QuantConv2d.from_float(conv)
    assert isinstance(quant, nn.Conv2d) and quant.weight is conv.weight
    assert set(quant.state_dict()) == {"weight", "input_quantizer.amax", "weight_quantizer.amax"}
    x = torch.randn(1, 4, 9, 9, generator=torch.Generator().manual_seed(2))
    assert torch.equal(quant(x), conv(x))  # quantizers start disabled
    linear = nn.Linear(5, 3)
    assert torch.equal(QuantLinear.from_float(linear)(x[0, 0, :3, :5]), linear(x[0, 0, :3, :5]))


def _gaussian_with_outliers() -> torch.Tensor:
    x = torch.randn(20000, generator=torch.Generator().manual_seed(3))
    x[:3] = torch.tensor([40.0, -35.0, 30.0])
    return x


@pytest.mark.parametrize("calibrator", [PercentileCalibrator(99.9), EntropyCalibrator()], ids=["percentile", "entropy"])
def test_histogram_calibrators_ignore_rare_outliers(calibrator):
    x = _gaussian_with_outliers()
    for chunk in x.split(5000):  # batches grow the histogram range
        calibrator.collect(chunk)
    amax = float(calibrator.compute_amax())
    assert 1.5 < amax < 20.0, amax  # well inside the outliers, not clipping the gaussian bulk


def test_mse_calibrator_finds_the_optimal_laplace_clip():
    # For Laplace(0, b) and 8 bits the MSE-optimal clip is about 9.89 b (Banner et al., ACIQ, 2019),
    # well below the sample max (about 14 b for a million samples).
    torch.manual_seed(0)
    x = torch.distributions.Laplace(0.0, 1.0).sample((1_000_000,))
    calibrator = MseCalibrator()
    for chunk in x.split(250_000):
        calibrator.collect(chunk)
    assert float(calibrator.compute_amax()) == pytest.approx(9.89, rel=0.08)


def test_percentile_calibrator_matches_quantile():
    x = _gaussian_with_outliers()
    calibrator = PercentileCalibrator(99.0)
    calibrator.collect(x)
    assert float(calibrator.compute_amax()) == pytest.approx(float(x.abs().quantile(0.99)), rel=0.02)


def test_calibrator_registry_and_errors():
    assert set(CALIBRATORS) >= {"max", "percentile", "mse", "entropy"}
    with pytest.raises(EdgeCompressError, match="unknown calibration method"):
        make_calibrator("minmax")
    with pytest.raises(EdgeCompressError, match="percentile"):
        make_calibrator("percentile", percentile=120.0)
    with pytest.raises(EdgeCompressError, match="saw no data"):
        MaxCalibrator().compute_amax()


def test_histogram_range_grows_in_bounded_memory():
    calibrator = PercentileCalibrator(100.0)
    calibrator.collect(torch.full((10,), 1e-6))
    calibrator.collect(torch.tensor([3.0, -5.0]))  # 5 million times the first range
    assert len(calibrator.counts) <= 8 * calibrator.num_bins
    assert calibrator.counts.sum() == 12
    assert float(calibrator.compute_amax()) == pytest.approx(5.0, rel=0.01)
