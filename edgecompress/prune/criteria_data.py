"""Criteria measured on data: a runner that feeds a few batches through hooked layers, and seed 004's
network response statistic (``activation``)."""

from __future__ import annotations

import copy
from typing import Callable, Iterable, Mapping

import torch
from torch import nn

from ..errors import EdgeCompressError
from ..graph import ChannelGroup, Role
from ..helpers import evaluating, model_device
from .criteria import Criterion, gather, normalised_mean, register_criterion

InputHook = Callable[[str, torch.Tensor], None]  # (module name, its first input)


def observe_inputs(model: nn.Module, batches: Iterable, layer_types: tuple[type, ...], hook: InputHook) -> int:
    """Run ``batches`` (input tensors, or (inputs, targets) pairs) through ``model`` in eval mode without
    gradients, calling ``hook`` with the first input of every ``layer_types`` layer; the hooks are removed
    afterwards, whatever happens. Returns the number of batches run."""
    handles = [
        module.register_forward_pre_hook(lambda _, args, name=name: hook(name, args[0]))
        for name, module in model.named_modules()
        if isinstance(module, layer_types)
    ]
    device, count = model_device(model), 0
    try:
        with evaluating(model):
            for batch in batches:
                model((batch[0] if isinstance(batch, (tuple, list)) else batch).to(device))
                count += 1
    finally:
        for handle in handles:
            handle.remove()
    return count


class ActivationImportance(Criterion):
    """Seed 004's network response: the mean absolute activation of each channel, post-activation, as
    the layers consuming the channel see it (the input of each conv, depthwise conv and linear reading
    the channel, averaged over every element of the calibration batches). A dead channel (always zero
    after its activation) scores 0. Normalised per group like ``l1``. Post-activation because that is
    what the network passes on, whether the activation is a module or a function call in forward."""

    name = "activation"
    needs_data = True

    def __init__(self) -> None:
        self.input_means: dict[str, torch.Tensor] | None = None  # consuming layer -> mean |input| per input channel

    def prepare(self, model: nn.Module, batches: Iterable) -> ActivationImportance:
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}

        def record(name: str, inputs: torch.Tensor) -> None:
            if inputs.dim() < 2:  # an unbatched call has no channel dim 1; such layers are not group members
                return
            per_channel = inputs.detach().abs().float().transpose(0, 1).flatten(1)  # channel dim 1 for convs and (N, F) linears
            sums[name] = sums.get(name, 0) + per_channel.sum(1).cpu()
            counts[name] = counts.get(name, 0) + per_channel.shape[1]

        if observe_inputs(model, batches, (nn.modules.conv._ConvNd, nn.Linear), record) == 0:
            raise EdgeCompressError(f"criterion {self.name!r} got no batches in data; pass a few batches of calibration inputs")
        prepared = copy.copy(self)
        prepared.input_means = {name: total / counts[name] for name, total in sums.items()}
        return prepared

    def score(self, group: ChannelGroup, modules: Mapping[str, nn.Module]) -> torch.Tensor:
        if self.input_means is None:
            raise EdgeCompressError(f"criterion {self.name!r} needs data: pass data=[a few input batches] to plan_pruning, or prepare(model, batches) first")
        consumers = [member for member in group.members_with(Role.CONV_IN, Role.LINEAR_IN, Role.DEPTHWISE) if member.module in self.input_means]
        if not consumers:
            producers = ", ".join(member.module for member in group.members if member.role.produces)
            raise EdgeCompressError(f"criterion {self.name!r} saw no conv or linear read the channels of {producers} on the data; list it in ignore or use another criterion")
        return normalised_mean([gather(self.input_means[member.module], member, mean=True) for member in consumers])


register_criterion(ActivationImportance())
