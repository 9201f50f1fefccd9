"""The registry of quantized twins: subclasses of registered layers, new layer types, and what is never swapped."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgecompress.errors import EdgeCompressError
from edgecompress.quant import (
    QUANT_MODULES, QuantConv2d, QuantLinear, QuantMode, TensorQuantizer, calibrate, quant_module_for, quantize_model, quantizers,
    register_quant_module,
)


@pytest.fixture(autouse=True)
def restore_registry():
    saved = dict(QUANT_MODULES)
    yield
    QUANT_MODULES.clear()
    QUANT_MODULES.update(saved)


class NamedConv(nn.Conv2d):
    """A user's conv that only adds an attribute: it inherits nn.Conv2d.forward."""

    def __init__(self, *args, tag: str = "stem", **kwargs):
        super().__init__(*args, **kwargs)
        self.tag = tag


class DoublingConv(nn.Conv2d):
    """A user's conv with extra forward logic, which a QuantConv2d would drop."""

    def forward(self, x: Tensor) -> Tensor:
        return 2 * super().forward(x)


class ScaledLinear(nn.Linear):
    pass


def _batches(seed: int, count: int = 3, shape=(4, 3, 10, 10)) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=generator) for _ in range(count)]


def _user_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(NamedConv(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), ScaledLinear(8, 4))
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_user_subclass_of_conv2d_is_folded_and_quantized():
    model = _user_model()
    quantized = quantize_model(model, torch.randn(1, 3, 10, 10))
    assert isinstance(quantized[0], QuantConv2d) and isinstance(quantized[3], QuantConv2d) and isinstance(quantized[7], QuantLinear)
    assert isinstance(quantized[1], nn.Identity)  # the BN after the user's conv was folded into it
    ranges = calibrate(quantized, _batches(1))
    assert set(ranges) == {"0", "3", "7"}
    x = _batches(2, count=1)[0]
    with torch.no_grad():
        expected, actual = model(x), quantized(x)
    assert not torch.equal(expected, actual) and (expected - actual).abs().max() < 0.1 * expected.abs().max()


def test_most_specific_registration_wins_and_twins_are_not_requantized():
    @register_quant_module(NamedConv)
    class QuantNamedConv(QuantConv2d):
        @classmethod
        def from_float(cls, conv: NamedConv) -> "QuantNamedConv":
            quant = super().from_float(conv)
            quant.tag = conv.tag
            return quant

    class SubNamedConv(NamedConv):
        pass

    assert quant_module_for(nn.Conv2d(3, 3, 1)) is QuantConv2d
    assert quant_module_for(NamedConv(3, 3, 1)) is QuantNamedConv
    assert quant_module_for(SubNamedConv(3, 3, 1)) is QuantNamedConv
    assert quant_module_for(ScaledLinear(3, 3)) is QuantLinear
    assert quant_module_for(QuantConv2d(3, 3, 1)) is None and quant_module_for(QuantNamedConv(3, 3, 1)) is None
    assert quant_module_for(nn.ReLU()) is None
    quantized = quantize_model(_user_model(), torch.randn(1, 3, 10, 10))
    assert type(quantized[0]) is QuantNamedConv and quantized[0].tag == "stem" and type(quantized[3]) is QuantConv2d
    again = quantize_model(quantized, torch.randn(1, 3, 10, 10), fold=False)  # already quantized: nothing is swapped twice
    assert type(again[0]) is QuantNamedConv and len(quantizers(again)) == len(quantizers(quantized))


def test_subclass_that_overrides_forward_stays_float_with_a_warning():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), DoublingConv(4, 4, 1)).eval()
    assert quant_module_for(model[2]) is None
    with pytest.warns(UserWarning, match=r"\['2'\].*override forward"):
        quantized = quantize_model(model, torch.randn(1, 3, 8, 8))
    assert isinstance(quantized[0], QuantConv2d) and type(quantized[2]) is DoublingConv
    calibrate(quantized, _batches(3, shape=(2, 3, 8, 8)))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(quantized(x), 2 * F.conv2d(quantized[:2](x), model[2].weight, model[2].bias))  # the doubling kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quantize_model(model, torch.randn(1, 3, 8, 8), skip=["2"])  # named in skip: no warning


def test_attention_output_projection_is_never_swapped():
    assert quant_module_for(nn.MultiheadAttention(8, 2).out_proj) is None


def test_registered_twin_of_a_new_layer_type_is_swapped_in_and_calibrated():
    @register_quant_module(nn.Conv1d)
    class QuantConv1d(nn.Conv1d):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.input_quantizer = TensorQuantizer()
            self.weight_quantizer = TensorQuantizer(axis=0, channels=self.out_channels, narrow_range=True)

        @classmethod
        def from_float(cls, conv: nn.Conv1d) -> "QuantConv1d":
            quant = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None)
            quant.weight, quant.bias = conv.weight, conv.bias
            return quant

        def forward(self, x: Tensor) -> Tensor:
            return self._conv_forward(self.input_quantizer(x), self.weight_quantizer(self.weight), self.bias)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 16, 3)).eval()
    quantized = quantize_model(model, torch.randn(1, 2, 16))
    assert isinstance(quantized[0], QuantConv1d) and quantized[0].weight is not model[0].weight  # a copy's weights
    batches = _batches(4, shape=(4, 2, 16))
    ranges = calibrate(quantized, batches)
    assert ranges["0"] == pytest.approx(max(float(b.abs().max()) for b in batches))
    assert torch.allclose(quantized[0].weight_quantizer.amax, quantized[0].weight.detach().abs().amax(dim=(1, 2)))
    assert all(q.mode is QuantMode.QUANTIZING for q in quantizers(quantized).values())
    x = batches[0]
    with torch.no_grad():
        expected, actual = model(x), quantized(x)
    assert not torch.equal(expected, actual) and (expected - actual).abs().max() < 0.1 * expected.abs().max()


def test_registration_errors():
    class NoFromFloat(nn.Conv1d):
        pass

    class NoInputQuantizer(nn.Conv1d):
        @classmethod
        def from_float(cls, conv):
            return conv

    with pytest.raises(EdgeCompressError, match="from_float"):
        register_quant_module(nn.Conv1d, NoFromFloat)
    with pytest.raises(EdgeCompressError, match="quantized twin itself"):
        register_quant_module(QuantConv2d, NoInputQuantizer)
    with pytest.raises(EdgeCompressError, match="nn.Module class"):
        register_quant_module(F.conv1d, NoInputQuantizer)
    register_quant_module(nn.Conv1d, NoInputQuantizer)
    with pytest.raises(EdgeCompressError, match="input_quantizer"):
        quantize_model(nn.Sequential(nn.Conv1d(2, 2, 1)), torch.randn(1, 2, 4))
