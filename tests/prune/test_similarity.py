"""Two-stage similarity pruning (seed 002): stage one cuts zero gammas; stage two removes channels that
are linear combinations of kept ones and folds them into the consumers, leaving outputs unchanged."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgecompress.errors import EdgeCompressError
from edgecompress.export import export_onnx
from edgecompress.prune.similarity import _GroupFits, prune_by_similarity

X = torch.zeros(1, 3, 12, 12)


def batches(seed: int, count: int = 3) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, 12, 12, generator=generator) for _ in range(count)]


def run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


class Chain(nn.Module):
    """conv1 -> [BN] -> activation -> conv2 (the consumer) -> ReLU -> conv3: conv1's channels fold into conv2."""

    def __init__(self, activation: nn.Module, consumer_kernel: int, batchnorm: bool):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=not batchnorm)
        self.bn1 = nn.BatchNorm2d(6) if batchnorm else nn.Identity()
        self.act = activation
        self.conv2 = nn.Conv2d(6, 5, consumer_kernel, padding=consumer_kernel // 2, bias=False)
        self.conv3 = nn.Conv2d(5, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(F.relu(self.conv2(self.act(self.bn1(self.conv1(x))))))


def randomise_batchnorm(bn: nn.BatchNorm2d) -> None:
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5, generator=generator)
        bn.bias.normal_(0, 0.5, generator=generator)
        bn.running_mean.normal_(0, 0.5, generator=generator)
        bn.running_var.uniform_(0.5, 2.0, generator=generator)


def test_a_sum_of_two_channels_folds_exactly_into_a_padded_consumer() -> None:
    model = Chain(nn.Identity(), consumer_kernel=3, batchnorm=False)
    with torch.no_grad():  # channel 5 = channel 1 + channel 2, and the activation is linear
        model.conv1.weight[5] = model.conv1.weight[1] + model.conv1.weight[2]
        model.conv1.bias[5] = model.conv1.bias[1] + model.conv1.bias[2]
    fresh = batches(seed=9, count=1)[0]
    before = run(model, fresh)
    model, report = prune_by_similarity(model, X, batches(seed=2), gamma_ratio=0.0, similarity_ratio=0.17)
    assert report.gamma_removed == 0 and report.similarity_removed == 1
    (removed,) = report.removed
    assert removed.producer == "conv1" and removed.channel in (1, 2, 5) and removed.folded_into == ("conv2",)
    assert removed.relative_residual < 1e-9
    assert model.conv1.out_channels == 5 and model.conv2.in_channels == 5 and model.conv2.bias is None  # zero padding: no constant fitted
    torch.testing.assert_close(run(model, fresh), before, atol=1e-5, rtol=0)


def test_an_affine_combination_folds_its_constant_into_an_unpadded_consumers_bias() -> None:
    model = Chain(nn.Identity(), consumer_kernel=1, batchnorm=True)
    randomise_batchnorm(model.bn1)
    with torch.no_grad():  # after BN, channel 4 is an affine function of channels 0 and 3
        model.conv1.weight[4] = 2 * model.conv1.weight[0] - model.conv1.weight[3]
    fresh = batches(seed=11, count=1)[0]
    before = run(model, fresh)
    model, report = prune_by_similarity(model, X, batches(seed=3), gamma_ratio=0.0, similarity_ratio=0.17)
    assert report.similarity_removed == 1 and report.removed[0].channel in (0, 3, 4)
    assert model.conv2.bias is not None and model.conv2.in_channels == 5
    torch.testing.assert_close(run(model, fresh), before, atol=1e-5, rtol=0)


def test_a_duplicated_channel_is_found_and_folded_through_relu() -> None:
    model = Chain(nn.ReLU(), consumer_kernel=3, batchnorm=True)
    randomise_batchnorm(model.bn1)
    with torch.no_grad():  # channel 3 duplicates channel 0, BN statistics included
        model.conv1.weight[3] = model.conv1.weight[0]
        for tensor in (model.bn1.weight, model.bn1.bias, model.bn1.running_mean, model.bn1.running_var):
            tensor[3] = tensor[0]
    fresh = batches(seed=12, count=1)[0]
    before = run(model, fresh)
    model, report = prune_by_similarity(model, X, batches(seed=4), gamma_ratio=0.0, similarity_ratio=0.17)
    assert [channel.channel for channel in report.removed] in ([0], [3])
    torch.testing.assert_close(run(model, fresh), before, atol=1e-5, rtol=0)


class TwoBlocks(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))))


def test_stage_one_removes_the_zero_gamma_channels_then_the_model_exports_to_onnx(tmp_path) -> None:
    model = TwoBlocks()
    randomise_batchnorm(model.bn1)
    randomise_batchnorm(model.bn2)
    with torch.no_grad():
        model.bn1.weight[[1, 4]] = 0.0
    model, report = prune_by_similarity(model, X, batches(seed=5), gamma_ratio=2 / 16, similarity_ratio=0.25)
    assert report.gamma_removed == 2
    assert [(group.removed, group.total) for group in report.gamma_plan.groups] == [((1, 4), 8), ((), 8)]
    assert report.similarity_removed == 3 and model.bn1.num_features + model.bn2.num_features == 16 - 2 - 3
    assert (model.bn1.weight != 0).all()
    assert {group.mode for group in report.groups} == {"fold"} and all(channel.folded_into for channel in report.removed)
    summary = report.summary()
    assert summary["removed_by_gamma"] == 2 and summary["removed_by_similarity"] == 3 and summary["folded"] == 3
    path = export_onnx(model, X, tmp_path / "similarity.onnx")
    fresh = batches(seed=6, count=1)[0]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: fresh.numpy()})
    np.testing.assert_allclose(got, run(model, fresh).numpy(), atol=1e-4, rtol=1e-4)


def test_a_macs_target_counts_both_stages() -> None:
    model = TwoBlocks()
    randomise_batchnorm(model.bn1)
    randomise_batchnorm(model.bn2)
    model, report = prune_by_similarity(model, X, batches(seed=5), gamma_ratio=2 / 16, target_macs=0.4)
    assert report.gamma_removed == 2 and report.similarity_removed >= 1
    measured = sum(layer.weight.numel() for layer in (model.conv1, model.conv2, model.conv3)) * 12 * 12
    assert report.macs_after == measured and 0.4 <= report.summary()["macs_removed"] < 0.55


def test_the_greedy_fits_match_least_squares_after_each_removal() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 40, generator=generator, dtype=torch.float64) * torch.rand(40, generator=generator, dtype=torch.float64)
    x[:, 5], x[:, 7], x[:, 9] = x[:, 1], x[:, 2] + 0.5 * x[:, 3], 0.0  # a copy, a combination, a dead channel
    moments = x.T @ x / len(x)
    fits = _GroupFits(moments)
    for _ in range(30):  # past the first fresh inversion (REFRESH)
        share, channel = fits.best()
        others = [c for c in fits.kept if c != channel]
        solution = torch.linalg.lstsq(x[:, others], x[:, channel : channel + 1], driver="gelsd").solution
        residual = float(((x[:, others] @ solution - x[:, channel : channel + 1]) ** 2).mean())
        energy = float(moments[channel, channel])
        assert share == pytest.approx(residual / energy if energy else 0.0, abs=1e-5)
        fits.remove(channel)
    assert {1, 5} - set(fits.kept) and {2, 3, 7} - set(fits.kept) and 9 not in fits.kept


class Branchy(nn.Module):
    """A residual add ties stem and ``a`` (not measured); ``b`` feeds a concat (measured, removed plainly)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem, self.a, self.b = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Conv2d(12, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.stem(x))
        y = F.relu(self.a(s)) + s
        return self.head(torch.cat([F.relu(self.b(y)), y], 1))


def test_groups_behind_an_add_or_a_concat_are_not_folded() -> None:
    model, report = prune_by_similarity(Branchy(), X, batches(seed=7), gamma_ratio=0.0, similarity_ratio=0.2)
    modes = {group.producer: (group.mode, group.reason) for group in report.groups}
    assert modes[""][0] == "skip" and "2 layers produce these channels" in modes[""][1]
    assert modes["b"][0] == "remove" and "also feed cat" in modes["b"][1]
    assert report.similarity_removed == 2 and all(c.producer == "b" and c.folded_into == () for c in report.removed)
    assert model.b.out_channels == 4 and model.head.in_channels == 10
    kept, kept_report = prune_by_similarity(Branchy(), X, batches(seed=7), gamma_ratio=0.0, similarity_ratio=0.2, fold_only=True)
    assert kept_report.similarity_removed == 0 and kept.b.out_channels == 6


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"similarity_ratio": 1.0}, "pruning ratio must be in"),
        ({"target_macs": 0.5}, "exactly one of similarity_ratio"),
        ({"batches": []}, "calibration batches"),
        ({"batches": [torch.zeros(3, 12, 12)]}, "calibration batches"),
    ],
)
def test_bad_arguments_are_refused_before_any_cut(arguments: dict, message: str) -> None:
    model = TwoBlocks()
    call = {"batches": batches(seed=8, count=1), "gamma_ratio": 0.5, "similarity_ratio": 0.1} | arguments
    with pytest.raises(EdgeCompressError, match=message):
        prune_by_similarity(model, X, call.pop("batches"), **call)
    assert model.conv1.out_channels == 8
