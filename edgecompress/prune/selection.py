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


def select_channels(scores: list[torch.Tensor], ratio: float, min_channels: int, round_to: int | np.ndarray) -> Selection:
    """Choose the channels to remove from each group (``round_to``: one multiple, or one per group).

    Channels are ranked by score; ties (e.g. the equal gammas of a fresh model) are broken by the
    channel's rank within its group relative to the group size, so equal scores prune every group
    at the same rate. A group's removed channels are always its lowest-scoring ones.
    """
    if not scores:
        return Selection([], 0.0)
    total = np.array([len(score) for score in scores])
    in_group = [removal_order(score) for score in scores]
    ranked = np.concatenate([score[order].numpy() for score, order in zip(scores, in_group)])
    fraction = np.concatenate([(np.arange(n) + 1) / n for n in total])
    group = np.repeat(np.arange(len(total)), total)
    order = np.lexsort((group, fraction, ranked))
    floor, target = max(min_channels, 1), int(ratio * total.sum())

    def removed_at(k: int) -> np.ndarray:
        candidates = np.bincount(group[order[:k]], minlength=len(total))
        return total - _kept(total, candidates, floor, round_to)

    low, high = 0, int(total.sum())
    while low < high:  # largest k whose constrained removal stays within the target
        middle = (low + high + 1) // 2
        low, high = (middle, high) if removed_at(middle).sum() <= target else (low, middle - 1)
    counts = removed_at(low)
    threshold = float(ranked[order[low - 1]]) if low else 0.0
    return Selection([order_g[:count].tolist() for order_g, count in zip(in_group, counts)], threshold)


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
