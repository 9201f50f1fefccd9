"""Cost model for target-driven pruning: the MACs or parameters a channel selection removes.

Layer costs are measured once (MACs from the analysis' shape pass, parameter counts from the
modules); a selection scales each layer by the fractions of its output and input channels kept,
so finding the global ratio that meets ``target_macs`` is a bisection with no forward pass per step.
Fractions of MACs are of the whole forward as :func:`edgecompress.model_stats` counts it, so the MACs no
channel cut changes (attention's matmuls, convs inside modules kept whole) count too.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..graph import ChannelGraph, ChannelGroup, analyze
from ..helpers import model_device
from ..stats import model_stats
from .surgery import dimension_size

Key = tuple[str, str]  # (module, "out" | "in")


def model_macs(model: nn.Module, graph: ChannelGraph) -> int:
    """MACs of ``model``'s whole forward on a seeded input of the analysed shape, as ``model_stats`` counts them and the
    build reports them: the analysis' conv and linear MACs plus those no cut changes (YOLO12's area attention, kept
    whole: 11% of its MACs at 320 px; a target counted on the convs alone fell short of it by that much)."""
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(graph.input_shape, generator=generator).to(device=model_device(model), dtype=graph.input_dtype)
    return max(model_stats(model, example).macs, sum(graph.layer_macs.values()))


def _is_depthwise(layer: nn.Module) -> bool:
    groups = getattr(layer, "groups", 1)
    return groups > 1 and groups == getattr(layer, "in_channels", 0) == getattr(layer, "out_channels", 0)


class CostModel:
    """Estimated fraction of a model's MACs or parameters removed by cutting given channel counts."""

    def __init__(self, metric: str, total: int, graph: ChannelGraph, groups: list[ChannelGroup], orders: list[torch.Tensor], modules: dict[str, nn.Module]):
        self.total = max(total, 1)
        self.removal: list[list[tuple[Key, np.ndarray]]] = []  # per group: (layer dim, indices removed after k channels)
        sizes: dict[Key, int] = {}
        for group, order in zip(groups, orders):
            steps = []
            for member in group.members:
                counts = np.array([len(member.indices[channel]) for channel in order.tolist()])
                cumulative = np.concatenate([[0], np.cumsum(counts)])
                for dim in member.role.dims:
                    sizes[(member.module, dim)] = dimension_size(modules[member.module], dim)
                    steps.append(((member.module, dim), cumulative))
            self.removal.append(steps)
        self.sizes = sizes
        self.costs: dict[str, tuple[int, int, bool]] = {}  # module -> (weight cost, per-channel cost, depthwise)
        for name in {module for module, _ in sizes}:
            layer = modules[name]
            if metric == "macs":
                self.costs[name] = (graph.layer_macs.get(name, 0), 0, _is_depthwise(layer))
            else:
                own = list(layer.parameters(recurse=False))
                matrices = sum(p.numel() for p in own if p.dim() > 1)
                self.costs[name] = (matrices, sum(p.numel() for p in own if p.dim() <= 1), _is_depthwise(layer))

    def removed_fraction(self, removed_counts: list[int]) -> float:
        """Fraction of the model's total removed when group g loses its ``removed_counts[g]`` lowest channels."""
        removed: dict[Key, int] = defaultdict(int)
        for steps, count in zip(self.removal, removed_counts):
            for key, cumulative in steps:
                removed[key] += int(cumulative[count])

        def kept(name: str, dim: str) -> float:
            size = self.sizes.get((name, dim))
            return 1.0 - removed[(name, dim)] / size if size else 1.0

        saved = 0.0
        for name, (matrices, vectors, depthwise) in self.costs.items():
            out = kept(name, "out")
            weight_kept = out if depthwise else out * kept(name, "in")
            saved += matrices * (1 - weight_kept) + vectors * (1 - out)
        return saved / self.total


def bisect_ratio(removed_at: Callable[[float], float], target: float, steps: int = 30) -> float:
    """Smallest global ratio whose selection removes at least ``target`` (``removed_at`` grows with the ratio)."""
    low, high = 0.0, 0.999
    for _ in range(steps):
        middle = (low + high) / 2
        low, high = (low, middle) if removed_at(middle) >= target else (middle, high)
    return high


def max_removable_fraction(model: nn.Module, example_input: torch.Tensor | None = None, *, metric: str = "macs", min_channels: int = 1,
                           round_to: int = 1, ignore: Sequence[str] = (), graph: ChannelGraph | None = None) -> float:
    """The largest fraction of the model's MACs (or parameters, ``metric="params"``) channel pruning can
    remove: every prunable group cut to the fewest channels the planner lets it keep (``min_channels``,
    rounded up as ``round_to`` asks). A ``target_macs`` above it is out of reach; checking costs one
    analysis (pass ``graph`` to reuse one made with the same ``ignore``) and no training.
    """
    graph = graph if graph is not None else analyze(model, example_input, ignore)
    modules = dict(model.named_modules())
    groups = graph.prunable_groups
    total = model_macs(model, graph) if metric == "macs" else sum(p.numel() for p in model.parameters())
    cost = CostModel(metric, total, graph, groups, [torch.arange(group.size) for group in groups], modules)
    floor = max(min_channels, 1)
    removed = []
    for group in groups:
        multiple = _group_multiple(group, round_to)
        removed.append(group.size - min(-(-floor // multiple) * multiple, group.size))
    return cost.removed_fraction(removed)


def _group_multiple(group: ChannelGroup, round_to: int) -> int:
    """The multiple of group channels a group keeps, as ``plan.group_rounding`` computes it (plan imports this module)."""
    spans = min(len(indices) for member in group.members for indices in member.indices)
    return round_to // math.gcd(round_to, spans)
