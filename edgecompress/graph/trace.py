"""Tracing with torch.fx and the shape pass, with errors that name the module to fix or ignore.

A top-level forward fx cannot trace raises :class:`UntraceableForward`; the analysis then works on
the whole model's torch.export graph instead (trace_toplevel.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import EdgeCompressError, describe
from ..helpers import evaluating  # noqa: F401  (re-exported: the graph package's callers use it)
from .registry import MODULE_RULES
from .rules_split import piece_count

KEPT_WHOLE = ", so it is kept whole"  # ends the note of a submodule neither torch.fx nor torch.export can analyse


class _PiecesProxy(fx.Proxy):
    """Result of a chunk/split with a literal piece count: ``len`` and ``list`` work (fx alone only
    unpacks ``a, b = x.chunk(2, 1)``, while YOLOv8's C2f writes ``list(x.chunk(2, 1))``)."""

    def __init__(self, node: fx.Node, tracer: fx.Tracer, count: int):
        super().__init__(node, tracer)
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[fx.Proxy]:
        return iter([self[k] for k in range(self.count)])


class PiecesTracer(fx.Tracer):
    """An fx tracer whose chunk/split results with a literal piece count are iterable
    (``list(x.chunk(2, 1))``, as YOLOv8's C2f writes); the quantizer's tracers use it too."""

    def proxy(self, node: fx.Node) -> fx.Proxy:
        count = piece_count(node) if node.op in ("call_function", "call_method") else None
        return _PiecesProxy(node, self, count) if count is not None else super().proxy(node)


class _Tracer(PiecesTracer):
    """Treats ignored modules and modules with a registered channel rule as leaves and remembers the
    innermost module whose forward failed."""

    def __init__(self, ignore: frozenset[str]):
        super().__init__()
        self.ignore = ignore
        self.failed_in: str | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.ignore or any(cls in MODULE_RULES for cls in type(m).__mro__):
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


class UntraceableForward(EdgeCompressError):
    """torch.fx cannot trace the model's own forward; ``detail`` says why (the analysis then tries torch.export)."""

    def __init__(self, detail: str):
        super().__init__(f"torch.fx cannot trace the model's forward ({detail}); make it traceable (no data-dependent control flow on tensors)")
        self.detail = detail


def trace_model(model: nn.Module, ignore: frozenset[str]) -> tuple[fx.GraphModule, dict[str, str]]:
    """Symbolically trace ``model``; ignored modules stay opaque leaves.

    A submodule fx cannot trace becomes an opaque leaf too and tracing starts again, so users need
    not rewrite it; returns the graph and, per such submodule, why it is kept whole. An untraceable
    top-level forward raises :class:`UntraceableForward`.
    """
    opaque: dict[str, str] = {}
    while True:
        tracer = _Tracer(ignore | frozenset(opaque))
        try:
            return fx.GraphModule(model, tracer.trace(model)), opaque
        except Exception as exc:
            detail = describe(exc)
            if not tracer.failed_in or tracer.failed_in in opaque:
                raise UntraceableForward(detail) from None
            opaque[tracer.failed_in] = f"torch.fx cannot trace {tracer.failed_in!r} ({detail}){KEPT_WHOLE}"


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
    with running_example(example_input), evaluating(model):
        output = ShapeProp(module).propagate(example_input)
    return tensor_shapes(output)


@contextmanager
def running_example(example_input: torch.Tensor) -> Iterator[None]:
    """Turn a failure of the model on ``example_input`` into a one-line error."""
    try:
        yield
    except Exception as exc:
        raise EdgeCompressError(
            f"running the model on an example input of shape {tuple(example_input.shape)} failed "
            f"({describe(exc)}); pass an input the model accepts"
        ) from None
