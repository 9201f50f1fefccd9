"""``similarity`` (seed 002) as a strategy: :func:`prune_by_similarity`'s two stages (the job's criterion,
BN gamma by default, then channels nearly a linear function of kept ones, folded into their consumers),
on the job's calibration batches."""

from __future__ import annotations

from torch import nn

from ..errors import EdgeCompressError
from .apply import apply_plan
from .plan import PrunePlan
from .similarity import prune_by_similarity
from .strategies import PruneJob, Strategy, register_strategy


class SimilarityStrategy(Strategy):
    """Stage one cuts ``gamma_ratio`` of the prunable channels by the criterion (0.1; all of a smaller ratio
    goal), stage two the rest of the goal by least-squares similarity on ``job.data``. A ``target_macs``
    that stage two cannot reach (too few groups it can measure) is completed by one global plan of the
    criterion. Goals: a ratio (of the unpruned model's prunable channels, approximately: stage two counts
    the stage-one model's) or ``target_macs``."""

    name = "similarity"
    needs_data = True

    def __init__(self, gamma_ratio: float = 0.1):
        if not 0 <= gamma_ratio < 1:
            raise EdgeCompressError(f"similarity's gamma_ratio is the fraction cut in stage one, in [0, 1); got {gamma_ratio!r}")
        self.gamma_ratio = gamma_ratio

    def prune(self, model: nn.Module, job: PruneJob) -> list[PrunePlan]:
        if job.target_params is not None or not isinstance(job.ratio, (int, float, type(None))):
            raise EdgeCompressError(
                "strategy 'similarity' takes a ratio (one number) or target_macs; use strategy 'global' for target_params or per-layer ratios")
        if job.data is None:
            raise EdgeCompressError("strategy 'similarity' measures feature maps: give the job data=[a few batches of calibration inputs]")
        if job.ratio is not None:
            stage_one = min(self.gamma_ratio, job.ratio)
            goal = {"similarity_ratio": (job.ratio - stage_one) / (1 - stage_one)}
        else:
            stage_one, goal = self.gamma_ratio, {"target_macs": job.target_macs}
        if job.criterion.needs_gradients and job.gradients is not None:
            job.gradients(model)
        _, report = prune_by_similarity(model, job.example_input, job.data, gamma_ratio=stage_one, **goal, ignore=job.ignore,
                                        min_channels=job.min_channels, round_to=job.round_to, criterion=job.criterion)
        model.zero_grad(set_to_none=True)
        plans = [report.gamma_plan, report.similarity_plan]
        if job.target_macs is not None and report.macs_after > (1 - job.target_macs) * report.macs_before:
            plans.append(job.plan(model, target_macs=1 - (1 - job.target_macs) * report.macs_before / report.macs_after))
            apply_plan(model, plans[-1])
        return plans


register_strategy(SimilarityStrategy())
