"""Entropy (KL) calibration: agreement with the reference algorithm, known optima, zero spike, unsigned grids."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgecompress.quant import EntropyCalibrator, MseCalibrator, TensorQuantizer


def _reference_entropy_amax(counts: np.ndarray, width: float, levels: int, start_bin: int = 128) -> float:
    """NVIDIA pytorch-quantization's entropy search, written out bin by bin (stride 1)."""
    bins = counts.astype(float)
    bins[0] = bins[1]
    best_stop, best = start_bin, math.inf
    for stop in range(start_bin, len(bins) + 1):
        reference = list(bins[:stop])
        reference[-1] += bins[stop:].sum()
        candidate = [0.0] * stop
        for level in range(levels):
            members = [k for k in range(stop) if k * levels // stop == level]
            filled = [k for k in members if bins[k] > 0]
            for k in filled:
                candidate[k] = sum(bins[k] for k in members) / len(filled)
        p_total, q_total = sum(reference), sum(candidate)
        divergence = 0.0
        for p, q in zip(reference, candidate):
            if p > 0:
                divergence = math.inf if q == 0 else divergence + p / p_total * math.log((p / p_total) / (q / q_total))
        if divergence <= best:  # the last of equal minima
            best_stop, best = stop, divergence
    return best_stop * width


@pytest.mark.parametrize("unsigned", [False, True], ids=["int8", "uint8"])
def test_entropy_matches_the_reference_search(unsigned):
    x = torch.randn(40000, generator=torch.Generator().manual_seed(0)).exp()  # lognormal: peak near zero, long tail
    calibrator = EntropyCalibrator(num_bins=300)  # under 512 bins every candidate is tried, as in the reference
    calibrator.collect(x)
    expected = _reference_entropy_amax(calibrator.counts, calibrator.width, 256 if unsigned else 128)
    assert float(calibrator.compute_amax(unsigned=unsigned)) == pytest.approx(expected, rel=1e-6)


def test_entropy_keeps_the_whole_range_of_a_uniform_distribution():
    # Every clip below the maximum folds mass into the last bin while Q stays flat: KL is smallest at the maximum.
    x = torch.rand(200000, generator=torch.Generator().manual_seed(1)) * 3.0
    calibrator = EntropyCalibrator()
    calibrator.collect(x)
    assert float(calibrator.compute_amax()) == pytest.approx(3.0, rel=1e-3)


def test_entropy_ignores_the_zero_spike_of_relu():
    # 75% exact zeros (ReLU of a half-negative tensor, then a dead half): the zero bin takes its neighbour's
    # count, so amax is the one the non-zero activations alone give; counting the spike would clip most of them.
    x = torch.relu(torch.randn(200000, generator=torch.Generator().manual_seed(0)))
    x[:100000] = 0.0
    with_spike, nonzero_only = EntropyCalibrator(), EntropyCalibrator()
    with_spike.collect(x)
    nonzero_only.collect(x[x > 0])
    assert float(with_spike.compute_amax()) == pytest.approx(float(nonzero_only.compute_amax()), rel=0.01)
    assert float(with_spike.compute_amax()) > float(x.quantile(0.999))


@pytest.mark.parametrize("calibrator_type", [EntropyCalibrator, MseCalibrator])
@pytest.mark.parametrize("uint8", [False, True], ids=["int8", "uint8"])
def test_quantizer_asks_for_the_grid_it_stores(calibrator_type, uint8):
    x = torch.relu(torch.randn(50000, generator=torch.Generator().manual_seed(2))).exp() - 1.0  # non-negative, long tail
    reference = calibrator_type()
    reference.collect(x)
    quantizer = TensorQuantizer(uint8=uint8)
    quantizer.begin_calibration(calibrator_type())
    quantizer(x)
    amax = float(quantizer.end_calibration())
    assert amax == pytest.approx(float(reference.compute_amax(unsigned=uint8)))  # uint8 zero point 0: 256 levels
    assert quantizer.zero_point == 0
