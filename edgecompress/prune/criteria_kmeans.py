"""Seed 000's bi-criteria: parameter subspaces found by k-means, combined with the BN gamma.

Weights: each layer producing the group's channels clusters its output filters (flattened) with
k-means into k = round(sqrt(filters)) subspaces, clipped to [2, distinct filters]. Inside a subspace a
filter scores its L1 norm over the subspace's largest, so the strongest filter of every subspace
scores 1 and goes last (each subspace keeps representatives); a filter identical to a stronger (or,
when equal, earlier) one of its subspace is a redundant copy and scores 0.
Gamma: the mean |gamma| of the group's BatchNorms (no information, all equal, without one).
Combination: each of the two is turned into a rank within the group, r = (channels scoring strictly
less) / (size - 1), and a channel scores max(weight rank, gamma rank): it ranks low only when both
criteria put it low, so a cut at rank t removes exactly the channels both place in their lowest t.
Ranks spread every group over [0, 1], so a global ratio cuts each group at about the same rate.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn

from ..graph import ChannelGroup, Role
from .criteria import Criterion, gather, output_filters, register_criterion


def fractional_rank(values: torch.Tensor) -> torch.Tensor:
    """Per value, the fraction of the others strictly below it: ties share the lower rank, all equal gives 0."""
    if len(values) < 2:
        return torch.zeros(len(values))
    below = torch.searchsorted(torch.sort(values).values, values, side="left")
    return below.float() / (len(values) - 1)


def subspace_count(filters: torch.Tensor) -> int:
    """k = round(sqrt(filters)) clipped to [2, distinct filters] (k-means cannot find more clusters than points)."""
    distinct = len(torch.unique(filters, dim=0))
    return max(1, min(max(2, round(math.sqrt(len(filters)))), distinct))


def subspace_scores(filters: torch.Tensor, n_init: int = 3, random_state: int = 0) -> torch.Tensor:
    """Per filter, its L1 norm over the largest of its k-means subspace; redundant copies score 0."""
    from sklearn.cluster import KMeans  # slow to import; only this criterion needs it

    k = subspace_count(filters)
    labels = torch.zeros(len(filters), dtype=torch.long)
    if k > 1:
        labels = torch.from_numpy(KMeans(n_clusters=k, n_init=n_init, random_state=random_state).fit_predict(filters.double().numpy())).long()
    magnitude = filters.abs().sum(1)
    scores = torch.zeros(len(filters))
    tolerance = 1e-6 * float(filters.norm(dim=1).max().clamp_min(1e-12))
    for cluster in labels.unique():
        members = (labels == cluster).nonzero().flatten()
        order = members[torch.argsort(-magnitude[members], stable=True)]  # strongest first, ties by index
        close = torch.cdist(filters[order], filters[order]) <= tolerance
        copy = torch.triu(close, diagonal=1).any(0)  # identical to a filter ahead of it
        scores[order] = torch.where(copy, 0.0, magnitude[order] / magnitude[order[0]].clamp_min(1e-12))
    return scores


class KMeansImportance(Criterion):
    """Seed 000: k-means parameter subspaces ranked by weight magnitude, combined with the BN gamma so a
    channel is cut only when both agree (see the module docstring for the exact rule)."""

    name = "kmeans"
    needs_sparse_bn = True

    def __init__(self, n_init: int = 3, random_state: int = 0):
        self.n_init = n_init
        self.random_state = random_state

    def score(self, group: ChannelGroup, modules: Mapping[str, nn.Module]) -> torch.Tensor:
        weights = [
            gather(subspace_scores(output_filters(modules[member.module]), self.n_init, self.random_state), member, mean=True)
            for member in group.members_with(Role.CONV_OUT, Role.LINEAR_OUT, Role.DEPTHWISE)
        ]
        gammas = [
            gather(modules[member.module].weight.detach().float().cpu().abs(), member, mean=True)
            for member in group.members_with(Role.BN, Role.NORM)
            if modules[member.module].weight is not None
        ]
        weight_rank = fractional_rank(torch.stack(weights).mean(0))
        gamma_rank = fractional_rank(torch.stack(gammas).mean(0)) if gammas else torch.zeros(group.size)
        return torch.maximum(weight_rank, gamma_rank)


register_criterion(KMeansImportance())
