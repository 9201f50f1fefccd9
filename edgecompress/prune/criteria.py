"""Channel importance criteria: objects that score every channel of a group and say what they need.

``bn-gamma`` is network slimming's criterion: the mean |gamma| over the group's BatchNorms, on
its raw scale, so one global threshold prunes most where sparse training drove gammas to zero
(a whole useless layer shrinks to ``min_channels``). Filter norms have no common scale (fan-in
differs), so ``l1`` and ``fpgm`` divide each member's scores by their mean over the group before
averaging members: 1.0 means "an average channel of this group", as a gamma is about 1 at
initialisation. ``taylor`` estimates the loss change itself, a scale shared by every group.
``l2`` is ``l1`` with the L2 norm; ``random`` is the control every comparison needs. ``kmeans``
(seed 000) and ``activation`` (seed 004) live in ``criteria_kmeans`` and ``criteria_data``.

A criterion that ``needs_data`` measures the model on a few batches first: :meth:`Criterion.prepare`
returns a prepared copy (the registered instance stays stateless), and ``plan_pruning(data=...)``
calls it.

A new criterion subclasses :class:`Criterion` and is registered as an instance::

    class NegativeL1(Criterion):
        name = "negative-l1"

        def score(self, group, modules):
            return -L1Importance().score(group, modules)

    register_criterion(NegativeL1())
    prune(model, x, ratio=0.5, criterion="negative-l1")
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterable, Mapping

import torch
from torch import nn

from ..errors import EdgeCompressError
from ..graph import ChannelGroup, ChannelMember, Role


class Criterion(ABC):
    """A channel importance criterion: its name, what it needs before scoring, and its scores.

    ``needs_gradients``: score from gradients accumulated on the model (run ``loss.backward()``
    on a few training batches first). ``needs_sparse_bn``: works best after sparse (L1 on BN
    gamma) training; informational, nothing enforces it. ``needs_data``: must be prepared on the
    model with a few batches of inputs (:meth:`prepare`) before scoring.
    """

    name: str = ""
    needs_gradients: bool = False
    needs_sparse_bn: bool = False
    needs_data: bool = False

    def prepare(self, model: nn.Module, batches: Iterable) -> Criterion:
        """This criterion ready to score ``model``; one that ``needs_data`` returns a copy holding what it
        measured on ``batches`` (model inputs, or (inputs, targets) pairs). Others ignore the batches."""
        return self

    @abstractmethod
    def score(self, group: ChannelGroup, modules: Mapping[str, nn.Module]) -> torch.Tensor:
        """One score per channel of ``group`` (lowest pruned first); ``modules``: the model's named modules."""

    def score_block(self, conv: nn.Module, bn: nn.Module | None) -> float | None:
        """Importance of a residual branch from its final conv (and BN), for layer pruning; None when
        this criterion cannot score blocks."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


CRITERIA: dict[str, Criterion] = {}


def register_criterion(criterion: Criterion) -> Criterion:
    """Register a criterion instance under its ``name`` (replacing one of that name); returns it."""
    if not isinstance(criterion, Criterion) or not criterion.name:
        raise EdgeCompressError(f"register a named Criterion instance, e.g. register_criterion(L1Importance()); got {criterion!r}")
    CRITERIA[criterion.name] = criterion
    return criterion


def get_criterion(criterion: str | Criterion) -> Criterion:
    """A Criterion as is, or the registered one of that name."""
    if isinstance(criterion, Criterion):
        return criterion
    if isinstance(criterion, str) and criterion in CRITERIA:
        return CRITERIA[criterion]
    raise EdgeCompressError(f"unknown pruning criterion {criterion!r}; choose one of {', '.join(sorted(CRITERIA))} or pass a Criterion")


def gather(values: torch.Tensor, member: ChannelMember, mean: bool = False) -> torch.Tensor:
    """Per group channel, the sum (or mean) of ``values`` at the member's indices for that channel."""
    counts = torch.tensor([len(indices) for indices in member.indices])
    flat = torch.tensor([index for indices in member.indices for index in indices])
    segment = torch.repeat_interleave(torch.arange(len(counts)), counts)
    total = torch.zeros(len(counts), dtype=values.dtype).index_add_(0, segment, values[flat])
    return total / counts if mean else total


def normalised_mean(scores: list[torch.Tensor]) -> torch.Tensor:
    """Average over members of each member's scores divided by their mean."""
    return torch.stack([score / score.mean().clamp_min(1e-12) for score in scores]).mean(0)


def output_filters(layer: nn.Module, weight: torch.Tensor | None = None) -> torch.Tensor:
    """One row per output channel of a conv, transposed conv or linear: the weights producing it
    (or the matching entries of ``weight``, a tensor shaped like the layer's weight)."""
    weight = layer.weight.detach().float().cpu() if weight is None else weight
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):  # (in, out / groups, ...): regroup outputs first
        groups = layer.groups
        weight = weight.unflatten(0, (groups, -1)).transpose(1, 2).flatten(0, 1)
    return weight.flatten(1)


class L1Importance(Criterion):
    """L1 norm of the filters producing each channel (conv and linear outputs, depthwise filters).
    A block scores the mean |weight| of its final conv."""

    name = "l1"

    def score(self, group: ChannelGroup, modules: Mapping[str, nn.Module]) -> torch.Tensor:
        scores = []
        for member in group.members_with(Role.CONV_OUT, Role.LINEAR_OUT, Role.DEPTHWISE):
            scores.append(gather(output_filters(modules[member.module]).abs().sum(1), member))
        return normalised_mean(scores)

    def score_block(self, conv: nn.Module, bn: nn.Module | None) -> float:
        return float(conv.weight.detach().abs().mean())


class L2Importance(Criterion):
    """L2 norm of the filters producing each channel, normalised per group like ``l1``. A block scores the
    root mean square weight of its final conv."""

    name = "l2"

    def score(self, group: ChannelGroup, modules: Mapping[str, nn.Module]) -> torch.Tensor:
        scores = []
        for member in group.members_with(Role.CONV_OUT, Role.LINEAR_OUT, Role.DEPTHWISE):
            squares = gather(output_filters(modules[member.module]).pow(2).sum(1), member)
            scores.append(squares.sqrt())
        return normalised_mean(scores)

    def score_block(self, conv: nn.Module, bn: nn.Module | None) -> float:
        return float(conv.weight.detach().pow(2).mean().sqrt())


class RandomImportance(Criterion):
    """The control: uniform random scores, reproducible under ``seed`` (each group draws from its own
    generator seeded by ``seed`` and the group id). A criterion that does not beat it on the same budget
    and fine-tune has not shown that it picks channels at all. Blocks are not scored (layer pruning
    falls back to ``bn-gamma``)."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def score(self, group: ChannelGroup, modules: Mapping[str, nn.Module]) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + group.id)
        return torch.rand(group.size, generator=generator)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, seed={self.seed})"


class FpgmImportance(Criterion):
    """FPGM (He et al., 2019): a filter close to all others of its layer (near their geometric median)
    is redundant; a filter's score is its summed distance to the other filters of the layer."""

    name = "fpgm"

    def score(self, group: ChannelGroup, modules: Mapping[str, nn.Module]) -> torch.Tensor:
        scores = []
        for member in group.members_with(Role.CONV_OUT, Role.LINEAR_OUT):
            filters = output_filters(modules[member.module])
            scores.append(gather(torch.cdist(filters, filters).sum(1), member, mean=True))
        return normalised_mean(scores)


class TaylorImportance(Criterion):
    """First-order Taylor estimate of the loss change from removing each channel (Molchanov et al.,
    2019): (sum of weight * gradient over all its parameters)^2, on one global scale. Uses the
    gradients accumulated on the model, so call loss.backward() on some batches first."""

    name = "taylor"
    needs_gradients = True

    def score(self, group: ChannelGroup, modules: Mapping[str, nn.Module]) -> torch.Tensor:
        roles = (Role.CONV_OUT, Role.LINEAR_OUT, Role.DEPTHWISE, Role.BN, Role.NORM, Role.CHANNELWISE)
        contributions = [self._weight_times_grad(modules[member.module], member) for member in group.members_with(*roles)]
        return torch.stack(contributions).sum(0) ** 2

    def _weight_times_grad(self, layer: nn.Module, member: ChannelMember) -> torch.Tensor:
        """Per group channel, the sum of weight * gradient over every parameter of ``layer`` producing it."""
        total = torch.zeros(len(member.indices))
        for name, parameter in layer.named_parameters(recurse=False):
            if parameter.grad is None:
                raise EdgeCompressError(
                    f"criterion {self.name!r} needs gradients: run loss.backward() on a few training batches before "
                    f"planning (no gradient on {member.module}.{name})"
                )
            product = (parameter.detach() * parameter.grad).float().cpu()
            if name == "weight" and product.dim() > 1:
                product = output_filters(layer, product)
            total += gather(product.reshape(len(product), -1).sum(1), member)
        return total


class BnGammaImportance(Criterion):
    """Mean |gamma| of the group's BatchNorms (network slimming); groups without a BN fall back to ``l1``.

    A group channel spanning several indices of one BN (tied groups of a grouped conv) takes their mean,
    so every score stays on the raw gamma scale that one global threshold compares. A block scores the
    mean |gamma| of its final BN (the mean |weight| of its final conv when it has none)."""

    name = "bn-gamma"
    needs_sparse_bn = True

    def score(self, group: ChannelGroup, modules: Mapping[str, nn.Module]) -> torch.Tensor:
        scores = [
            gather(modules[member.module].weight.detach().float().cpu().abs(), member, mean=True)
            for member in group.members_with(Role.BN, Role.NORM)
            if modules[member.module].weight is not None
        ]
        return torch.stack(scores).mean(0) if scores else L1Importance().score(group, modules)

    def score_block(self, conv: nn.Module, bn: nn.Module | None) -> float:
        return float((bn if bn is not None else conv).weight.detach().abs().mean())


register_criterion(L1Importance())
register_criterion(L2Importance())
register_criterion(RandomImportance())
register_criterion(FpgmImportance())
register_criterion(TaylorImportance())
register_criterion(BnGammaImportance())
