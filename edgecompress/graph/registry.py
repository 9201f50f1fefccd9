"""Registries of channel rules, the dispatch from an fx node to its rule, and the fallbacks.

A channel rule says how an op maps the channels of its inputs onto the channels of its output.
Three registries are keyed by the fx node target (never by autograd names): module types for
``call_module`` nodes, functions for ``call_function`` and tensor method names for ``call_method``.
A rule returns the output's layout, or None when the output has no channel dimension. Supporting
a new op is registering one function; an op without a rule goes to :func:`unknown_op`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from torch import nn
from torch._ops import OpOverload
from torch.fx import Node

from ..errors import EdgeCompressError
from .context import AnalysisContext
from .index_mapping import Layout

log = logging.getLogger(__name__)

ChannelRule = Callable[[AnalysisContext, Node], "Layout | None"]

MODULE_RULES: dict[type[nn.Module], ChannelRule] = {}
FUNCTION_RULES: dict[Callable[..., Any], ChannelRule] = {}
METHOD_RULES: dict[str, ChannelRule] = {}


def _register(registry: dict, keys: tuple) -> Callable[[ChannelRule], ChannelRule]:
    def decorator(rule: ChannelRule) -> ChannelRule:
        registry.update((key, rule) for key in keys)
        return rule

    return decorator


def register_module_rule(*types: type[nn.Module]) -> Callable[[ChannelRule], ChannelRule]:
    """Register the channel rule of module types (subclasses inherit it); the types become fx leaves.

    A rule that records members of a new layer type also needs ``edgecompress.prune.register_surgery``.
    """
    return _register(MODULE_RULES, types)


def register_function_rule(*functions: Callable[..., Any]) -> Callable[[ChannelRule], ChannelRule]:
    return _register(FUNCTION_RULES, functions)


def register_method_rule(*names: str) -> Callable[[ChannelRule], ChannelRule]:
    return _register(METHOD_RULES, names)


def rule_for(ctx: AnalysisContext, node: Node) -> ChannelRule:
    """The rule for ``node``: ignored modules are opaque; ops without a rule go to :func:`unknown_op`."""
    if node.op == "call_module":
        if node.target in ctx.ignore or node.target in ctx.opaque:
            return ignored_module
        return next((MODULE_RULES[cls] for cls in type(ctx.module(node)).__mro__ if cls in MODULE_RULES), unknown_op)
    if node.op == "call_function":
        return FUNCTION_RULES.get(node.target, unknown_op)
    if node.op == "call_method":
        return METHOD_RULES.get(str(node.target), unknown_op)
    if node.op == "output":
        return model_output
    return unknown_op  # placeholder and get_attr: channels that no prunable layer produces


def op_name(node: Node, ctx: AnalysisContext) -> str:
    if node.op == "call_module":
        return type(ctx.module(node)).__name__
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    return getattr(node.target, "__name__", str(node.target))


def place(ctx: AnalysisContext, node: Node) -> str:
    where = ctx.where(node)
    return f"module {where!r}" if where else "the model's forward"


def _producers(ctx: AnalysisContext, node: Node) -> list[str]:
    """Nearest modules upstream of ``node``: ignoring them keeps the channels ``node`` reads (in an
    exported aten graph, which calls no modules, those whose forward computed its inputs)."""
    found, stack, seen = [], list(node.all_input_nodes), set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current.op == "call_module":
            found.append(str(current.target))
        elif isinstance(current.target, OpOverload) and ctx.where(current):
            found.append(ctx.where(current))
        else:
            stack.extend(current.all_input_nodes)
    return sorted(found)


def _fresh_or_none(ctx: AnalysisContext, node: Node, reason: str) -> Layout | None:
    shape = ctx.shape(node)
    return ctx.new_atoms(shape[1], blocked=reason) if shape is not None and len(shape) >= 2 else None


def unknown_op(ctx: AnalysisContext, node: Node) -> Layout | None:
    """An op without a rule: safe when it touches no prunable channel, conservative when it clearly
    keeps the channel dim (its channels are blocked), an error otherwise."""
    if "tensor_meta" not in node.meta:
        return None  # python values such as x.size(1): no channels
    inputs = ctx.channel_inputs(node)
    layouts = [ctx.channels(arg) for arg in inputs]
    name, location = op_name(node, ctx), place(ctx, node)
    if all(ctx.blocked_reason(atom) for layout in layouts for atom in layout):
        return _fresh_or_none(ctx, node, f"{node.name} is not computed by a prunable layer")
    out = ctx.shape(node)
    if out is not None and len(out) < 2:
        for layout in layouts:
            ctx.block(layout, f"{name} in {location} reduces them to a tensor without a channel dim")
        return None
    if out is not None and len(inputs) == 1 and out[:2] == ctx.shape(inputs[0])[:2]:
        reason = f"{name} in {location} has no channel rule"
        ctx.notes.append(f"{reason}; the {out[1]} channels it touches are kept")
        log.warning("%s; the %d channels it touches are kept", reason, out[1])
        ctx.block(layouts[0], reason)
        return layouts[0]
    where = ctx.where(node)
    suggestion = [where] if where else _producers(ctx, node)
    raise EdgeCompressError(
        f"cannot tell how {name} ({node.name}) in {location} maps channels; pass ignore={suggestion!r} to keep the "
        "channels it touches, or rewrite it with supported ops (conv, BN, activations, add, cat, pooling, upsample, flatten)"
    )


def ignored_module(ctx: AnalysisContext, node: Node) -> Layout | None:
    """A module in ``ignore`` (or that fx cannot trace) is opaque: the channels it reads and writes are kept."""
    reason = ctx.opaque.get(str(node.target), f"{node.target!r} is in ignore")
    for arg in ctx.channel_inputs(node):
        ctx.block(ctx.channels(arg), reason)
    return _fresh_or_none(ctx, node, reason)


def model_output(ctx: AnalysisContext, node: Node) -> None:
    """Channels that reach a model output keep their count (a detector's prediction maps)."""
    for arg in ctx.channel_inputs(node):
        ctx.block(ctx.channels(arg), f"{arg.name} reaches a model output")
    return None
