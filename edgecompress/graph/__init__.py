"""Graph stage: trace a model and find the channel groups that must be pruned together."""

from . import rules, rules_layers, rules_split  # the built-in channel rules register themselves on import
from .analyze import analyze
from .context import AnalysisContext, Role
from .groups import ChannelGraph, ChannelGroup, ChannelMember
from .registry import register_function_rule, register_method_rule, register_module_rule

__all__ = [
    "analyze",
    "rules",
    "AnalysisContext",
    "Role",
    "ChannelGraph",
    "ChannelGroup",
    "ChannelMember",
    "register_module_rule",
    "register_function_rule",
    "register_method_rule",
]
