"""BN folding, layer swapping and calibration on whole models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgecompress.artifacts import load_model, save_model
from edgecompress.errors import EdgeCompressError
from edgecompress.quant import QuantConv2d, QuantLinear, QuantMode, calibrate, conv_bn_pairs, fold_batchnorm, quantize_model, quantizers


def _random_bn(model: nn.Module) -> nn.Module:
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.3)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator))
    return model.eval()


def _stack() -> nn.Sequential:
    torch.manual_seed(0)
    return _random_bn(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    ))


class SharedOutput(nn.Module):
    """The conv output feeds the BN and a shortcut: folding would change the shortcut, so it must not fold."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_fold_batchnorm_keeps_outputs():
    model = _stack()
    x = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    folded = fold_batchnorm(model, x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert isinstance(folded[1], nn.Identity) and folded[3].bias is not None
    assert isinstance(model[1], nn.BatchNorm2d)  # the caller's model is untouched
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-4)


def test_fold_leaves_conv_with_other_consumers():
    model = _random_bn(SharedOutput())
    assert conv_bn_pairs(model) == []
    folded = fold_batchnorm(model, torch.randn(1, 3, 8, 8))
    assert isinstance(folded.bn, nn.BatchNorm2d)


def test_quantize_model_swaps_layers_and_keeps_state_dict_keys():
    model = _stack()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    quantized = quantize_model(model, x, skip=["8"])
    assert isinstance(quantized[0], QuantConv2d) and isinstance(quantized[3], QuantConv2d)
    assert type(quantized[8]) is nn.Linear  # skipped
    float_keys = set(fold_batchnorm(model, x).state_dict())
    quant_keys = set(quantized.state_dict())
    assert float_keys <= quant_keys
    assert quant_keys - float_keys == {f"{i}.{q}_quantizer.amax" for i in (0, 3) for q in ("input", "weight")}
    with torch.no_grad():  # quantizers start disabled: the model computes exactly as the folded float one
        assert torch.allclose(quantized(x), model(x), atol=1e-4)


def test_skipping_a_submodule_keeps_every_layer_in_it_float():
    model = nn.Sequential(_stack()[:6], nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU(), nn.Conv2d(4, 2, 1))).eval()
    quantized = quantize_model(model, torch.randn(1, 3, 8, 8), skip=["1"])
    assert isinstance(quantized[0][0], QuantConv2d)
    assert type(quantized[1][0]) is nn.Conv2d and type(quantized[1][2]) is nn.Conv2d


def test_unknown_skip_name_is_a_user_error():
    with pytest.raises(EdgeCompressError, match="neither modules"):
        quantize_model(_stack(), torch.randn(1, 3, 8, 8), skip=["backbone.conv9"])


def test_calibrate_max_records_input_and_weight_ranges():
    model = quantize_model(_stack(), torch.randn(1, 3, 12, 12))
    generator = torch.Generator().manual_seed(3)
    batches = [torch.randn(4, 3, 12, 12, generator=generator) for _ in range(3)]
    ranges = calibrate(model, [(b, torch.zeros(4)) for b in batches])  # DataLoader-style (images, labels)
    assert set(ranges) == {"0", "3", "8"}
    assert ranges["0"] == pytest.approx(max(float(b.abs().max()) for b in batches))
    assert torch.allclose(model[3].weight_quantizer.amax, model[3].weight.detach().abs().amax(dim=(1, 2, 3)))
    assert all(q.mode is QuantMode.QUANTIZING for q in quantizers(model).values())
    assert isinstance(model[8], QuantLinear) and not model.training


def test_percentile_calibration_clips_below_max():
    x = torch.randn(1, 3, 12, 12)
    batches = [torch.randn(8, 3, 12, 12, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    by_max = calibrate(quantize_model(_stack(), x), batches)
    by_percentile = calibrate(quantize_model(_stack(), x), batches, method="percentile", percentile=99.0)
    assert all(by_percentile[name] < by_max[name] for name in by_max)


def test_quantized_model_trains_with_gradients_on_quant_weights():
    model = quantize_model(_stack(), torch.randn(1, 3, 12, 12))
    calibrate(model, [torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(4))])
    model.train()
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 12, 12)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for layer in (model[0], model[3]):
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_empty_calibration_is_a_user_error_and_changes_nothing():
    model = quantize_model(_stack(), torch.randn(1, 3, 12, 12))
    with pytest.raises(EdgeCompressError, match="no batches"):
        calibrate(model, iter([]))
    assert all(q.mode is QuantMode.DISABLED and q.calibrator is None for q in quantizers(model).values())


def test_calibrate_needs_quantizers():
    with pytest.raises(EdgeCompressError, match="quantize_model"):
        calibrate(_stack(), [torch.randn(1, 3, 8, 8)])


class UnusedBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.used, self.unused = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.used(x)


def test_layer_without_calibration_data_is_reported():
    model = quantize_model(UnusedBranch(), torch.randn(1, 3, 8, 8))
    with pytest.raises(EdgeCompressError, match="unused.input_quantizer"):
        calibrate(model, [torch.randn(2, 3, 8, 8)])
    assert all(q.mode is QuantMode.DISABLED for q in quantizers(model).values())
    ranges = calibrate(quantize_model(UnusedBranch(), torch.randn(1, 3, 8, 8), skip=["unused"]), [torch.randn(2, 3, 8, 8)])
    assert set(ranges) == {"used"}


def test_calibrated_model_survives_save_and_load(tmp_path):
    model = quantize_model(_stack(), torch.randn(1, 3, 12, 12))
    calibrate(model, [torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(5))])
    restored = load_model(save_model(model, tmp_path / "qat.pt")).eval()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(6))
    assert all(q.mode is QuantMode.QUANTIZING for q in quantizers(restored).values())
    with torch.no_grad():
        assert torch.equal(restored(x), model(x))
