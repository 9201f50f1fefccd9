"""Prune stage: score coupled channel groups, pick channels by a global threshold, slice the layers."""

from .apply import apply_plan, prunable_batchnorms, prune
from .criteria import CRITERIA, register_criterion
from .plan import GroupPlan, LayerCut, PrunePlan, plan_pruning
from .surgery import SURGERIES, register_surgery

__all__ = [
    "prune",
    "plan_pruning",
    "apply_plan",
    "prunable_batchnorms",
    "PrunePlan",
    "GroupPlan",
    "LayerCut",
    "CRITERIA",
    "register_criterion",
    "SURGERIES",
    "register_surgery",
]
