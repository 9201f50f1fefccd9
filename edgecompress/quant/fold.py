"""Fold BatchNorm2d into the Conv2d before it, so the deployed graph quantizes the conv TensorRT runs.

Conv2d -> BatchNorm2d pairs are found with torch.fx; a pair is folded only when the conv output
feeds that BN alone and each module is called once. Subclasses of either count when they keep the
torch ``forward``. The BN becomes ``nn.Identity``, so the model keeps its class, its ``forward``
and its module names.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from ..errors import EdgeCompressError, describe
from ..graph.trace import PiecesTracer
from ..helpers import evaluating, output_tensors

FOLD_TOLERANCE = 1e-3  # relative; folding is exact up to float32 rounding


class _FoldTracer(PiecesTracer):
    """Keeps Conv2d and BatchNorm2d subclasses that inherit the torch forward as leaves, like the torch classes."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        torch_layer = any(isinstance(m, cls) and type(m).forward is cls.forward for cls in (nn.Conv2d, nn.BatchNorm2d))
        return torch_layer or super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module) -> fx.Graph:
    """torch.fx graph of ``model``, with a user-facing error when the forward is not traceable."""
    try:
        return _FoldTracer().trace(model)
    except Exception as exc:  # fx raises many types for untraceable Python
        raise EdgeCompressError(
            f"torch.fx cannot trace {type(model).__name__} ({describe(exc)}); "
            "remove data-dependent control flow from forward, or quantize without folding (quantize_model(fold=False))"
        ) from None


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv name, bn name) for every BatchNorm2d fed only by a Conv2d whose output nothing else reads."""
    graph = trace(model)
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        source = node.args[0]
        if not (isinstance(source, fx.Node) and source.op == "call_module" and isinstance(modules[source.target], nn.Conv2d)):
            continue
        if len(source.users) == 1 and calls[source.target] == 1 and calls[node.target] == 1:
            pairs.append((source.target, node.target))
    return pairs


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Rewrite ``conv`` in place so that conv(x) == bn(conv(x)) with BN's running statistics."""
    factor = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1.0 / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight.mul_(factor.reshape(-1, 1, 1, 1))
    conv.bias = nn.Parameter((bias - bn.running_mean) * factor + shift)


def fold_batchnorm(model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """A copy of ``model`` with every foldable Conv2d -> BatchNorm2d merged; checked on ``example_input``."""
    folded = copy.deepcopy(model)
    for conv_name, bn_name in conv_bn_pairs(folded):
        fold_conv_bn(folded.get_submodule(conv_name), folded.get_submodule(bn_name))
        folded.set_submodule(bn_name, nn.Identity())
    _check_same_outputs(model, folded, example_input)
    return folded


def _check_same_outputs(reference: nn.Module, folded: nn.Module, example_input: torch.Tensor) -> None:
    with evaluating(reference), evaluating(folded):
        expected, actual = output_tensors(reference(example_input)), output_tensors(folded(example_input))
    for want, got in zip(expected, actual):
        error = float((want - got).abs().max()) / max(float(want.abs().max()), 1e-6)
        if error > FOLD_TOLERANCE:
            raise EdgeCompressError(
                f"BatchNorm folding changed the outputs (relative error {error:.2e}); "
                "the model shares a Conv2d or BatchNorm2d in a way folding cannot express; quantize with quantize_model(fold=False)"
            )
