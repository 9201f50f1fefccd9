"""Prune stage: score coupled channel groups with a criterion, pick channels (global threshold,
per-layer ratios, a MACs/parameter target, or a latency budget over measured per-layer tables), slice
the layers, in one pass or several (strategies); optionally remove whole residual blocks; seed 002's
two-stage similarity pruning, which folds removed channels into their consumers."""

from .apply import apply_plan, prunable_batchnorms
from .criteria import (
    CRITERIA,
    BnGammaImportance,
    Criterion,
    FpgmImportance,
    L1Importance,
    L2Importance,
    RandomImportance,
    TaylorImportance,
    get_criterion,
    register_criterion,
)
from .criteria_attention import AttentionImportance
from .criteria_data import ActivationImportance, observe_inputs
from .criteria_kmeans import KMeansImportance
from .latency_budget import LatencyPrediction
from .layers import ResidualBlock, prune_layers, residual_blocks
from .plan import GroupPlan, LayerCut, PrunePlan, plan_pruning
from .similarity import GroupTreatment, RemovedChannel, SimilarityReport, prune_by_similarity
from .strategies import (
    STRATEGIES,
    Budget,
    GlobalStrategy,
    PruneJob,
    Strategy,
    get_strategy,
    prune,
    prune_in_passes,
    register_strategy,
    summarize_passes,
)
from .strategies_dynamic import DynamicStrategy, MaskPass
from .strategies_greedy import GreedyStrategy
from .strategies_iterative import IterativeStrategy
from .strategies_layer import LayerByLayerStrategy
from .strategies_similarity import SimilarityStrategy
from .strategies_uniform import UniformStrategy
from .surgery import SURGERIES, register_surgery

__all__ = [
    "prune",
    "plan_pruning",
    "apply_plan",
    "prunable_batchnorms",
    "prune_layers",
    "prune_by_similarity",
    "SimilarityReport",
    "GroupTreatment",
    "RemovedChannel",
    "residual_blocks",
    "ResidualBlock",
    "PrunePlan",
    "LatencyPrediction",
    "GroupPlan",
    "LayerCut",
    "Criterion",
    "BnGammaImportance",
    "L1Importance",
    "FpgmImportance",
    "TaylorImportance",
    "L2Importance",
    "RandomImportance",
    "KMeansImportance",
    "ActivationImportance",
    "AttentionImportance",
    "observe_inputs",
    "CRITERIA",
    "register_criterion",
    "get_criterion",
    "Strategy",
    "GlobalStrategy",
    "UniformStrategy",
    "LayerByLayerStrategy",
    "GreedyStrategy",
    "IterativeStrategy",
    "SimilarityStrategy",
    "Budget",
    "prune_in_passes",
    "DynamicStrategy",
    "MaskPass",
    "PruneJob",
    "STRATEGIES",
    "register_strategy",
    "get_strategy",
    "summarize_passes",
    "SURGERIES",
    "register_surgery",
]
