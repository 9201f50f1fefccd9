"""The ONNX side of the int8 proof: which nodes carry Q/DQ, written as ``qdq_nodes.json`` beside the engine or bundle.

A node carries Q/DQ when it is a Conv, ConvTranspose, MatMul or Gemm whose data input and weight input both come
from DequantizeLinear: in explicit quantization that is what makes TensorRT run it in int8
(https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/work-quantized-types.html#explicit-quantization).
Beside each, whether the Add consuming its output takes another input without Q/DQ (TensorRT's placement advice:
quantize both inputs of a residual add so the add fuses into the int8 convolution). The whole graph's node order
and op types let :mod:`.int8_proof` map TensorRT's fused layer names (``{ForeignNode[a...b]}`` ranges included).
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from ..artifacts import write_text
from ..errors import EdgeCompressError

SCHEMA = "edgecompress.qdq-nodes/1"
QUANTIZABLE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _node_name(node: onnx.NodeProto) -> str:
    """TensorRT names a layer after its ONNX node (the first output's name when the node has none)."""
    return node.name or node.output[0]


def _adds_after(tensor: str, consumers: dict[str, list[onnx.NodeProto]]) -> list[tuple[onnx.NodeProto, str]]:
    """The Add nodes reading ``tensor`` directly or through one QuantizeLinear -> DequantizeLinear pair, each with
    the tensor it reads."""
    found = [(node, tensor) for node in consumers.get(tensor, []) if node.op_type == "Add"]
    for quantize in (node for node in consumers.get(tensor, []) if node.op_type == "QuantizeLinear"):
        for dequantize in (node for node in consumers.get(quantize.output[0], []) if node.op_type == "DequantizeLinear"):
            found += [(node, dequantize.output[0]) for node in consumers.get(dequantize.output[0], []) if node.op_type == "Add"]
    return found


def qdq_nodes(onnx_path: str | Path) -> dict:
    """The Q/DQ-carrying nodes of ``onnx_path``, its node order and op types (the int8 proof's ONNX input)."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    producers = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def dequantized(tensor: str) -> bool:
        producer = producers.get(tensor)
        return producer is not None and producer.op_type == "DequantizeLinear"

    nodes = []
    for node in graph.node:
        if node.op_type not in QUANTIZABLE_OPS or len(node.input) < 2:
            continue
        if not (dequantized(node.input[0]) and dequantized(node.input[1])):
            continue
        residual = None
        for add, reaching in _adds_after(node.output[0], consumers):
            others = [name for name in add.input if name != reaching]
            if others and not all(dequantized(name) for name in others):
                residual = {"add": _node_name(add), "input": next(name for name in others if not dequantized(name))}
        nodes.append({"name": _node_name(node), "op": node.op_type, "residual_without_qdq": residual})
    return {
        "schema": SCHEMA, "onnx": Path(onnx_path).name, "nodes": nodes,
        "order": [_node_name(node) for node in graph.node], "ops": {_node_name(node): node.op_type for node in graph.node},
    }


def write_qdq_nodes(onnx_path: str | Path, out_path: str | Path) -> Path:
    """Write :func:`qdq_nodes` of ``onnx_path`` as JSON; refuse a graph whose node names are not unique."""
    found = qdq_nodes(onnx_path)
    if len(set(found["order"])) != len(found["order"]):
        raise EdgeCompressError(f"{onnx_path} has nodes with the same name, so TensorRT's layers cannot be matched to "
                                "them for the int8 proof; re-export it (torch.onnx names every node)")
    return write_text(Path(out_path), json.dumps(found, indent=2) + "\n")
