"""edgecompress.quantize: one call from a float model to a calibrated (and optionally QAT-trained) int8 model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import edgecompress as ec
from edgecompress.errors import EdgeCompressError
from edgecompress.quant import QuantConv2d, QuantMode, calibrate, learned_range_groups, quantize_model, quantizers
from edgecompress.train.loop import TrainConfig, _optimizer, fit


def _classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()


def _loader(n: int = 32, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 12, 12, generator=generator)
    labels = torch.randint(0, 3, (n,), generator=generator)
    return DataLoader(TensorDataset(images, labels), batch_size=8)


def test_quantize_calibrates_a_copy_close_to_float():
    model = _classifier()
    quantized = ec.quantize(model, _loader(), method="entropy")
    assert isinstance(model[0], nn.Conv2d) and not isinstance(model[0], QuantConv2d)  # the caller's model is untouched
    assert isinstance(quantized[0], QuantConv2d)
    assert quantizers(quantized) and all(q.mode == QuantMode.QUANTIZING for q in quantizers(quantized).values())
    x = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected, actual = model(x), quantized(x)
    assert not torch.equal(expected, actual)  # really fake-quantized
    assert (expected - actual).abs().max() < 0.1 * expected.abs().max()


def test_skip_keeps_a_layer_float_and_a_generator_works():
    batches = (torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(i)) for i in range(3))
    quantized = ec.quantize(_classifier(), batches, method="max", skip=("3",))
    assert isinstance(quantized[0], QuantConv2d) and type(quantized[3]) is nn.Conv2d


def test_qat_trains_the_quantized_model():
    model = _classifier()
    before = model[3].weight.detach().clone()
    quantized = ec.quantize(model, _loader(), method="max", qat_epochs=2, train_loader=_loader(seed=1),
                            loss_fn=lambda logits, labels: F.cross_entropy(logits, labels), lr=1e-2)
    assert not torch.allclose(quantized[3].weight, before)
    assert torch.equal(model[3].weight, before)
    assert not quantized.training and all(q.mode == QuantMode.QUANTIZING for q in quantizers(quantized).values())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"qat_epochs": 1}, "needs train_loader and loss_fn"),
        ({"qat_epochs": -1}, "qat_epochs must be >= 0"),
        ({"method": "median"}, "unknown calibration method 'median'"),
        ({"skip": ("nope",)}, "nope"),
        ({"backend": "tflite"}, "tflite"),
    ],
)
def test_user_errors(kwargs, message):
    with pytest.raises(EdgeCompressError, match=message):
        ec.quantize(_classifier(), _loader(), **kwargs)


def test_empty_calibration_loader_is_an_error():
    with pytest.raises(EdgeCompressError, match="calibration loader is empty"):
        ec.quantize(_classifier(), [])


def test_learned_ranges_train_in_their_own_group():
    images, labels = next(iter(_loader()))
    quantized = quantize_model(_classifier(), images[:1], learn_scales=True)
    calibrate(quantized, [images], method="max")
    ranges = [q.amax for q in quantizers(quantized).values() if q.axis is None]
    ranges_before, weight_before = [r.detach().clone() for r in ranges], quantized[3].weight.detach().clone()
    config = TrainConfig(1, lr=1e-6, warmup_steps=0, grad_clip=1e9)
    groups = learned_range_groups(quantized, 1e-2)
    assert learned_range_groups(quantized, None) == [] and learned_range_groups(_classifier(), 1e-2) == []
    assert [group["lr"] for group in _optimizer(quantized, config, groups).param_groups] == [1e-6, 1e-6, 1e-2]
    # LSQ gradients of this tiny model are ~1e-8, Adam's eps: a scaled loss makes Adam's first step the full lr
    fit(quantized, [(images, labels)], lambda logits, targets: 1e4 * F.cross_entropy(logits, targets), config, param_groups=groups)
    assert ranges and all(abs(float(r.detach() - before)) == pytest.approx(1e-2, rel=0.01) for r, before in zip(ranges, ranges_before))
    assert (quantized[3].weight - weight_before).abs().max() < 2e-6  # the weights' group kept the small lr
