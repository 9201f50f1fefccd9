"""Channel importance criteria: a registry of functions that score every channel of a group.

``bn-gamma`` is network slimming's criterion: the mean |gamma| over the group's BatchNorms, on
its raw scale, so one global threshold prunes most where sparse training drove gammas to zero
(a whole useless layer shrinks to ``min_channels``). Filter norms have no common scale (fan-in
differs), so ``l1`` divides each member's scores by their mean over the group before averaging
members: 1.0 means "an average channel of this group", as a gamma is about 1 at initialisation.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import nn

from ..graph import ChannelGroup, ChannelMember, Role

Criterion = Callable[[ChannelGroup, Mapping[str, nn.Module]], torch.Tensor]

CRITERIA: dict[str, Criterion] = {}


def register_criterion(name: str) -> Callable[[Criterion], Criterion]:
    """Register ``fn(group, modules) -> scores`` (one normalised score per group channel) under ``name``."""

    def decorator(fn: Criterion) -> Criterion:
        CRITERIA[name] = fn
        return fn

    return decorator


def gather(values: torch.Tensor, member: ChannelMember) -> torch.Tensor:
    """Per group channel, the sum of ``values`` at the member's indices for that channel."""
    counts = torch.tensor([len(indices) for indices in member.indices])
    flat = torch.tensor([index for indices in member.indices for index in indices])
    segment = torch.repeat_interleave(torch.arange(len(counts)), counts)
    return torch.zeros(len(counts), dtype=values.dtype).index_add_(0, segment, values[flat])


def normalised_mean(scores: list[torch.Tensor]) -> torch.Tensor:
    """Average over members of each member's scores divided by their mean."""
    return torch.stack([score / score.mean().clamp_min(1e-12) for score in scores]).mean(0)


@register_criterion("l1")
def filter_l1(group: ChannelGroup, modules: Mapping[str, nn.Module]) -> torch.Tensor:
    """L1 norm of the filters producing each channel (conv and linear outputs, depthwise filters)."""
    scores = []
    for member in group.members_with(Role.CONV_OUT, Role.LINEAR_OUT, Role.DEPTHWISE):
        weight = modules[member.module].weight.detach().float().cpu()
        scores.append(gather(weight.flatten(1).abs().sum(1), member))
    return normalised_mean(scores)


@register_criterion("bn-gamma")
def bn_gamma(group: ChannelGroup, modules: Mapping[str, nn.Module]) -> torch.Tensor:
    """Mean |gamma| of the group's BatchNorms (network slimming); groups without a BN fall back to ``l1``."""
    scores = [
        gather(modules[member.module].weight.detach().float().cpu().abs(), member)
        for member in group.members_with(Role.BN)
        if modules[member.module].weight is not None
    ]
    return torch.stack(scores).mean(0) if scores else filter_l1(group, modules)
