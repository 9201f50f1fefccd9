"""Dynamic pruning during training (seed 001's strategy; the masking is soft filter pruning's, He et al. 2018).

Each epoch: train one epoch, score with the job's criterion, plan for the job's goal and zero the filters of the
channels that plan would remove, without removing them. The next epoch trains those filters again, so a masked
channel that regrows enough to outscore others comes back: the masks are chosen anew every epoch, and every pass
records how many masked channels came back (``revived``) and how many were newly masked. After the last epoch the
channels its plan masks are removed physically; the pruned model computes exactly what the trained model computes
with those channels silenced (their filters, BN gammas and shifts zeroed) when the activation maps 0 to 0.

Between epochs only the filters (conv and linear weights and biases) are zeroed, not the BN gamma and beta: with
gamma at 0 no gradient reaches the filter (it is scaled by gamma) nor gamma (the normalised output of a zero filter
is 0), so no masked channel could ever come back. A zero filter's channel still passes its BN shift, a constant,
until it is removed; behind a ReLU it can come back only while that shift is positive (else its gradient is 0).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from ..errors import EdgeCompressError
from .apply import apply_plan
from .criteria import output_filters
from .plan import PrunePlan
from .strategies import PruneJob, Strategy, register_strategy

FILTER_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)  # conv, transposed conv and linear: layers with output filters


@dataclass(frozen=True)
class MaskPass(PrunePlan):
    """One epoch's plan of the ``dynamic`` strategy: the channels masked after that epoch, and how they changed."""

    epoch: int = 0
    revived: int = 0  # channels masked after the previous epoch that this one keeps
    newly_masked: int = 0  # channels masked now that were not after the previous epoch

    @classmethod
    def of(cls, plan: PrunePlan, epoch: int, previous: set[tuple[int, int]]) -> MaskPass:
        masked = masked_channels(plan)
        return cls(**{f.name: getattr(plan, f.name) for f in fields(PrunePlan)}, epoch=epoch, revived=len(previous - masked),
                   newly_masked=len(masked - previous))

    def summary(self) -> dict:
        return {**super().summary(), "epoch": self.epoch, "revived": self.revived, "newly_masked": self.newly_masked}


def masked_channels(plan: PrunePlan) -> set[tuple[int, int]]:
    """The (group id, group channel) pairs ``plan`` removes; comparable between plans of one architecture."""
    return {(group.group_id, channel) for group in plan.groups for channel in group.removed}


def zero_filters(model: nn.Module, plan: PrunePlan) -> None:
    """Zero, in place, the filters and biases of conv and linear layers producing a channel ``plan`` removes (its
    "out" cuts); everything else, BN included, stays, so training can bring the channel back."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for cut in plan.cuts:
            layer = modules[cut.module]
            if cut.dim != "out" or not isinstance(layer, FILTER_LAYERS):
                continue
            removed = list(cut.removed)
            positions = output_filters(layer, torch.arange(layer.weight.numel()).view(layer.weight.shape))[removed]
            keep = torch.ones(layer.weight.numel(), dtype=torch.bool)
            keep[positions.flatten()] = False
            layer.weight.mul_(keep.view(layer.weight.shape).to(layer.weight))
            if layer.bias is not None:
                layer.bias[removed] = 0


class DynamicStrategy(Strategy):
    """Seed 001's dynamic pruning: ``epochs`` rounds of one training epoch, scoring and soft masking (zeroed
    filters that train again), then the last masks removed physically. Returns one :class:`MaskPass` per epoch;
    the last is the plan applied. ``--criterion attention --strategy dynamic`` is the seed's whole method."""

    name = "dynamic"
    needs_training = True

    def __init__(self, epochs: int = 3):
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
            raise EdgeCompressError(f"dynamic pruning needs at least one epoch, got epochs={epochs!r}; e.g. DynamicStrategy(epochs=3)")
        self.epochs = epochs

    def prune(self, model: nn.Module, job: PruneJob) -> list[MaskPass]:
        if job.train is None:
            raise EdgeCompressError(f"strategy {self.name!r} trains while it prunes: pass train=lambda model, epochs: ... to the job")
        passes: list[MaskPass] = []
        for epoch in range(1, self.epochs + 1):
            job.train(model, 1)
            plan = MaskPass.of(job.plan(model), epoch, masked_channels(passes[-1]) if passes else set())
            passes.append(plan)
            if epoch < self.epochs:
                zero_filters(model, plan)
        apply_plan(model, passes[-1])
        return passes

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, epochs={self.epochs})"


register_strategy(DynamicStrategy())
