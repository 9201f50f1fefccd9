"""Apply a pruning plan by layer surgery and check the result."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import torch
from torch import nn

from ..errors import EdgeCompressError, describe
from ..graph import ChannelGraph, Role
from ..graph.trace import tensor_shapes
from ..helpers import evaluating, model_device
from .plan import LayerCut, PrunePlan, analysis_for
from .surgery import dimension_size, surgery_for


def _check_plan_fits(plan: PrunePlan, modules: dict[str, nn.Module]) -> None:
    for cut in plan.cuts:
        if cut.module not in modules:
            raise EdgeCompressError(f"plan cuts {cut.module!r}, which the model does not have; apply a plan made for this model")
        size = dimension_size(modules[cut.module], cut.dim)
        if size != cut.size:
            raise EdgeCompressError(
                f"plan expects {cut.module!r} to have {cut.size} {cut.dim} channels but it has {size}; "
                "was the model already pruned? make a new plan for it"
            )


def _verify(model: nn.Module, plan: PrunePlan) -> None:
    """Run the pruned model once: it must accept the same input and return the same shapes."""
    try:
        with evaluating(model):
            shapes = tensor_shapes(model(torch.zeros(plan.input_shape, dtype=plan.input_dtype, device=model_device(model))))
    except Exception as exc:
        raise EdgeCompressError(
            f"the pruned model fails on an input of shape {plan.input_shape} ({describe(exc)}); its forward may hard-code channel counts: "
            "list that module in ignore"
        ) from None
    if shapes != plan.output_shapes:
        raise EdgeCompressError(f"pruning changed the output shapes {plan.output_shapes} -> {shapes}; list the output layers in ignore")


def apply_plan(model: nn.Module, plan: PrunePlan) -> nn.Module:
    """Slice every layer the plan cuts, in place, then check the model still runs; returns ``model``.

    The plan is checked against the model before any layer is cut; if the final check fails the
    model is left cut, so plan on a copy (copy.deepcopy) when the original must survive.
    """
    modules = dict(model.named_modules())
    _check_plan_fits(plan, modules)
    by_module: dict[str, list[LayerCut]] = defaultdict(list)
    for cut in plan.cuts:
        by_module[cut.module].append(cut)
    for name, cuts in by_module.items():
        keep = {}
        for cut in cuts:
            mask = torch.ones(cut.size, dtype=torch.bool)
            mask[list(cut.removed)] = False
            keep[cut.dim] = mask.nonzero().flatten()
        surgery_for(modules[name]).cut(modules[name], keep)
    _verify(model, plan)
    return model


def prunable_batchnorms(
    model: nn.Module, example_input: torch.Tensor, ignore: Sequence[str] = (), graph: ChannelGraph | None = None
) -> list[tuple[str, nn.Module]]:
    """BatchNorms in at least one prunable channel group: sparse training puts its L1 penalty on their
    gammas. ``graph`` reuses an analysis of ``model`` (see :func:`plan_pruning`)."""
    graph = analysis_for(model, example_input, ignore, graph)
    names = {member.module for group in graph.prunable_groups for member in group.members_with(Role.BN)}
    return [(name, module) for name, module in model.named_modules() if name in names]
