"""Calibrators: collect activation statistics, then choose the clipping range ``amax`` of a quantizer.

``max`` keeps the running max of |x| (per channel when ``axis`` is set; used for weights). The
histogram calibrators keep a histogram of |x| with a fixed bin width that grows with the data (as
NVIDIA pytorch-quantization does) and pick ``amax`` by percentile, by least expected squared
quantization error (``mse``) or by least KL divergence (``entropy``, TensorRT's legacy calibrator).

``compute_amax(unsigned=True)`` is for a quantizer that stores a non-negative tensor on 256 levels
(uint8, zero point 0): ``mse`` and ``entropy`` then model a 255-step grid instead of int8's 127.
KL divergence compares the shapes of two distributions, not the size of the values it clips: on
activations with a sharp peak near zero and a long tail (ReLU6 after a depthwise conv) it clips a
few percent of the mass to a fraction of the range, exactly as NVIDIA's reference does; prefer
``percentile`` or ``mse`` for such networks (see bench/RESULTS.md).
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np
import torch
from torch import Tensor

from ..errors import EdgeCompressError

INT8_BOUND = 127  # largest int8 magnitude of a symmetric quantizer: scale = amax / 127
UINT8_BOUND = 255  # largest uint8 level: scale = amax / 255 for a non-negative tensor with zero point 0
HISTOGRAM_BINS = 2048
MAX_BINS_FACTOR = 8  # the histogram may grow to 8x its initial bins before its resolution is halved


class Calibrator(Protocol):
    """Collects statistics of the tensors a quantizer sees, then proposes its ``amax``."""

    collected: int  # number of tensors seen

    def collect(self, x: Tensor) -> None: ...

    def compute_amax(self, *, unsigned: bool = False) -> Tensor: ...


class MaxCalibrator:
    """Running max of |x|, over the whole tensor or per slice along ``axis``."""

    def __init__(self, axis: int | None = None):
        self.axis = axis
        self.collected = 0
        self._amax: Tensor | None = None

    def collect(self, x: Tensor) -> None:
        x = x.detach().abs().float()
        self.collected += 1
        if self.axis is None:
            batch_max = x.max()
        else:
            batch_max = x.transpose(0, self.axis).reshape(x.shape[self.axis], -1).max(dim=1).values
        self._amax = batch_max if self._amax is None else torch.maximum(self._amax, batch_max)

    def compute_amax(self, *, unsigned: bool = False) -> Tensor:
        if self._amax is None:
            raise EdgeCompressError("calibrator saw no data; run at least one batch through the model before computing amax")
        return self._amax.cpu()


class HistogramCalibrator:
    """Histogram of |x| with a fixed bin width; bins are appended when a batch exceeds the current range."""

    def __init__(self, num_bins: int = HISTOGRAM_BINS):
        self.num_bins = num_bins
        self.collected = 0
        self.counts: np.ndarray | None = None
        self.width = 0.0

    def collect(self, x: Tensor) -> None:
        x = x.detach().abs().float().flatten().cpu()
        self.collected += 1
        batch_max = float(x.max())
        if self.counts is None:
            self.width = max(batch_max, 1e-12) / self.num_bins
            self.counts = np.zeros(self.num_bins, dtype=np.int64)
        while batch_max / self.width > MAX_BINS_FACTOR * self.num_bins:
            self._merge_pairs()
        bins_needed = int(np.ceil(batch_max / self.width))
        if bins_needed > len(self.counts):
            self.counts = np.concatenate([self.counts, np.zeros(bins_needed - len(self.counts), dtype=np.int64)])
        bins = len(self.counts)
        self.counts += torch.histc(x, bins=bins, min=0.0, max=bins * self.width).numpy().astype(np.int64)

    def _merge_pairs(self) -> None:
        """Halve the resolution (double the bin width) so a far larger batch max fits in bounded memory."""
        padded = np.concatenate([self.counts, np.zeros(len(self.counts) % 2, dtype=np.int64)])
        self.counts, self.width = padded.reshape(-1, 2).sum(axis=1), self.width * 2

    def edges(self) -> np.ndarray:
        """Upper edge of every bin: the candidate values of ``amax``."""
        return (np.arange(len(self.counts)) + 1) * self.width

    def compute_amax(self, *, unsigned: bool = False) -> Tensor:
        """The chosen amax; ``unsigned``: the quantizer stores the (non-negative) tensor on 256 levels."""
        if self.counts is None or self.counts.sum() == 0:
            raise EdgeCompressError("calibrator saw no data; run at least one batch through the model before computing amax")
        return torch.tensor(float(self._choose_amax(unsigned)))

    def _choose_amax(self, unsigned: bool) -> float:
        """The histogram's range; subclasses choose a tighter clip."""
        return float(self.edges()[-1])


class PercentileCalibrator(HistogramCalibrator):
    """amax = the given percentile of |x| (e.g. 99.99): ignores the rarest outliers."""

    def __init__(self, percentile: float = 99.99, num_bins: int = HISTOGRAM_BINS):
        if not 0.0 < percentile <= 100.0:
            raise EdgeCompressError(f"percentile must be in (0, 100], got {percentile}; pass e.g. 99.99")
        super().__init__(num_bins)
        self.percentile = percentile

    def _choose_amax(self, unsigned: bool) -> float:
        cdf = np.cumsum(self.counts) / self.counts.sum()
        index = int(np.searchsorted(cdf, self.percentile / 100.0))
        return float(self.edges()[min(index, len(cdf) - 1)])


class MseCalibrator(HistogramCalibrator):
    """amax minimising the expected squared error of fake-quantizing the histogram (bin centres)."""

    def _choose_amax(self, unsigned: bool) -> float:
        bound = UINT8_BOUND if unsigned else INT8_BOUND
        centers = (np.arange(len(self.counts)) + 0.5) * self.width
        candidates = self.edges()[min(INT8_BOUND, len(self.counts) - 1)::max(1, len(self.counts) // 512)]
        scales = candidates[:, None] / bound
        quantized = np.clip(np.round(centers[None, :] / scales), 0, bound) * scales  # centres are >= 0
        errors = ((centers[None, :] - quantized) ** 2 * self.counts[None, :]).sum(axis=1)
        return float(candidates[int(np.argmin(errors))])


class EntropyCalibrator(HistogramCalibrator):
    """amax minimising KL(P || Q), P the histogram clipped at amax, Q its quantization to the int8 (or uint8) levels.

    Follows NVIDIA pytorch-quantization's ``_compute_amax_entropy``: the zero bin takes its
    neighbour's count (the ReLU zero spike would dominate), candidates run from bin 128 to the end
    (every ``len / 512``-th bin), the clipped mass is folded into P's last bin, Q spreads each
    level's mass evenly over that level's non-empty bins, a candidate whose Q misses part of P's
    support diverges, and the last of equal minima wins (the widest range).
    """

    start_bin = 128

    def _choose_amax(self, unsigned: bool) -> float:
        counts = self.counts.astype(np.float64)
        if len(counts) > 1:
            counts[0] = counts[1]
        levels = UINT8_BOUND + 1 if unsigned else INT8_BOUND + 1
        stops = np.arange(min(self.start_bin, len(counts)), len(counts) + 1, max(1, len(counts) // 512))
        divergences = np.array([_kl_divergence(counts, int(stop), levels) for stop in stops])
        last_best = len(divergences) - 1 - int(np.argmin(divergences[::-1]))
        return float(stops[last_best] * self.width)


def _kl_divergence(counts: np.ndarray, stop: int, levels: int) -> float:
    """KL(P || Q) for clipping ``counts`` at bin ``stop`` and quantizing bins [0, stop) to ``levels`` levels."""
    kept = counts[:stop]
    reference = kept.copy()
    reference[-1] += counts[stop:].sum()  # outliers are clipped into the last bin
    level = np.arange(stop) * levels // stop
    nonzero = kept > 0
    level_mass = np.bincount(level, weights=kept, minlength=levels)
    level_bins = np.bincount(level, weights=nonzero.astype(np.float64), minlength=levels)
    candidate = np.where(nonzero, level_mass[level] / np.maximum(level_bins[level], 1.0), 0.0)
    p, q = reference / reference.sum(), candidate / max(candidate.sum(), 1e-300)
    support = p > 0
    if np.any(q[support] == 0):
        return float("inf")
    return float(np.sum(p[support] * np.log(p[support] / q[support])))


CALIBRATORS: dict[str, Callable[[float], Calibrator]] = {
    "max": lambda percentile: MaxCalibrator(),
    "percentile": lambda percentile: PercentileCalibrator(percentile),
    "mse": lambda percentile: MseCalibrator(),
    "entropy": lambda percentile: EntropyCalibrator(),
}


def make_calibrator(method: str, *, percentile: float = 99.99) -> Calibrator:
    """A fresh activation calibrator for ``method`` (one of :data:`CALIBRATORS`)."""
    if method not in CALIBRATORS:
        raise EdgeCompressError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATORS)}")
    return CALIBRATORS[method](percentile)
