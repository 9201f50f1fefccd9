"""Global channel selection: rank every prunable channel by its normalised score, then find the
largest global cut that removes at most ``ratio`` of them while every group keeps at least
``min_channels`` channels, rounded up to a multiple of ``round_to``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Selection:
    removed: list[list[int]]  # per group, the group channel indices to remove
    threshold: float  # normalised score of the last channel the global ranking reached


def _kept(total: np.ndarray, candidates: np.ndarray, floor: int, round_to: int) -> np.ndarray:
    kept = np.maximum(total - candidates, floor)
    return np.minimum(-(-kept // round_to) * round_to, total)


@dataclass(frozen=True)
class Ranking:
    """Every prunable channel in global removal order; made once per set of scores, so the bisection
    of a MACs target can select at many ratios without sorting again."""

    totals: np.ndarray  # channels per group
    in_group: list[torch.Tensor]  # per group, its channels in removal order
    ranked: np.ndarray  # scores, group after group, each in removal order
    group: np.ndarray  # the group of each entry of ``ranked``
    order: np.ndarray  # entries of ``ranked`` in global removal order

    def removed_counts(self, ratio: float, min_channels: int, round_to: int | np.ndarray) -> tuple[np.ndarray, int]:
        """Channels removed per group, and how many globally ranked channels that cut reached."""
        total, floor, target = self.totals, max(min_channels, 1), int(ratio * self.totals.sum())

        def removed_at(k: int) -> np.ndarray:
            candidates = np.bincount(self.group[self.order[:k]], minlength=len(total))
            return total - _kept(total, candidates, floor, round_to)

        low, high = 0, int(total.sum())
        while low < high:  # largest k whose constrained removal stays within the target
            middle = (low + high + 1) // 2
            low, high = (middle, high) if removed_at(middle).sum() <= target else (low, middle - 1)
        return removed_at(low), low


def rank_channels(scores: list[torch.Tensor]) -> Ranking:
    """Rank channels by score; ties (e.g. the equal gammas of a fresh model) are broken by the
    channel's rank within its group relative to the group size, so equal scores prune every group
    at the same rate."""
    if not scores:
        return Ranking(np.zeros(0, dtype=int), [], np.zeros(0), np.zeros(0, dtype=int), np.zeros(0, dtype=int))
    total = np.array([len(score) for score in scores])
    in_group = [removal_order(score) for score in scores]
    ranked = np.concatenate([score[order].numpy() for score, order in zip(scores, in_group)])
    fraction = np.concatenate([(np.arange(n) + 1) / n for n in total])
    group = np.repeat(np.arange(len(total)), total)
    return Ranking(total, in_group, ranked, group, np.lexsort((group, fraction, ranked)))


def select_channels(scores: list[torch.Tensor], ratio: float, min_channels: int, round_to: int | np.ndarray) -> Selection:
    """Choose the channels to remove from each group (``round_to``: one multiple, or one per group)
    by one global ranking (see :func:`rank_channels`). A group's removed channels are always its
    lowest-scoring ones."""
    ranking = rank_channels(scores)
    counts, reached = ranking.removed_counts(ratio, min_channels, round_to)
    threshold = float(ranking.ranked[ranking.order[reached - 1]]) if reached else 0.0
    return Selection([order_g[:count].tolist() for order_g, count in zip(ranking.in_group, counts)], threshold)


def removal_order(score: torch.Tensor) -> torch.Tensor:
    """A group's channels in the order they are removed: lowest score first, ties by index."""
    return torch.argsort(score, stable=True)


def select_per_group(scores: list[torch.Tensor], ratios: list[float], min_channels: int, round_to: int | np.ndarray) -> Selection:
    """Each group loses its own ``ratios[g]`` of channels, lowest scores first, with the same floor and rounding."""
    removed = []
    for score, ratio, multiple in zip(scores, ratios, np.broadcast_to(round_to, len(scores))):
        total = np.array([len(score)])
        kept = int(_kept(total, np.array([int(ratio * len(score))]), max(min_channels, 1), multiple)[0])
        removed.append(removal_order(score)[: len(score) - kept].tolist() if ratio > 0 else [])
    return Selection(removed, 0.0)
