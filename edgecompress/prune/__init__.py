"""Prune stage: score coupled channel groups, pick channels (global threshold, per-layer ratios or a
MACs/parameter target), slice the layers; optionally remove whole residual blocks."""

from .apply import apply_plan, prunable_batchnorms, prune
from .criteria import CRITERIA, register_criterion
from .layers import LAYER_CRITERIA, ResidualBlock, prune_layers, residual_blocks
from .plan import GroupPlan, LayerCut, PrunePlan, plan_pruning
from .surgery import SURGERIES, register_surgery

__all__ = [
    "prune",
    "plan_pruning",
    "apply_plan",
    "prunable_batchnorms",
    "prune_layers",
    "residual_blocks",
    "ResidualBlock",
    "LAYER_CRITERIA",
    "PrunePlan",
    "GroupPlan",
    "LayerCut",
    "CRITERIA",
    "register_criterion",
    "SURGERIES",
    "register_surgery",
]

