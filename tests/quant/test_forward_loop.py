"""Calibration data as a forward loop: the same ranges as the equivalent batches, and clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import edgecompress as ec
from edgecompress.errors import EdgeCompressError
from edgecompress.quant import QuantMode, batches_loop, calibrate, quantize_model, quantizers
from edgecompress.quant.api import calibrated_model
from edgecompress.quant.sensitivity import analyze_sensitivity


class Residual(nn.Module):
    """Convs, an add (a placed quantizer) and a linear head."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.bn(self.stem(x)))
        return self.head(y + torch.relu(self.body(y)))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return Residual().eval()


def _fresh_batches(seed: int) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, 12, 12, generator=generator) * (1 + i) for i in range(3)]


@pytest.mark.parametrize("method", ["max", "mse", "entropy", "percentile"])
@pytest.mark.parametrize("seed", [11, 12])
def test_forward_loop_gives_the_ranges_of_the_equivalent_batches(method, seed):
    batches = _fresh_batches(seed)
    example = batches[0][:1]

    def forward_loop(model: nn.Module) -> None:
        for images in batches:
            model(images)

    by_batches = quantize_model(_model(), example)
    by_loop = quantize_model(_model(), example)
    expected = calibrate(by_batches, [(images, torch.zeros(4)) for images in batches], method=method)
    actual = calibrate(by_loop, forward_loop, method=method)
    assert actual == expected and len(actual) >= 3  # stem, body, head and the add's quantizer
    for (name, want), (_, got) in zip(quantizers(by_batches).items(), quantizers(by_loop).items()):
        assert torch.equal(want.amax, got.amax) and want.zero_point == got.zero_point and got.mode is QuantMode.QUANTIZING, name


def test_forward_loop_runs_in_eval_mode_without_gradients_and_modes_are_restored():
    model = quantize_model(_model(), torch.randn(1, 3, 12, 12))
    model.train()
    model.head.eval()
    seen = []

    def forward_loop(m: nn.Module) -> None:
        seen.append((m.training, torch.is_grad_enabled()))
        m(torch.randn(2, 3, 12, 12))

    calibrate(model, forward_loop)
    assert seen == [(False, False)]
    assert model.training and model.stem.training and not model.head.training


def test_batches_loop_feeds_images_of_tuples_and_rejects_other_batches():
    calls = []
    probe = nn.Linear(2, 2)
    probe.register_forward_hook(lambda module, args, output: calls.append(args[0].shape))
    batches_loop([torch.zeros(3, 2), (torch.zeros(5, 2), torch.ones(5)), [torch.zeros(1, 2)]])(probe)
    assert calls == [(3, 2), (5, 2), (1, 2)]
    with pytest.raises(EdgeCompressError, match="tensors or \\(images, ...\\) tuples, got str"):
        batches_loop([("a", "b")])(probe)
    with pytest.raises(EdgeCompressError, match="no batches"):
        batches_loop([])(probe)


def test_forward_loop_that_runs_nothing_is_a_one_line_error_and_changes_nothing():
    model = quantize_model(_model(), torch.randn(1, 3, 12, 12))
    with pytest.raises(EdgeCompressError, match="ran no data") as error:
        calibrate(model, lambda m: None)
    assert "\n" not in str(error.value)
    assert all(q.mode is QuantMode.DISABLED and q.calibrator is None for q in quantizers(model).values())
    with pytest.raises(EdgeCompressError, match="callable or an iterable of batches"):
        calibrate(model, 3)


def test_calibrated_model_and_quantize_take_a_forward_loop_with_an_example_input():
    batches = _fresh_batches(5)

    def forward_loop(model: nn.Module) -> None:
        for images in batches:
            model(images)

    with pytest.raises(EdgeCompressError, match="needs example_input="):
        ec.quantize(_model(), forward_loop)
    with pytest.raises(EdgeCompressError, match="needs example_input="):
        calibrated_model(_model(), forward_loop)
    x = torch.randn(2, 3, 12, 12)
    from_loop = ec.quantize(_model(), forward_loop, method="max", example_input=batches[0][:1])
    from_batches = ec.quantize(_model(), batches, method="max")
    with torch.no_grad():
        assert torch.equal(from_loop(x), from_batches(x))


def test_sensitivity_takes_a_forward_loop():
    batches = _fresh_batches(6)
    model = _model()
    probe = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        reference = model(probe)

    def fidelity(candidate: nn.Module) -> float:
        with torch.no_grad():
            return -float((candidate(probe) - reference).abs().max())

    def forward_loop(m: nn.Module) -> None:
        for images in batches:
            m(images)

    _, by_batches = analyze_sensitivity(model, batches, fidelity, max_drop=0.0, method="max")
    _, by_loop = analyze_sensitivity(model, forward_loop, fidelity, max_drop=0.0, method="max", example_input=batches[0][:1])
    assert by_loop.to_dict() == by_batches.to_dict()
