"""The rules of the ONNX lint (:mod:`edgecompress.engine.lint`): one small function per TensorRT rule, in :data:`RULES`.

Sources: TensorRT developer guide, "Explicit Quantization" and "Q/DQ Layer-Placement Recommendations"
(https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/quantized-types-explicit-quantization.html):
int8 only, zero point 0 (symmetric), constant scales, weights per output channel; quantize every
input of a weighted op and the residual input of an Add. Which ops each TensorRT version's ONNX
parser imports: :mod:`edgecompress.engine.onnx_ops` (onnx-tensorrt ``docs/operators.md`` per release).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import onnx
from onnx import numpy_helper

from .onnx_ops import DEFAULT_DOMAINS, LOCAL_FUNCTIONS_SINCE, PLUGIN_LIBRARY_SUFFIX, first_release_with, supported_ops
from .target import Target, tensorrt_version

Severity = Literal["error", "warning", "info"]
SEVERITY_ORDER: dict[str, int] = {"error": 0, "warning": 1, "info": 2}

WEIGHTED_OPS = {"Conv": 0, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}  # op -> axis of the weight's output channels
# Ops TensorRT runs in floating point only: a DQ feeding them is an int8 -> float reformat with rounding error.
FLOAT_ONLY_OPS = {"Softmax", "LayerNormalization", "Exp", "Log", "Div", "Pow", "Sqrt", "Reciprocal", "Erf", "TopK", "NonMaxSuppression"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
# Ops that only move or select values: what they output is on their input's int8 grid.
DATA_MOVEMENT_OPS = {"Concat", "Split", "Slice", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Gather", "MaxPool", "Resize"}


@dataclass(frozen=True)
class Finding:
    """One problem in the graph: how bad, where, what and how to fix it."""

    severity: Severity
    rule: str
    node: str
    op: str
    message: str
    fix: str


class Graph:
    """Index of an ONNX graph: producers, consumers and constant values by tensor name."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.nodes = list(model.graph.node)
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
        for node in self.nodes:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.producer = {output: node for node in self.nodes for output in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                self.consumers[name].append(node)
        self.quantized = any(node.op_type in QDQ_OPS for node in self.nodes)
        self.functions = {(function.domain, function.name) for function in model.functions}

    def every_node(self) -> list[onnx.NodeProto]:
        """Every node the parser imports: the graph's, those of If/Loop/Scan bodies and of model-local functions."""
        found: list[onnx.NodeProto] = []
        pending = [self.nodes, *(list(function.node) for function in self.model.functions)]
        while pending:
            for node in pending.pop():
                found.append(node)
                for attribute in node.attribute:
                    if attribute.type == onnx.AttributeProto.GRAPH:
                        pending.append(list(attribute.g.node))
                    pending += [list(body.node) for body in attribute.graphs]
        return found

    def dq_of(self, tensor: str) -> onnx.NodeProto | None:
        node = self.producer.get(tensor)
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    def is_weight_dq(self, dq: onnx.NodeProto) -> bool:
        """A DQ of a constant (an int8 initializer, or Q of a float initializer)."""
        source = self.producer.get(dq.input[0])
        return dq.input[0] in self.constants or (source is not None and source.op_type == "QuantizeLinear" and source.input[0] in self.constants)

    def weight_input(self, node: onnx.NodeProto) -> str | None:
        """The constant weight input of a weighted op (through a DQ), or None for activation x activation ops."""
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
            return None
        dq = self.dq_of(node.input[1])
        return node.input[1] if node.input[1] in self.constants or (dq is not None and self.is_weight_dq(dq)) else None


def label(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]


Rule = Callable[[Graph, Target], list[Finding]]


@dataclass(frozen=True)
class LintRule:
    check: Rule
    tensorrt_only: bool


def check_opset(graph: Graph, target: Target) -> list[Finding]:
    limit = target.max_onnx_opset or graph.opset
    if graph.opset <= limit:
        return []
    return [Finding("error", "opset", "<model>", "-", f"opset {graph.opset} is newer than TensorRT {target.tensorrt} parses (max {limit})",
                    f"re-export with export_onnx(..., opset={limit})")]


def check_operators(graph: Graph, target: Target) -> list[Finding]:
    """Every node whose op the target's ONNX parser has no importer for: a standard op it lacks, or a custom op."""
    trt = tensorrt_version(target.tensorrt)
    supported = supported_ops(trt)
    findings = [_operator_finding(graph, node, target, trt) for node in graph.every_node()
                if node.domain not in DEFAULT_DOMAINS or node.op_type not in supported]
    return [finding for finding in findings if finding is not None]


def _operator_finding(graph: Graph, node: onnx.NodeProto, target: Target, trt: tuple[int, int]) -> Finding | None:
    op, where = node.op_type, label(node)
    if (node.domain, op) in graph.functions:  # a model-local function: the parser inlines it (its body is checked too)
        if trt >= LOCAL_FUNCTIONS_SINCE:
            return None
        return Finding("error", "custom-op", where, op, f"{op} is a model-local function; TensorRT parses those from 9.0, the target has {target.tensorrt}",
                       "inline the functions before export (onnx.inliner.inline_local_functions) or pick a newer target")
    if op.endswith(PLUGIN_LIBRARY_SUFFIX):
        return Finding("info", "custom-op", where, op, f"{op} is a plugin of TensorRT's plugin library, not an ONNX op",
                       f"fine where TensorRT {target.tensorrt} ships this plugin (trtexec loads the library)")
    if node.domain not in DEFAULT_DOMAINS:
        return Finding("error", "custom-op", where, op, f"custom op (domain {node.domain!r}): TensorRT's ONNX parser imports standard ONNX ops only",
                       f"load a TensorRT plugin named {op} when building, or export the model without custom ops")
    since = first_release_with(op)
    if since is None:
        return Finding("error", "unsupported-op", where, op, f"TensorRT {target.tensorrt}'s ONNX parser has no {op} importer",
                       f"replace {op} by supported ops or move it into post-processing (or write a TensorRT plugin named {op})")
    return Finding("error", "unsupported-op", where, op, f"{op} needs TensorRT {since[0]}.{since[1]}+, the target has {target.tensorrt}",
                   "move the op out of the model (e.g. NMS into post-processing) or pick a newer target")


def check_int8_support(graph: Graph, target: Target) -> list[Finding]:
    if not graph.quantized or target.int8:
        return []
    return [Finding("error", "no-int8", "<model>", "-", f"{target.name} ({target.gpu_arch}) has no int8 kernels, so a Q/DQ network does not build",
                    "deploy the float/fp16 export to this target, or pick an int8 target")]


def check_float_model(graph: Graph, target: Target) -> list[Finding]:
    """A float graph for an int8 target builds, but in float: say so instead of a bare ok."""
    if graph.quantized or not target.int8 or target.precision != "int8":
        return []
    if not target.tensorrt:
        runs = "onnxruntime runs it in fp32"
    elif target.strongly_typed:
        runs = f"TensorRT {target.tensorrt} (strongly typed) builds it in the ONNX's own float types"
    else:
        runs = f"TensorRT {target.tensorrt} builds it in fp32, or fp16 with --fp16"
    return [Finding("info", "no-qdq", "<model>", "-", f"no Q/DQ in this model: {runs}, not int8",
                    "export the int8 model (edgecompress quantize, or a build's export/int8.onnx) for int8 speed; fine if float is meant")]


def check_zero_points(graph: Graph, target: Target) -> list[Finding]:
    findings = []
    for node in graph.nodes:
        if node.op_type not in QDQ_OPS:
            continue
        zero_point = graph.constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zero_point is not None and np.any(zero_point):
            findings.append(Finding("error", "zero-point", label(node), node.op_type, "non-zero zero point: TensorRT supports symmetric quantization only",
                                    "quantize symmetrically (zero point 0), e.g. quantize(..., backend='tensorrt')"))
        dtype = _quantized_dtype(graph, node, zero_point)
        if dtype is not None and dtype != np.int8:
            findings.append(Finding("error", "int8-type", label(node), node.op_type, f"{np.dtype(dtype).name} Q/DQ: TensorRT's int8 path needs signed int8",
                                    "export with int8 zero points (backend='tensorrt')"))
    return findings


def _quantized_dtype(graph: Graph, node: onnx.NodeProto, zero_point: np.ndarray | None) -> np.dtype | None:
    if zero_point is not None:
        return zero_point.dtype
    if node.op_type == "QuantizeLinear":
        return np.dtype(np.uint8)  # ONNX: QuantizeLinear without a zero point outputs uint8
    value = graph.constants.get(node.input[0])
    return value.dtype if value is not None else None


def check_constant_scales(graph: Graph, target: Target) -> list[Finding]:
    return [
        Finding("error", "dynamic-scale", label(node), node.op_type, "the scale is computed at run time; TensorRT needs constant Q/DQ scales",
                "calibrate before export so scales are initializers")
        for node in graph.nodes if node.op_type in QDQ_OPS and node.input[1] not in graph.constants
    ]


def check_weighted_ops(graph: Graph, target: Target) -> list[Finding]:
    """Weighted ops must have both input and weight quantized; weights per output channel on the right axis."""
    if not graph.quantized:
        return []
    findings = []
    for node in graph.nodes:
        weight = graph.weight_input(node)
        if weight is None:
            continue
        input_dq, weight_dq = graph.dq_of(node.input[0]), graph.dq_of(weight)
        if input_dq is None and weight_dq is None:
            findings.append(Finding("info", "float-layer", label(node), node.op_type, "not quantized: runs in fp16/fp32 inside the int8 network",
                                    "fine for a layer kept in float on purpose (sensitivity); otherwise quantize it"))
        elif input_dq is None or weight_dq is None:
            missing = "input" if input_dq is None else "weight"
            findings.append(Finding("warning", "partial-quant", label(node), node.op_type, f"the {missing} is not quantized, so TensorRT runs this layer in float",
                                    f"add a Q/DQ pair on the {missing} (quantize both inputs of weighted ops)"))
        if weight_dq is not None:
            findings += _weight_scale_findings(graph, node, weight_dq)
    return findings


def _weight_scale_findings(graph: Graph, node: onnx.NodeProto, dq: onnx.NodeProto) -> list[Finding]:
    scale = graph.constants.get(dq.input[1])
    if scale is None:
        return []
    if scale.size == 1:
        return [Finding("warning", "per-tensor-weight", label(node), node.op_type, "one weight scale for all output channels loses accuracy",
                        "quantize weights per output channel")]
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    expected = WEIGHTED_OPS[node.op_type]
    if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
        expected = 0  # B is [N, K]: output channels first (torch.nn.Linear exports this way)
    if axis != expected:
        return [Finding("error", "weight-axis", label(node), node.op_type, f"weight scales on axis {axis}; {node.op_type} output channels are axis {expected}",
                        f"quantize the weight per channel along axis {expected}")]
    return []


def check_float_consumers(graph: Graph, target: Target) -> list[Finding]:
    findings = []
    for node in graph.nodes:
        if node.op_type != "DequantizeLinear" or graph.is_weight_dq(node):
            continue
        for consumer in graph.consumers[node.output[0]]:
            if consumer.op_type in FLOAT_ONLY_OPS:
                findings.append(Finding("warning", "reformat", label(consumer), consumer.op_type,
                                        f"Q/DQ before {consumer.op_type}, which TensorRT runs in float: an int8 -> float reformat and extra rounding",
                                        f"remove the Q/DQ pair on the input of {consumer.op_type}"))
    return findings


def check_residual_adds(graph: Graph, target: Target) -> list[Finding]:
    findings = []
    for node in graph.nodes:
        if node.op_type != "Add" or len(node.input) != 2 or any(name in graph.constants for name in node.input):
            continue
        quantized = [graph.dq_of(name) is not None for name in node.input]
        if any(quantized) and not all(quantized):
            findings.append(Finding("warning", "residual-add", label(node), node.op_type, "only one input is quantized, so TensorRT cannot fuse the Add into the int8 conv",
                                    "quantize the residual input too (Q/DQ on both Add inputs)"))
    return findings


def check_concat_scales(graph: Graph, target: Target) -> list[Finding]:
    """A Concat runs in int8 without requantizing when its inputs and the Q on its output share one scale."""
    findings = []
    for node in graph.nodes:
        if node.op_type != "Concat":
            continue
        dqs = [graph.dq_of(name) for name in node.input]
        if not any(dqs):
            continue
        scales = {_first_scale(graph, dq) for dq in dqs if dq is not None}
        output_scales = {_first_scale(graph, q) for q in graph.consumers[node.output[0]] if q.op_type == "QuantizeLinear"}
        if not all(dqs) or len(scales) > 1:
            findings.append(Finding("warning", "concat-scales", label(node), node.op_type, "Concat inputs are not all quantized with one scale: TensorRT requantizes or reformats",
                                    "quantize every Concat input with a shared scale"))
        elif output_scales - scales:
            findings.append(Finding("warning", "concat-scales", label(node), node.op_type, "the Concat output is quantized with another scale than its inputs: TensorRT requantizes after it",
                                    "quantize the Concat output with its inputs' scale (one quantizer for both, as quantize_model(backend='tensorrt') places it)"))
    return findings


def _first_scale(graph: Graph, node: onnx.NodeProto) -> float:
    return float(np.asarray(graph.constants.get(node.input[1], np.nan)).ravel()[0])


def check_quantized_outputs(graph: Graph, target: Target) -> list[Finding]:
    """Outputs read from a DequantizeLinear (directly or through a Concat, Reshape...) are rounded to int8 levels."""
    findings = []
    for output in graph.model.graph.output:
        dq = _dequantized_source(graph, output.name)
        if dq is not None:
            findings.append(Finding("warning", "quantized-output", output.name, "DequantizeLinear", f"output {output.name} is rounded to int8 levels ({label(dq)} feeds it)",
                                    "keep the tensors that leave the model float: no Q/DQ after the last layers (quantize_model keeps a model's prediction_layers() float)"))
    return findings


def _dequantized_source(graph: Graph, tensor: str) -> onnx.NodeProto | None:
    pending, seen = [tensor], set()
    while pending:
        name = pending.pop()
        node = graph.producer.get(name)
        if node is None or name in seen:
            continue
        seen.add(name)
        if node.op_type == "DequantizeLinear" and not graph.is_weight_dq(node):
            return node
        if node.op_type in DATA_MOVEMENT_OPS:
            pending += [node.input[0]] if node.op_type != "Concat" else list(node.input)
    return None


RULES: dict[str, LintRule] = {
    "opset": LintRule(check_opset, tensorrt_only=True),
    "unsupported-op": LintRule(check_operators, tensorrt_only=True),
    "no-int8": LintRule(check_int8_support, tensorrt_only=False),
    "no-qdq": LintRule(check_float_model, tensorrt_only=False),
    "zero-point": LintRule(check_zero_points, tensorrt_only=True),
    "dynamic-scale": LintRule(check_constant_scales, tensorrt_only=True),
    "weighted-ops": LintRule(check_weighted_ops, tensorrt_only=False),
    "reformat": LintRule(check_float_consumers, tensorrt_only=True),
    "residual-add": LintRule(check_residual_adds, tensorrt_only=True),
    "concat-scales": LintRule(check_concat_scales, tensorrt_only=True),
    "quantized-output": LintRule(check_quantized_outputs, tensorrt_only=False),
}
