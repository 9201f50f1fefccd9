"""Calibrators: collect activation statistics, then choose the clipping range ``amax`` of a quantizer.

``max`` keeps the running max of |x| (per channel when ``axis`` is set; used for weights). The
histogram calibrators keep a histogram of |x| with a fixed bin width that grows with the data (as
NVIDIA pytorch-quantization does) and pick ``amax`` by percentile, by least expected squared
quantization error (``mse``) or by least KL divergence (``entropy``, TensorRT's legacy calibrator).
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np
import torch
from torch import Tensor

from ..errors import EdgeCompressError

INT8_BOUND = 127  # largest int8 magnitude of a symmetric quantizer: scale = amax / 127
HISTOGRAM_BINS = 2048
MAX_BINS_FACTOR = 8  # the histogram may grow to 8x its initial bins before its resolution is halved


class Calibrator(Protocol):
    """Collects statistics of the tensors a quantizer sees, then proposes its ``amax``."""

    collected: int  # number of tensors seen

    def collect(self, x: Tensor) -> None: ...

    def compute_amax(self) -> Tensor: ...


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

    def compute_amax(self) -> Tensor:
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

    def compute_amax(self) -> Tensor:
        if self.counts is None or self.counts.sum() == 0:
            raise EdgeCompressError("calibrator saw no data; run at least one batch through the model before computing amax")
        return torch.tensor(float(self._choose_amax()))

    def _choose_amax(self) -> float:
        """The histogram's range; subclasses choose a tighter clip."""
        return float(self.edges()[-1])


class PercentileCalibrator(HistogramCalibrator):
    """amax = the given percentile of |x| (e.g. 99.99): ignores the rarest outliers."""

    def __init__(self, percentile: float = 99.99, num_bins: int = HISTOGRAM_BINS):
        if not 0.0 < percentile <= 100.0:
            raise EdgeCompressError(f"percentile must be in (0, 100], got {percentile}; pass e.g. 99.99")
        super().__init__(num_bins)
        self.percentile = percentile

    def _choose_amax(self) -> float:
        cdf = np.cumsum(self.counts) / self.counts.sum()
        index = int(np.searchsorted(cdf, self.percentile / 100.0))
        return float(self.edges()[min(index, len(cdf) - 1)])


class MseCalibrator(HistogramCalibrator):
    """amax minimising the expected squared error of fake-quantizing the histogram (bin centres)."""

    def _choose_amax(self) -> float:
        centers = (np.arange(len(self.counts)) + 0.5) * self.width
        candidates = self.edges()[min(INT8_BOUND, len(self.counts) - 1)::max(1, len(self.counts) // 512)]
        scales = candidates[:, None] / INT8_BOUND
        quantized = np.clip(np.round(centers[None, :] / scales), -INT8_BOUND - 1, INT8_BOUND) * scales
        errors = ((centers[None, :] - quantized) ** 2 * self.counts[None, :]).sum(axis=1)
        return float(candidates[int(np.argmin(errors))])


class EntropyCalibrator(HistogramCalibrator):
    """amax minimising KL(P || Q) between the clipped histogram and its 128-level quantization."""

    levels = INT8_BOUND + 1

    def _choose_amax(self) -> float:
        counts = self.counts.astype(np.float64)
        if len(counts) > 1:
            counts[0] = counts[1]  # the spike of exact zeros after ReLU would dominate the divergence (as NVIDIA's calibrator does)
        stops = list(range(min(self.levels, len(counts)), len(counts) + 1, max(1, len(counts) // 512)))
        divergences = [self._divergence(counts, stop) for stop in stops]
        return float(self.edges()[stops[int(np.argmin(divergences))] - 1])

    def _divergence(self, counts: np.ndarray, stop: int) -> float:
        reference = counts[:stop].copy()
        reference[-1] += counts[stop:].sum()  # outliers are clipped into the last bin
        groups = np.array_split(np.arange(stop), self.levels)
        candidate = np.zeros(stop)
        for group in groups:
            nonzero = counts[group] > 0
            if nonzero.any():
                candidate[group[nonzero]] = counts[group].sum() / nonzero.sum()
        p = reference / reference.sum()
        q = candidate / max(candidate.sum(), 1e-12)
        support = p > 0
        q_support = np.where(q[support] > 0, q[support], 1e-12)
        return float(np.sum(p[support] * np.log(p[support] / q_support)))


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
