"""Stage "engine": deployment targets, trtexec recipes, TensorRT engines and deployment bundles."""

from .build import EngineResult, build_engine, count_qdq_nodes
from .targets import TARGETS, Target, get_target, list_targets
from .trtexec import RECIPES, profile_command, trtexec_command

__all__ = [
    "EngineResult",
    "RECIPES",
    "TARGETS",
    "Target",
    "build_engine",
    "count_qdq_nodes",
    "get_target",
    "list_targets",
    "profile_command",
    "trtexec_command",
]
