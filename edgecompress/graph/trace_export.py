"""Fallback for submodules torch.fx cannot trace: analyse their torch.export (aten) graph instead.

``trace_model`` turns an fx-untraceable submodule into an opaque leaf. Here each such leaf is
exported with ``torch.export.export(strict=False)`` on random tensors of the shapes the outer
shape pass recorded at its call. Export runs the Python forward on fake tensors, so Python that
depends on shapes (``if x.shape[1] > 8``, loops over ``x.size(1)``) is specialised away, while
control flow on tensor values still fails (the leaf then stays opaque, with both failures noted).

Specialising is only safe while the channel counts the Python reads stay as traced (pruning the
input of ``if x.shape[1] > 8`` could flip the branch). So the forward runs under a torch function
mode that records reads of a channel count (``x.shape``, ``x.size()``, ``x.size(1)``, ``numel``):
the channels of an input read so are kept, and a read of any other tensor's keeps the leaf opaque.

The aten graph is analysed with the rules of rules_aten: first on a scratch context, so an
unsupported op keeps the submodule opaque instead of half-analysed, then for real, with the
submodule's input layouts connected to its input placeholders and its output layouts returned as
the leaf's. Members name the Conv/BatchNorm/Linear modules inside the submodule, so surgery needs
nothing new. The analysis is valid for the traced shapes' branch of the Python code, as fx's is.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import fx, nn
from torch.export import ExportedProgram
from torch.fx import Node
from torch.fx.passes.shape_prop import TensorMetadata
from torch.overrides import TorchFunctionMode

from ..errors import describe
from .context import AnalysisContext
from .index_mapping import Layout
from .rules_aten import OWNER, UnsupportedOp, aten, aten_rule_for
from ..helpers import evaluating, model_device
from .trace import KEPT_WHOLE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportedSubmodule:
    """One call of an fx-untraceable submodule, exported to an aten graph that the channel rules understand."""

    name: str
    program: ExportedProgram
    counted_inputs: frozenset[int]  # positions of the inputs whose channel count the Python forward reads

    def rule(self, ctx: AnalysisContext, node: Node) -> Layout | None:
        """Channel rule of the call: its layouts flow through the aten graph; a tuple output becomes pieces.
        Inputs whose channel count the forward reads keep their channels (a branch on it stays taken)."""
        inputs = [ctx.channels(arg) if ctx.has_channels(arg) else None for arg in node.args]
        outputs = connect(ctx, self.program, inputs)
        for position in self.counted_inputs:
            ctx.block(inputs[position], f"the forward of {self.name!r} reads the channel count of its input {position}")
        if isinstance(node.meta["tensor_meta"], TensorMetadata):
            return outputs[0]
        ctx.pieces[node] = outputs
        return None

    def macs(self) -> dict[str, int]:
        return exported_macs(self.program)


def exported_macs(program: ExportedProgram) -> dict[str, int]:
    """MACs of the convs and linears (of modules) in an exported graph, as ``analyze.layer_macs`` counts them."""
    counted: dict[str, int] = defaultdict(int)
    for node in program.graph.nodes:
        packet = getattr(node.target, "overloadpacket", None)
        if packet not in (aten.conv1d, aten.conv2d, aten.conv3d, aten.convolution, aten.linear) or OWNER not in node.args[1].meta:
            continue
        shape, weight = node.meta["val"].shape, node.args[1].meta["val"]
        positions = math.prod(shape[:-1]) if packet is aten.linear else shape[0] * math.prod(shape[2:])
        counted[node.args[1].meta[OWNER][0]] += weight.numel() * positions
    return dict(counted)


def connect(ctx: AnalysisContext, program: ExportedProgram, inputs: Sequence[Layout | None]) -> list[Layout | None]:
    """Run the aten rules over ``program`` with ``inputs`` as the layouts of its user inputs; returns its output layouts."""
    user_inputs = dict(zip(program.graph_signature.user_inputs, inputs, strict=True))
    for node in program.graph.nodes:
        if node.op == "placeholder":
            if user_inputs.get(node.name) is not None:
                ctx.layouts[node] = user_inputs[node.name]
        elif node.op == "output":
            return [ctx.layouts.get(arg) if isinstance(arg, Node) else None for arg in node.args[0]]
        else:
            layout = aten_rule_for(node)(ctx, node)
            if layout is not None:
                ctx.layouts[node] = layout
    raise UnsupportedOp("the exported graph has no output")


class ShapeReads(TorchFunctionMode):
    """Records which tensors' channel counts Python code reads (``x.shape``, ``x.size()``, ``x.size(1)``,
    ``x.numel()``) while active, with the module whose forward read each; reads inside torch
    functions run below the mode and are not seen."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[torch.Tensor, str]] = []  # (tensor, qualified name of the module reading it)
        self.running: list[str] = []  # the modules whose forward runs, innermost last

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 (torch's protocol)
        result = func(*args, **(kwargs or {}))
        if func in _SHAPE_READS and isinstance(args[0], torch.Tensor) and args[0].dim() >= 2:
            dim = args[1] if len(args) > 1 else (kwargs or {}).get("dim")
            if dim is None or dim % args[0].dim() == 1:
                self.reads.append((args[0], self.running[-1] if self.running else ""))
        return result


_SHAPE_READS = {torch.Tensor.size, torch.Tensor.shape.__get__, torch.Tensor.numel}


@contextmanager
def reading_shapes(module: nn.Module, name: str = "") -> Iterator[tuple[ShapeReads, list[torch.Tensor]]]:
    """Watch shape reads in ``module``'s forward only (not in torch.export's own machinery), naming
    the (sub)module that reads, with ``name`` for ``module`` itself; also yields its inputs."""
    reads, inputs = ShapeReads(), []

    def enter(_: nn.Module, args: tuple) -> None:
        inputs.extend(args)
        reads.__enter__()

    def leave(*_: object) -> None:
        reads.__exit__(None, None, None)

    def running(qualified: str) -> Callable[..., None]:
        return lambda *_: reads.running.append(qualified)

    def done(*_: object) -> None:
        reads.running.pop()

    handles = [module.register_forward_pre_hook(enter)]
    for path, submodule in module.named_modules():
        handles.append(submodule.register_forward_pre_hook(running(_qualified(name, path))))
        handles.append(submodule.register_forward_hook(done, always_call=True))
    handles.append(module.register_forward_hook(leave, always_call=True))
    try:
        yield reads, inputs
    finally:
        for handle in handles:
            handle.remove()


def _counted_inputs(reads: ShapeReads, inputs: list[torch.Tensor]) -> frozenset[int]:
    """Positions of the inputs whose channel count was read; a read of another tensor's is unsupported."""
    positions = set()
    for tensor, _ in reads.reads:
        position = next((k for k, candidate in enumerate(inputs) if candidate is tensor), None)
        if position is None:
            raise UnsupportedOp("its forward reads the channel count of an intermediate tensor")
        positions.add(position)
    return frozenset(positions)


def _example(meta: TensorMetadata, device: torch.device) -> torch.Tensor:
    """A random tensor of the recorded shape (export traces on fake tensors: only shape and dtype matter)."""
    if meta.dtype.is_floating_point:
        return torch.randn(meta.shape, dtype=meta.dtype, generator=torch.Generator().manual_seed(0)).to(device)
    return torch.ones(meta.shape, dtype=meta.dtype, device=device)


def _qualified(prefix: str, path: str) -> str:
    return f"{prefix}.{path}" if prefix and path else prefix or path


def tag_owners(program: ExportedProgram, prefix: str = "") -> None:
    """Name, in ``OWNER``, the module and attribute of every parameter and buffer placeholder, and
    qualify the modules of ``nn_module_stack`` with ``prefix`` (the exported module's own name), so
    members, notes and errors name modules of the whole model."""
    signature = program.graph_signature
    owners = {**signature.inputs_to_parameters, **signature.inputs_to_buffers}
    for placeholder in program.graph.find_nodes(op="placeholder"):
        if placeholder.name in owners:
            path, _, attribute = owners[placeholder.name].rpartition(".")
            placeholder.meta[OWNER] = (_qualified(prefix, path), attribute)
    if prefix:
        for op in program.graph.nodes:
            stack = op.meta.get("nn_module_stack") or {}
            op.meta["nn_module_stack"] = {key: (_qualified(prefix, path), kind) for key, (path, kind) in stack.items()}


def _export(node: Node, modules: dict[str, nn.Module], ignored: frozenset[str]) -> ExportedSubmodule:
    """Export one call of an opaque leaf and check, on a scratch context, that every op has a rule."""
    name = str(node.target)
    if any(ignore == name or ignore.startswith(name + ".") for ignore in ignored):
        raise UnsupportedOp("it contains modules in ignore")
    if node.kwargs or not all(isinstance(arg, Node) and isinstance(arg.meta.get("tensor_meta"), TensorMetadata) for arg in node.args):
        raise UnsupportedOp("it is called with arguments other than tensors")
    device = model_device(modules[name])
    examples = tuple(_example(arg.meta["tensor_meta"], device) for arg in node.args)
    with evaluating(modules[name]) as submodule, reading_shapes(submodule, name) as (reads, inputs):
        program = torch.export.export(submodule, examples, strict=False)
    tag_owners(program, name)
    meta = node.meta["tensor_meta"]
    count = 1 if isinstance(meta, TensorMetadata) else len(meta) if isinstance(meta, (tuple, list)) else -1
    if len(program.graph.output_node().args[0]) != count:
        raise UnsupportedOp("its output is not a tensor or a flat tuple of tensors")
    exported = ExportedSubmodule(name, program, _counted_inputs(reads, inputs))
    exported.rule(AnalysisContext(modules, ignored), node)  # raises on an op without a rule, leaving the real context untouched
    return exported


def export_untraceable(traced: fx.GraphModule, modules: dict[str, nn.Module], opaque: dict[str, str], ignored: frozenset[str]) -> dict[Node, ExportedSubmodule]:
    """Export every call of an fx-untraceable leaf; the leaves analysed leave ``opaque``, the others'
    reasons gain torch.export's failure. Returns the channel fallback of each call node."""
    calls: dict[str, list[Node]] = defaultdict(list)
    for node in traced.graph.find_nodes(op="call_module"):
        if node.target in opaque:
            calls[str(node.target)].append(node)
    found: dict[Node, ExportedSubmodule] = {}
    for name, nodes in calls.items():
        try:
            found.update((node, _export(node, modules, ignored)) for node in nodes)
        except Exception as exc:  # export or analysis failed: the leaf stays opaque, as before
            detail = describe(exc)
            opaque[name] = f"{opaque[name].removesuffix(KEPT_WHOLE)} and torch.export cannot analyse it ({detail}){KEPT_WHOLE}"
            for node in nodes:
                found.pop(node, None)
            continue
        del opaque[name]
        log.info("torch.fx cannot trace %r; its channels are analysed on its torch.export graph", name)
    return found
