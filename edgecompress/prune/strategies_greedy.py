"""``greedy`` (seed 004): remove channels in small chunks, rescoring after each, so the statistics of every
chunk are computed on the network without the channels already removed (a group's normalised scores,
FPGM's distances, activations and gradients no longer count them)."""

from __future__ import annotations

import math

from torch import nn

from ..errors import EdgeCompressError
from .plan import PrunePlan
from .strategies import PruneJob, Strategy, prune_in_passes, register_strategy


class GreedyStrategy(Strategy):
    """Chunks of ``step`` of the goal (0.05: twenty chunks of 5%), each a global plan on the model as the
    chunks before left it, until the goal is met. Costs one analysis and one scoring per chunk."""

    name = "greedy"

    def __init__(self, step: float = 0.05):
        if not 0 < step <= 1:
            raise EdgeCompressError(f"greedy step is the share of the goal removed per chunk, in (0, 1]; got {step!r} (e.g. 0.05)")
        self.step = step

    def prune(self, model: nn.Module, job: PruneJob) -> list[PrunePlan]:
        return prune_in_passes(model, job, math.ceil(1 / self.step - 1e-9), self.name)


register_strategy(GreedyStrategy())
