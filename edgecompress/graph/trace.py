"""Tracing with torch.fx and the shape pass, with errors that name the module to fix or ignore."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import EdgeCompressError
from .registry import MODULE_RULES


class _Tracer(fx.Tracer):
    """Treats ignored modules and modules with a registered channel rule as leaves, and remembers the
    innermost module whose forward failed."""

    def __init__(self, ignore: frozenset[str]):
        super().__init__()
        self.ignore = ignore
        self.failed_in: str | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.ignore or type(m) in MODULE_RULES:
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = self.path_of_module(m)
            raise


def check_ignore(model: nn.Module, ignore: Iterable[str]) -> frozenset[str]:
    """Validate ``ignore`` entries against the model's module names."""
    ignore = [ignore] if isinstance(ignore, str) else list(ignore)
    names = dict(model.named_modules())
    unknown = [name for name in ignore if name not in names or name == ""]
    if unknown:
        examples = ", ".join(list(n for n in names if n)[:3])
        raise EdgeCompressError(f"ignore names {unknown} are not modules of the model; use qualified names such as {examples}")
    return frozenset(ignore)


def trace_model(model: nn.Module, ignore: frozenset[str]) -> fx.GraphModule:
    """Symbolically trace ``model``; ignored modules stay opaque leaves."""
    tracer = _Tracer(ignore)
    try:
        graph = tracer.trace(model)
    except Exception as exc:
        detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if tracer.failed_in:
            hint = f"make its forward traceable (no data-dependent control flow) or pass ignore=[{tracer.failed_in!r}]"
            place = f"module {tracer.failed_in!r}"
        else:
            hint = "make the model's forward traceable (no data-dependent control flow on tensors)"
            place = "the model's forward"
        raise EdgeCompressError(f"torch.fx cannot trace {place} ({detail}); {hint}") from None
    return fx.GraphModule(model, graph)


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode without gradients, then restore every submodule's own mode."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for module, training in modes:
            module.training = training


def tensor_shapes(value: Any) -> tuple[tuple[int, ...], ...]:
    """Shapes of every tensor in a (nested list/tuple/dict) model output, in order."""
    if isinstance(value, torch.Tensor):
        return (tuple(value.shape),)
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return tuple(shape for item in value for shape in tensor_shapes(item))
    return ()


def propagate_shapes(module: fx.GraphModule, model: nn.Module, example_input: torch.Tensor) -> tuple[tuple[int, ...], ...]:
    """Record every node's output shape (``node.meta['tensor_meta']``); returns the model's output shapes."""
    try:
        with evaluating(model):
            output = ShapeProp(module).propagate(example_input)
    except Exception as exc:
        raise EdgeCompressError(
            f"running the model on an example input of shape {tuple(example_input.shape)} failed "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); pass an input the model accepts"
        ) from None
    return tensor_shapes(output)
