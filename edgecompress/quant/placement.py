"""Where activation quantizers go beyond conv/linear inputs, per deployment backend, placed with torch.fx.

Both backends share these rules (TensorRT's explicit-quantization guide, "Q/DQ layer placement
recommendations", and its QAT toolkits):

- quantize the inputs of weighted layers (Conv, ConvTranspose, Gemm/MatMul): their quantized twins
  (``QuantConv2d``, ``QuantLinear``, any registered one) do it; do not quantize their outputs for
  TensorRT (it fuses the output Q itself);
- one quantizer per tensor: a tensor read by several quantized consumers gets one scale, so the
  graph holds one Q and every consumer reads its DQ;
- the inputs of a ``torch.cat`` share one scale: the concat then commutes with Q/DQ and runs in int8;
- tensors that leave the model (a detector's raw maps, a classifier's logits) stay float, so the
  head's sigmoid and box decoding run in higher precision: a concat whose output no quantized layer
  reads (a detector's box and class maps gathered into one output) keeps float inputs.

``tensorrt``: int8 symmetric, zero point 0. An add gets a quantizer on its residual input (the one
not computed by a conv), so TensorRT fuses conv + add and the add reads int8; an add of two conv
outputs quantizes both. Pooling and upsampling are left alone: TensorRT moves Q/DQ through them.
Splits and concats keep one scale end to end, as NVIDIA's YOLO QAT recipes sync them: a
``chunk``/``split`` whose parts are all quantized gets its input quantized too, and a concat's
output is quantized with its inputs' quantizer, so a C2f/C3k2 block's split, its parts, the
concat gathering them and the conv reading the concat share one scale, and TensorRT fuses the
concat instead of requantizing (the Q/DQ pairs on either side of a split or concat have equal
scales, which TensorRT removes).

``onnxruntime``: what its CPU QDQ fusions need to run QLinearConv/QLinearAdd/QLinearConcat/
QLinearAveragePool/int8 Resize. Every input of an add, concat, pooling or upsampling layer is quantized too, so each conv
output reaches a QuantizeLinear and DQ -> Conv -> Q fuses into QLinearConv. A SiLU (``nn.SiLU``, ``F.silu``)
after a quantized layer quantizes its input, the layer's output (onnxruntime has no fused conv + SiLU: without that Q the conv runs in
float), and is computed as ``x * sigmoid(x)`` with the sigmoid's output quantized on [0, 1] (scale 1/255, a fixed
range: nothing to calibrate) when every reader of its output reads it quantized, so the SiLU runs as QLinearSigmoid
(a lookup table) and QLinearMul, as in onnxruntime's own ``quantize_static`` layout. A split whose parts are all
read quantized (a C2f block's halves) has its input quantized with its parts' scale, so it runs on uint8. All activations are
uint8 (onnxruntime fuses only when a node's quantized inputs and output share one type, and its x86
kernels are uint8 x int8): zero point 0 for tensors calibration saw non-negative (after ReLU/ReLU6,
images in [0, 1]), which makes the ReLU/Clip before the Q redundant so onnxruntime removes it, and an
asymmetric range (zero point from the calibrated min and max, as onnxruntime's quantize_static sets
it) for tensors that go negative. Weights stay int8 per channel. A quantized conv from whose output no quantized
consumer can be reached (a detector's prediction conv, when the caller quantizes it) quantizes its output too, with
a quantizer of its own (``conv.output_quantizer``, switched with the conv's other quantizers): onnxruntime has no
int8 conv with a float output, so without that Q the conv would run in float on dequantized inputs, paying int8's
rounding for no speed. Its readers then run in float on the DQ.

``openvino``: the onnxruntime layout without its SiLU and split rules. OpenVINO's CPU plugin fuses a
SiLU into the int8 conv before it (with the output quantization as a post-op); QuantizeLinear nodes
between them, which onnxruntime needs, make it run the SiLU in float between requantizations instead
(bench/int8_layout_bench.py: a SiLU yolov8n 1.5x slower in OpenVINO in the onnxruntime layout).
"""

from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass
from typing import Callable, Collection

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.graph_module import _USER_PRESERVED_ATTRIBUTES_KEY

from ..errors import EdgeCompressError, describe
from ..graph.trace import PiecesTracer
from .modules import is_quant_module
from .quantizer import TensorQuantizer

ADD_OPS = {operator.add, torch.add, operator.iadd}
CONCAT_OPS = {torch.cat, torch.concat}
RESAMPLE_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Upsample)
RESAMPLE_FUNCTIONS = {F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.interpolate}
SPLIT_METHODS = {"chunk", "split", "tensor_split", "unbind"}
SPLIT_FUNCTIONS = {torch.chunk, torch.split, torch.tensor_split, torch.unbind}


@dataclass(frozen=True)
class Backend:
    """How a backend wants activations quantized."""

    quantize_residual_only: bool  # add: quantize only the input no conv computed (TensorRT fuses the conv one)
    quantize_resampling: bool
    uint8_activations: bool  # uint8 activations (zero point 0, or asymmetric when signed), for x86 U8S8 kernels
    one_scale_through_split: bool  # a split whose parts are all read quantized has its input quantized with their scale
    one_scale_through_concat: bool  # a concat's output shares its inputs' scale (else QLinearConcat requantizes)
    quantize_silu: bool  # a SiLU after a quantized layer quantizes its input, and its sigmoid when its output is read quantized
    quantize_last_conv_outputs: bool  # a quantized conv no quantized consumer is reachable from quantizes its output (QLinearConv)


BACKENDS: dict[str, Backend] = {
    "tensorrt": Backend(quantize_residual_only=True, quantize_resampling=False, uint8_activations=False, one_scale_through_split=True,
                        one_scale_through_concat=True, quantize_silu=False, quantize_last_conv_outputs=False),
    "onnxruntime": Backend(quantize_residual_only=False, quantize_resampling=True, uint8_activations=True, one_scale_through_split=True,
                           one_scale_through_concat=False, quantize_silu=True, quantize_last_conv_outputs=True),
    "openvino": Backend(quantize_residual_only=False, quantize_resampling=True, uint8_activations=True, one_scale_through_split=False,
                        one_scale_through_concat=False, quantize_silu=False, quantize_last_conv_outputs=False),
}


def get_backend(name: str) -> Backend:
    """The :data:`BACKENDS` entry for ``name``, or a user-facing error."""
    if name not in BACKENDS:
        raise EdgeCompressError(f"unknown quantization backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return BACKENDS[name]


class _QuantTracer(PiecesTracer):
    """Keeps quantized layers and quantizers as leaves (fx would otherwise trace into them)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, TensorQuantizer) or is_quant_module(m) or super().is_leaf_module(m, module_qualified_name)


def place_activation_quantizers(model: nn.Module, backend_name: str, float_layers: Collection[str] = ()) -> nn.Module:
    """``model`` with one input quantizer per quantized tensor and the extra quantizers ``backend_name`` needs.

    Changes ``model`` in place (:func:`~edgecompress.quant.quantize_model` passes it a copy).
    ``float_layers`` names quantized layers the caller will put back in float: a SiLU read only by them keeps
    its sigmoid float (its output reaches no QuantizeLinear, so its Mul could not run as QLinearMul).
    Returns ``model`` itself when no node had to be inserted, else a ``torch.fx.GraphModule`` that
    keeps the model's buffers and plain attributes (a detector's ``anchors``, ``strides``,
    ``num_classes``) through deepcopy and save/load. A model fx cannot trace keeps only its conv/linear input
    quantizers, with a warning.
    """
    backend = get_backend(backend_name)
    modules = dict(model.named_modules())
    for module in modules.values():
        if is_quant_module(module):
            module.input_quantizer.uint8 = backend.uint8_activations
    try:
        graph = _trace(model)
    except EdgeCompressError as error:
        warnings.warn(f"{error}; its adds and concats stay float", stacklevel=3)
        return model
    edges = _without_float_concats(_quantized_edges(graph, modules, backend))
    if backend.one_scale_through_split:
        edges += _split_inputs(graph, edges)
    silus = _silus_read_quantized(graph, edges, modules, float_layers)
    last_convs = _last_quantized_convs(graph, edges, modules, float_layers) if backend.quantize_last_conv_outputs else []
    groups = _group_tensors(edges, backend)
    inserted = _assign_quantizers(model, graph, groups, edges, modules, backend)
    for silu in silus:
        _quantize_sigmoid(model, graph, silu)
    for conv in last_convs:
        _quantize_output(modules, graph, conv, backend)
    if not inserted and not silus and not last_convs:
        return model
    graph.lint()
    module = fx.GraphModule(model, graph)
    attributes = {name: value for name, value in vars(model).items() if not name.startswith("_") and not hasattr(module, name)}
    module.meta[_USER_PRESERVED_ATTRIBUTES_KEY] = attributes  # fx re-sets them on deepcopy
    for name, value in attributes.items():
        setattr(module, name, value)
    for name, buffer in model.named_buffers(recurse=False):
        if not hasattr(module, name):
            module.register_buffer(name, buffer)
    return module


def _trace(model: nn.Module) -> fx.Graph:
    try:
        graph = _QuantTracer().trace(model)
    except Exception as exc:  # fx raises many types for untraceable Python
        raise EdgeCompressError(
            f"torch.fx cannot trace {type(model).__name__} to place add/concat quantizers ({describe(exc)}); "
            "remove data-dependent control flow from forward"
        ) from None
    for node in graph.nodes:
        node.type = None  # string annotations (from __future__ import annotations) would make the GraphModule unpicklable
    return graph


# (consumer node, argument path, producer node): the tensor ``producer`` enters ``consumer`` quantized.
Edge = tuple[fx.Node, tuple[int, ...], fx.Node]


def _quantized_edges(graph: fx.Graph, modules: dict[str, nn.Module], backend: Backend) -> list[Edge]:
    edges: list[Edge] = []
    for node in graph.nodes:
        for rule in _EDGE_RULES:
            edges += rule(node, modules, backend)
    return edges


def _is_quant_layer(node: object, modules: dict[str, nn.Module]) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_module" and is_quant_module(modules[node.target])


def _conv_input(node: fx.Node, modules: dict[str, nn.Module], backend: Backend) -> list[Edge]:
    if _is_quant_layer(node, modules) and isinstance(node.args[0], fx.Node):
        return [(node, (0,), node.args[0])]
    return []


def _add_inputs(node: fx.Node, modules: dict[str, nn.Module], backend: Backend) -> list[Edge]:
    if node.op != "call_function" or node.target not in ADD_OPS:
        return []
    inputs = [(i, arg) for i, arg in enumerate(node.args[:2]) if isinstance(arg, fx.Node)]
    if len(inputs) < 2:
        return []  # adding a constant: not a residual
    residual = [(i, arg) for i, arg in inputs if not _is_quant_layer(arg, modules)]
    chosen = residual if backend.quantize_residual_only and len(residual) == 1 else inputs
    return [(node, (i,), arg) for i, arg in chosen]


def _concat_inputs(node: fx.Node, modules: dict[str, nn.Module], backend: Backend) -> list[Edge]:
    if node.op != "call_function" or node.target not in CONCAT_OPS:
        return []
    if not node.args or not isinstance(node.args[0], (list, tuple)):
        raise EdgeCompressError(f"cannot quantize the inputs of {node.name}: pass torch.cat a list of tensors as its first argument")
    return [(node, (0, i), arg) for i, arg in enumerate(node.args[0]) if isinstance(arg, fx.Node)]


def _resample_input(node: fx.Node, modules: dict[str, nn.Module], backend: Backend) -> list[Edge]:
    is_resample = (node.op == "call_module" and isinstance(modules[node.target], RESAMPLE_MODULES)) or (
        node.op == "call_function" and node.target in RESAMPLE_FUNCTIONS
    )
    if backend.quantize_resampling and is_resample and node.args and isinstance(node.args[0], fx.Node):
        return [(node, (0,), node.args[0])]
    return []


def _silu_input(node: fx.Node, modules: dict[str, nn.Module], backend: Backend) -> list[Edge]:
    if backend.quantize_silu and _is_silu(node, modules) and _is_quant_layer(_through_identities(node.args[0], modules), modules):
        return [(node, (0,), node.args[0])]
    return []


def _through_identities(node: object, modules: dict[str, nn.Module]) -> object:
    """The node computing ``node``'s value, past ``nn.Identity`` layers (a BatchNorm folded into its conv)."""
    while isinstance(node, fx.Node) and node.op == "call_module" and isinstance(modules[node.target], nn.Identity):
        node = node.args[0]
    return node


def _is_silu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    is_module = node.op == "call_module" and isinstance(modules[node.target], nn.SiLU)
    return is_module or (node.op == "call_function" and node.target is F.silu)


_EDGE_RULES: tuple[Callable[[fx.Node, dict[str, nn.Module], Backend], list[Edge]], ...] = (
    _conv_input, _add_inputs, _concat_inputs, _resample_input, _silu_input,
)


def _without_float_concats(edges: list[Edge]) -> list[Edge]:
    """``edges`` less the inputs of concats whose output no quantized consumer reads (they stay float, like the
    detector's output maps): quantizing them would only round tensors that leave the model or feed float ops."""
    while True:
        read = {producer for _, _, producer in edges}
        kept = [edge for edge in edges if not (_is_concat_input(edge) and edge[0] not in read)]
        if len(kept) == len(edges):
            return edges
        edges = kept


def _is_concat_input(edge: Edge) -> bool:
    return len(edge[1]) == 2  # only concat edges address an element of a list argument


def _split_inputs(graph: fx.Graph, edges: list[Edge]) -> list[Edge]:
    """An edge onto the input of every chunk/split whose parts are read only quantized (the halves of a C2f block)."""
    quantized_reads: dict[fx.Node, set[fx.Node]] = {}
    for consumer, _, producer in edges:
        quantized_reads.setdefault(producer, set()).add(consumer)
    found = []
    for node in graph.nodes:
        parts = _split_parts(node)
        if parts and all(set(part.users) <= quantized_reads.get(part, set()) for part in parts):
            found.append((node, (0,), node.args[0]))
    return found


def _silus_read_quantized(
    graph: fx.Graph, edges: list[Edge], modules: dict[str, nn.Module], float_layers: Collection[str]
) -> list[fx.Node]:
    """The SiLUs, in graph order, whose input is quantized and whose output every reader reads quantized (``float_layers`` read float)."""
    quantized_reads: dict[fx.Node, set[fx.Node]] = {}
    for consumer, _, producer in edges:
        if not (_is_quant_layer(consumer, modules) and consumer.target in float_layers):
            quantized_reads.setdefault(producer, set()).add(consumer)
    quantized_inputs = {consumer for consumer, _, _ in edges if _is_silu(consumer, modules)}
    return [node for node in graph.nodes
            if node in quantized_inputs and node.users and set(node.users) <= quantized_reads.get(node, set())]


def _quantize_sigmoid(model: nn.Module, graph: fx.Graph, silu: fx.Node) -> None:
    """Replace ``silu`` by ``x * q(sigmoid(x))``, ``q`` a uint8 quantizer with the sigmoid's fixed range [0, 1]."""
    name = f"{silu.name}_sigmoid_quantizer"
    if hasattr(model, name):
        raise EdgeCompressError(f"the model already has an attribute {name!r}; rename it so a quantizer can be placed there")
    model.add_module(name, TensorQuantizer(uint8=True, fixed_amax=1.0))
    x = silu.args[0]
    with graph.inserting_before(silu):
        sigmoid = graph.call_module(name, (graph.call_function(torch.sigmoid, (x,)),))
        product = graph.call_function(operator.mul, (x, sigmoid))
    silu.replace_all_uses_with(product)
    graph.erase_node(silu)


def _last_quantized_convs(
    graph: fx.Graph, edges: list[Edge], modules: dict[str, nn.Module], float_layers: Collection[str]
) -> list[fx.Node]:
    """The quantized convs (``float_layers`` aside) from whose output no quantized consumer can be reached."""
    quantized_consumers = {consumer for consumer, _, _ in edges}
    feeds_quantized: set[fx.Node] = set()  # nodes whose output reaches a quantized consumer, found in one backward pass
    for node in reversed(graph.nodes):
        if any(user in quantized_consumers or user in feeds_quantized for user in node.users):
            feeds_quantized.add(node)
    return [node for node in graph.nodes
            if _is_quant_layer(node, modules) and isinstance(modules[node.target], nn.Conv2d) and node.target not in float_layers
            and node not in feeds_quantized]


def _quantize_output(modules: dict[str, nn.Module], graph: fx.Graph, conv: fx.Node, backend: Backend) -> None:
    """Every reader of ``conv`` reads its output through ``conv.output_quantizer``, a quantizer of its own."""
    module = modules[conv.target]
    if hasattr(module, "output_quantizer"):
        raise EdgeCompressError(f"{conv.target} already has an attribute 'output_quantizer'; rename it so a quantizer can be placed there")
    module.output_quantizer = TensorQuantizer(uint8=backend.uint8_activations)
    readers = list(conv.users)
    with graph.inserting_after(conv):
        quantized = graph.call_module(f"{conv.target}.output_quantizer", (conv,))
    for reader in readers:
        reader.replace_input_with(conv, quantized)


def _split_parts(node: fx.Node) -> list[fx.Node]:
    """The indexing nodes reading a chunk/split node's parts, or [] when ``node`` is not a split or is read whole."""
    is_split = (node.op == "call_method" and node.target in SPLIT_METHODS) or (node.op == "call_function" and node.target in SPLIT_FUNCTIONS)
    if not is_split or not node.args or not isinstance(node.args[0], fx.Node) or not node.users:
        return []
    parts = list(node.users)
    return parts if all(part.op == "call_function" and part.target is operator.getitem for part in parts) else []


def _group_tensors(edges: list[Edge], backend: Backend) -> dict[fx.Node, fx.Node]:
    """Union-find over producers: the inputs of one concat share a group (and so a scale); maps producer -> root.

    The backend may also tie a concat's output to its inputs, and a split's input (quantized by
    :func:`_split_inputs`) to its parts.
    """
    parent: dict[fx.Node, fx.Node] = {producer: producer for _, _, producer in edges}

    def root(node: fx.Node) -> fx.Node:
        while parent[node] is not node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    by_concat: dict[fx.Node, list[fx.Node]] = {}
    for edge in edges:
        if _is_concat_input(edge):
            by_concat.setdefault(edge[0], []).append(edge[2])
    tied = list(by_concat.values())
    if backend.one_scale_through_concat:
        tied += [[concat, *producers] for concat, producers in by_concat.items() if concat in parent]
    if backend.one_scale_through_split:
        tied += [[producer, *(part for part in _split_parts(consumer) if part in parent)]
                 for consumer, _, producer in edges if _split_parts(consumer)]
    for producers in tied:
        for other in producers[1:]:
            parent[root(other)] = root(producers[0])
    return {producer: root(producer) for producer in parent}


def _assign_quantizers(
    model: nn.Module, graph: fx.Graph, groups: dict[fx.Node, fx.Node], edges: list[Edge], modules: dict[str, nn.Module], backend: Backend
) -> bool:
    """One quantizer per group, called once per producer in the graph; returns whether nodes were inserted.

    A tensor read only by one quantized layer keeps that layer's own input quantizer. Otherwise the
    quantizer becomes a graph node whose output every consumer reads (a quantized layer's own input
    quantizer turns into ``nn.Identity``), so the ONNX graph holds exactly one Q per tensor, as
    onnxruntime's fusions need and TensorRT recommends.
    """
    by_group: dict[fx.Node, list[Edge]] = {}
    for edge in edges:
        by_group.setdefault(groups[edge[2]], []).append(edge)
    inserted = False
    for group, group_edges in by_group.items():
        if len(group_edges) == 1 and _is_quant_layer(group_edges[0][0], modules):
            continue
        name = f"{group.name}_quantizer"
        if hasattr(model, name):
            raise EdgeCompressError(f"the model already has an attribute {name!r}; rename it so a quantizer can be placed there")
        model.add_module(name, TensorQuantizer(uint8=backend.uint8_activations))
        quantized: dict[fx.Node, fx.Node] = {}
        for consumer, path, producer in group_edges:
            if producer not in quantized:
                with graph.inserting_after(producer):
                    quantized[producer] = graph.call_module(name, (producer,))
            if _is_quant_layer(consumer, modules):
                modules[consumer.target].input_quantizer = nn.Identity()
            _replace_argument(consumer, path, quantized[producer])
        inserted = True
    return inserted


def _replace_argument(node: fx.Node, path: tuple[int, ...], new: fx.Node) -> None:
    args = list(node.args)
    if len(path) == 1:
        args[path[0]] = new
    else:
        inner = list(args[path[0]])
        inner[path[1]] = new
        args[path[0]] = type(node.args[path[0]])(inner)
    node.args = tuple(args)
