"""Prove from a built engine's layer information that every layer carrying Q/DQ in the ONNX ran in int8.

A Q/DQ ONNX only *allows* int8: TensorRT still picks an fp16/fp32 kernel for a quantized conv when a reformat sits
in front of it, a float-only op feeds it, a residual Add lacks Q/DQ on one input, the DLA hands it back to the GPU, or
no int8 tactic suits its shape. The engine's layer information says what it actually chose; this reads it.

Inputs:

- the engine inspector's JSON: ``trtexec --profilingVerbosity=detailed --exportLayerInfo=layers.json`` or
  ``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)`` of an engine built with
  ``ProfilingVerbosity.DETAILED`` (https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/engine-tools.html).
  ``{"Layers": [...], "Bindings": [...]}`` (TensorRT 11: ``"I/O Tensors"`` instead of ``Bindings``); a layer is
  ``{"Name", "LayerType", "ParameterType", "Inputs": [{"Name", "Dimensions", "Format/Datatype"}], "Outputs", ...,
  "Weights": {"Type", "Count"}, "Metadata"}``. ``Format/Datatype`` reads e.g. "Row major linear FP32", "Thirty-two
  wide channel vectorized row major Int8 format", "Half"; TensorRT 11 splits it into ``Format`` and ``DataType``.
  From 8.6 ``Metadata`` names the ONNX nodes a layer was made of, ``[ONNX Layer: /model.0/conv/Conv]`` separated by
  \\x1e or \\x1f; before that only the layer ``Name`` does: fused names join node names with `` + ``, pointwise
  fusions read ``PWN(a, b)``, Myelin/DLA subgraphs ``{ForeignNode[first...last]}``. As NVIDIA's trt-engine-explorer
  (tools/experimental/trt-engine-explorer in https://github.com/NVIDIA/TensorRT) reads it, a layer's precision is its
  first input's data type; a layer with int8 weights and int8 input computes in int8.
- the Q/DQ nodes of the ONNX (``qdq_nodes.json``, written by edgecompress on the host with the onnx package): every
  Conv/ConvTranspose/MatMul/Gemm whose data and weight inputs both come from DequantizeLinear, with the graph's node
  order and op types.

Standard library only and Python 3.6 syntax (the bundle runs it on a Jetson Nano's JetPack 4 as well)::

    python3 int8_proof.py --layers layers.json --qdq qdq_nodes.json [--dla] [--out int8_proof.json]

Prints every layer's precision; exits 1 with one ``NOT INT8`` line per offending layer (name and likely cause),
2 when the inputs cannot be read.
"""

import argparse
import json
import os
import re
import sys
import tempfile

SCHEMA = "edgecompress.int8-proof/1"

# Data-type words of a tensor description -> short names (trt-engine-explorer's table, plus 10.x/11.x kgen names).
DATATYPE_WORDS = {
    "int8": "int8", "fp16": "fp16", "half": "fp16", "fp32": "fp32", "float": "fp32", "bfloat16": "bf16",
    "bf16": "bf16", "fp8": "fp8", "int4": "int4", "fp4": "fp4", "int32": "int32", "int64": "int64", "uint8": "uint8",
    "bool": "bool", "double": "fp64",
}
# Pointwise ops TensorRT fuses into an int8 convolution's epilogue (PWN / activation fusion, and the Q/DQ themselves):
# fused with anything else, the layer may be held to float.
INT8_FUSABLE_OPS = {
    "QuantizeLinear", "DequantizeLinear", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid",
    "HardSwish", "Mul", "Add", "Sub", "Div", "BatchNormalization", "Identity", "Elu", "Selu", "Softplus", "PRelu",
    "MaxPool", "Conv", "ConvTranspose", "MatMul", "Gemm",
}
_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]\x1e\x1f]*)\]")
_FOREIGN = re.compile(r"^\{ForeignNode\[(.*)\]\}$")
_OTHER_PROFILE = re.compile(r"\[profile [1-9][0-9]*\]")


class ProofInputError(Exception):
    """The layer information or the Q/DQ list cannot be used; the message says how to get a usable one."""


def tensor_datatype(tensor):
    """``int8``/``fp16``/``fp32``/... of one layer input or output, None when its description names no type."""
    text = " ".join(str(tensor.get(key) or "") for key in ("Format/Datatype", "DataType", "Datatype", "Format"))
    for word in re.findall(r"[A-Za-z0-9]+", text.replace(".", " ")):
        if word.lower() in DATATYPE_WORDS:
            return DATATYPE_WORDS[word.lower()]
    return None


def weights_datatype(layer):
    """Data type of the layer's weights (``Weights`` or a fused sub-layer's ``ConvWeights``), None without any."""
    for key in sorted(layer):
        value = layer[key]
        if key.endswith("Weights") and isinstance(value, dict) and value.get("Type"):
            return DATATYPE_WORDS.get(str(value["Type"]).lower())
    return None


def is_foreign(layer):
    """A Myelin or DLA subgraph: one layer for many nodes, its inner precisions not listed."""
    return bool(_FOREIGN.match(str(layer.get("Name", ""))))


def layer_precision(layer):
    """What the layer computes in: int8 when its first input is int8 and its weights (if any) are int8.

    A fused subgraph (``{ForeignNode[...]}``) shows only its boundary tensors, so it counts as int8 only when every
    input and output is int8; otherwise its first non-int8 boundary type.
    """
    if is_foreign(layer):
        kinds = [tensor_datatype(t) for t in (layer.get("Inputs") or []) + (layer.get("Outputs") or [])]
        return next((kind or "unknown" for kind in kinds if kind != "int8"), "int8" if kinds else "unknown")
    inputs = layer.get("Inputs") or []
    data = tensor_datatype(inputs[0]) if inputs else None
    weights = weights_datatype(layer)
    if data is None:
        outputs = layer.get("Outputs") or []
        data = weights or (tensor_datatype(outputs[0]) if outputs else None)
    if data == "int8" and weights not in (None, "int8"):
        return weights
    return data or "unknown"


def is_reformat(layer):
    kinds = (str(layer.get("LayerType", "")), str(layer.get("ParameterType", "")))
    return "Reformat" in kinds or str(layer.get("Name", "")).startswith("Reformatting CopyNode")


def is_dla(layer):
    kinds = " ".join(str(layer.get(key, "")) for key in ("LayerType", "ParameterType", "Origin"))
    return "DLA" in kinds.upper()


def split_top_level(text, separator):
    """Split on ``separator`` outside parentheses/brackets (PWN(a, b) and ForeignNode[...] nest)."""
    parts, depth, start, index = [], 0, 0, 0
    while index < len(text):
        char = text[index]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0 and text.startswith(separator, index):
            parts.append(text[start:index])
            start = index + len(separator)
            index = start
            continue
        index += 1
    parts.append(text[start:])
    return [part.strip() for part in parts if part.strip()]


def name_tokens(name):
    """Node names a fused layer name is made of: ``a + PWN(b, PWN(c, d))`` -> a, b, c, d."""
    tokens = []
    for part in split_top_level(name, " + "):
        inner = re.match(r"^PWN\((.*)\)$", part)
        if inner:
            for argument in split_top_level(inner.group(1), ", "):
                tokens.extend(name_tokens(argument))
        else:
            tokens.append(re.sub(r"_clone_\d+$", "", part))
    return tokens


def onnx_nodes_of(layer, order):
    """The ONNX nodes (names in ``order``) a TensorRT layer was made of, from its Metadata or else its name."""
    known = set(order)
    meta = str(layer.get("Metadata") or "")
    named = [name for name in _ONNX_LAYER.findall(meta) if name in known]
    if named:
        return named
    name = str(layer.get("Name", ""))
    foreign = _FOREIGN.match(name)
    if foreign:
        ends = foreign.group(1).split("...")
        if len(ends) == 2 and ends[0] in known and ends[1] in known:
            first, last = order.index(ends[0]), order.index(ends[1])
            return order[min(first, last):max(first, last) + 1]
        return [end for end in ends if end in known]
    if is_reformat(layer):
        return []
    return [token for token in name_tokens(name) if token in known]


def _read_json(path, what):
    """The JSON in ``path``, or a ProofInputError naming ``what`` it should hold."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise ProofInputError("cannot read the {} {}: {}".format(what, path, exc))


def load_layers(path):
    """The usable (first optimisation profile) layers of a layer-information file."""
    info = _read_json(path, "layer information")
    layers = info.get("Layers") if isinstance(info, dict) else None
    if not isinstance(layers, list) or not layers:
        raise ProofInputError("{} has no \"Layers\" list; write it with trtexec --exportLayerInfo or "
                              "IEngineInspector.get_engine_information(JSON)".format(path))
    if not all(isinstance(layer, dict) for layer in layers):
        raise ProofInputError("{} holds layer names only: rebuild the engine with --profilingVerbosity=detailed "
                              "(ProfilingVerbosity.DETAILED) so each layer's data types are recorded".format(path))
    return [layer for layer in layers if not _OTHER_PROFILE.search(str(layer.get("Name", "")))]


def load_qdq(path):
    qdq = _read_json(path, "Q/DQ node list")
    if not isinstance(qdq, dict) or not isinstance(qdq.get("nodes"), list) or not isinstance(qdq.get("order"), list):
        raise ProofInputError("{} is not an edgecompress Q/DQ node list (needs \"nodes\" and \"order\")".format(path))
    return qdq


def likely_causes(layer, members, node, precision, producers, ops, dla):
    """Why ``layer`` (made of ONNX nodes ``members``, among them the Q/DQ node ``node``) did not compute in int8:
    every cause the files show."""
    causes = []
    if is_foreign(layer):
        causes.append("it is fused into the subgraph '{}' ({}), whose layer information shows only its boundary "
                      "tensors, and they are not all int8".format(layer.get("Name"), layer.get("LayerType")))
    for tensor in (layer.get("Inputs") or [])[:1]:
        kind = tensor_datatype(tensor)
        producer = producers.get(tensor.get("Name"))
        if kind == "int8":
            continue
        if producer is not None and is_reformat(producer):
            causes.append("a reformat layer before it ('{}') hands it {} data: the tensor is not kept in int8 "
                          "between the layers".format(producer.get("Name"), kind or "non-int8"))
        elif producer is not None:
            causes.append("its input comes from '{}' in {}: a float-only op, or an op without Q/DQ on its output, "
                          "feeds it".format(producer.get("Name"), kind or "a non-int8 type"))
        else:
            causes.append("its input '{}' arrives in {} with no quantize layer before it".format(
                tensor.get("Name"), kind or "a non-int8 type"))
    fused = [name for name in members if ops.get(name) not in INT8_FUSABLE_OPS]
    if fused:
        causes.append("it is fused with op(s) TensorRT may not run in int8: {}".format(
            ", ".join("{} ({})".format(name, ops.get(name)) for name in fused)))
    residual = node.get("residual_without_qdq")
    if residual:
        causes.append("the Add after it ('{}') takes '{}' without Q/DQ: quantize the residual input too so TensorRT "
                      "fuses the add into the int8 convolution".format(residual.get("add"), residual.get("input")))
    if dla and not is_dla(layer):
        causes.append("it fell back from the DLA to the GPU (the DLA cannot run it), and the DLA/GPU boundary "
                      "hands it reformatted data")
    elif is_dla(layer):
        causes.append("the DLA ran it in {}".format(precision))
    if not causes:
        causes.append("TensorRT chose a {} kernel: no faster int8 tactic for this layer's shape on this GPU "
                      "(channel counts that are multiples of 32 help), or int8 weights could not be used".format(precision))
    return causes


def prove(layers, qdq, dla=False):
    """The proof report: every layer's precision, and the Q/DQ nodes that did not run int8 (with likely causes)."""
    order = [str(name) for name in qdq["order"]]
    ops = dict((str(name), str(op)) for name, op in (qdq.get("ops") or {}).items())
    for name in order:
        ops.setdefault(name, "")
    producers = {}
    for layer in layers:
        for tensor in layer.get("Outputs") or []:
            producers[tensor.get("Name")] = layer
    nodes = dict((str(node["name"]), node) for node in qdq["nodes"])
    layer_rows, placed = [], {}
    for layer in layers:
        members = onnx_nodes_of(layer, order)
        precision = layer_precision(layer)
        quantized = [name for name in members if name in nodes]
        for name in quantized:
            placed.setdefault(name, []).append((layer, members, precision))
        layer_rows.append({"name": layer.get("Name"), "type": layer.get("LayerType"), "precision": precision,
                           "dla": is_dla(layer), "subgraph": is_foreign(layer), "onnx_nodes": members,
                           "qdq_nodes": quantized})
    offenders, missing = [], []
    for name, node in nodes.items():
        if name not in placed:
            missing.append(name)
            continue
        for layer, members, precision in placed[name]:
            if precision != "int8":
                offenders.append({"node": name, "op": node.get("op"), "layer": layer.get("Name"), "precision": precision,
                                  "causes": likely_causes(layer, members, node, precision, producers, ops, dla)})
    return {"schema": SCHEMA, "ok": not offenders and not missing, "qdq_nodes": len(nodes),
            "int8_layers": sum(1 for row in layer_rows if row["precision"] == "int8"), "layers": layer_rows,
            "offenders": offenders, "missing": missing}


def _write_json(path, data):
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
    with os.fdopen(handle, "w") as out:
        json.dump(data, out, indent=2)
        out.write("\n")
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", required=True, help="layer information JSON (trtexec --exportLayerInfo)")
    parser.add_argument("--qdq", required=True, help="qdq_nodes.json written by edgecompress from the ONNX")
    parser.add_argument("--dla", action="store_true", help="the engine was built for a DLA core with GPU fallback")
    parser.add_argument("--out", help="write the full report here (JSON)")
    args = parser.parse_args(argv)
    try:
        report = prove(load_layers(args.layers), load_qdq(args.qdq), dla=args.dla)
    except ProofInputError as exc:
        sys.stderr.write("int8 proof: error: {}\n".format(exc))
        return 2
    if args.out:
        _write_json(args.out, report)
    for row in report["layers"]:
        mark = "*" if row["qdq_nodes"] else " "
        print("{} {:<7} {:<24} {}".format(mark, row["precision"], str(row["type"])[:24], row["name"]))
    if not report["qdq_nodes"]:
        print("int8 proof: the ONNX has no Q/DQ layers, nothing to prove ({} layers listed)".format(len(report["layers"])))
        return 0
    if report["ok"]:
        boundary = sum(len(row["qdq_nodes"]) for row in report["layers"] if row["subgraph"])
        print("int8 proof: passed: all {} Q/DQ layers (*) run in int8{}".format(report["qdq_nodes"], "" if not boundary else
              " ({} of them inside fused subgraphs, proven by the subgraphs' int8 inputs and outputs)".format(boundary)))
        return 0
    for offender in report["offenders"]:
        sys.stderr.write("NOT INT8: {} ({}) runs in {} in layer '{}'; likely cause: {}\n".format(
            offender["node"], offender["op"], offender["precision"], offender["layer"], "; ".join(offender["causes"])))
    for name in report["missing"]:
        sys.stderr.write("NOT INT8: {} carries Q/DQ in the ONNX but is in no layer of the engine: the layer "
                         "information is not from this ONNX, or TensorRT renamed or removed the node\n".format(name))
    sys.stderr.write("int8 proof: FAILED: {} of {} Q/DQ layers are not proven int8\n".format(
        len(set(o["node"] for o in report["offenders"])) + len(report["missing"]), report["qdq_nodes"]))
    return 1


if __name__ == "__main__":
    sys.exit(main())
