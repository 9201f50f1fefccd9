"""``iterative`` (SlimYOLOv3's multi-pass pruning): a few passes, each removing its share of the goal,
with a short training between passes so the next pass scores a network that has recovered."""

from __future__ import annotations

from torch import nn

from ..errors import EdgeCompressError
from .plan import PrunePlan
from .strategies import PruneJob, Strategy, prune_in_passes, register_strategy


class IterativeStrategy(Strategy):
    """``passes`` equal shares of the goal (default 3); after every pass but the last, ``job.train(model,
    epochs_between)`` (default 1 epoch). The last pass is followed by the build's fine-tune stage, so it
    is not trained here. The model's train/eval mode is restored after each training."""

    name = "iterative"
    needs_training = True

    def __init__(self, passes: int = 3, epochs_between: int = 1):
        if not isinstance(passes, int) or passes < 1 or not isinstance(epochs_between, int) or epochs_between < 0:
            raise EdgeCompressError(f"iterative pruning takes passes >= 1 and epochs_between >= 0; got {passes!r} and {epochs_between!r}")
        self.passes, self.epochs_between = passes, epochs_between

    def prune(self, model: nn.Module, job: PruneJob) -> list[PrunePlan]:
        if job.train is None:
            raise EdgeCompressError(f"strategy {self.name!r} trains between passes: give the job train=lambda model, epochs: ...")

        def train(model: nn.Module) -> None:
            modes = [(module, module.training) for module in model.modules()]
            job.train(model, self.epochs_between)
            for module, training in modes:
                module.training = training

        return prune_in_passes(model, job, self.passes, self.name, between=train)


register_strategy(IterativeStrategy())
