"""Seed 001's criterion: a filter attention over each layer's filters, combined with the BN scale (``attention``).

The seed (abstract only) picks redundant filters from "the parameters of both the conv and the BN layer": a
filter attention and the BN scaling factor. Ours, from the weights alone (no data needed):

- Filter attention of a layer with filters W_1..W_n (each output filter flattened): a softmax over the layer's
  filters of their log L2 norms, a_i = exp(log ||W_i||) / sum_j exp(log ||W_j||) = ||W_i|| / sum_j ||W_j||,
  i.e. each filter's share of the layer's filter norm. It sums to 1 over the layer and a zero filter gets none;
  n * a_i is 1 for an average filter of its layer, so layers of different fan-in are comparable.
- BN scale: the mean |gamma| over the group's BatchNorms, on its raw scale as ``bn-gamma`` (a layer that sparse
  training silenced scores low everywhere); 1 for every channel of a group without one.
- Score: the product, n * a_i * |gamma_i| (n * a_i averaged over the group's producing layers and over the
  filters a tied group channel spans). A channel ranks low when either its filter or its scale is weak; a zero
  filter or a zero gamma scores 0. Within one layer the attention ranks as ``l2`` does: what it adds is the
  BN scale and a normalisation over the whole layer, not over the group's share of it.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ..graph import ChannelGroup, Role
from .criteria import BnGammaImportance, Criterion, gather, output_filters, register_criterion


def filter_attention(filters: torch.Tensor) -> torch.Tensor:
    """Softmax over the rows of ``filters`` (one flattened filter each) of their log L2 norms: each one's share of
    the total norm (all equal when every filter is zero)."""
    norms = filters.norm(dim=1)
    total = norms.sum()
    return norms / total if total > 0 else torch.full_like(norms, 1 / len(norms))


class AttentionImportance(Criterion):
    """Seed 001: filter attention (each filter's share of its layer's filter norm) times the mean |gamma| of the
    group's BatchNorms; see the module docstring for the exact formula. Used during training by the ``dynamic``
    strategy for the seed's whole method."""

    name = "attention"
    needs_sparse_bn = True

    def score(self, group: ChannelGroup, modules: Mapping[str, nn.Module]) -> torch.Tensor:
        attention = []
        for member in group.members_with(Role.CONV_OUT, Role.LINEAR_OUT, Role.DEPTHWISE):
            filters = output_filters(modules[member.module])
            attention.append(gather(len(filters) * filter_attention(filters), member, mean=True))
        scaled = any(modules[member.module].weight is not None for member in group.members_with(Role.BN, Role.NORM))
        gamma = BnGammaImportance().score(group, modules) if scaled else torch.ones(group.size)
        return torch.stack(attention).mean(0) * gamma


register_criterion(AttentionImportance())
