"""A stand-in for NVIDIA's trtexec in the bundle tests: records its arguments and writes the files the real one
writes, in the formats of samples/common/sampleReporting.cpp and the engine inspector (see int8_proof.py and
trtexec_reports.py for the sources), with layers named after the real ONNX's nodes the way TensorRT names them.

It builds nothing and measures nothing: the "engine" it saves is a JSON note of the layers, and its timings are the
constant ``FAKE_TRT_MS`` (``FAKE_TRT_DLA_MS`` for a DLA engine) so the tests can check which engine the bundle picks.

Environment: ``FAKE_TRT_VERSION`` (e.g. 10.3.0), ``FAKE_TRTEXEC_LOG`` (JSON lines of argv), ``FAKE_ONNX_GRAPH`` (the
ONNX's nodes as :func:`graph_summary` writes them, read instead of importing onnx in every call: importing it takes
seconds on a busy CI machine; the file's sha256 must be the ``--onnx`` file's), ``FAKE_TRT_FLOAT_NODE`` (an ONNX node
whose layer TensorRT "ran" in FP16, behind a reformat layer), ``FAKE_TRT_MS``, ``FAKE_TRT_DLA_MS``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from types import SimpleNamespace

FORMATS = {  # Format/Datatype strings as TensorRT 8.x/10.x write them
    "int8": "Thirty-two wide channel vectorized row major Int8 format",
    "fp16": "Channel major FP16 format where channel % 8 == 0",
    "fp32": "Row major linear FP32",
}
DATATYPES = {"int8": "Int8", "fp16": "Half", "fp32": "Float"}  # kgen names (weights, TensorRT 11 DataType)
POINTWISE = {"Relu", "Sigmoid", "Mul"}


def version() -> tuple[int, int, int]:
    major, minor, patch = (int(part) for part in os.environ["FAKE_TRT_VERSION"].split(".")[:3])
    return major, minor, patch


def tensor(name: str, kind: str, dims: list[int]) -> dict:
    if version()[0] >= 11:  # 11.x splits Format/Datatype (tensorrt-10x-to-11x-IEngineInspector migration page)
        return {"Name": name, "Location": "Device", "Dimensions": dims, "Format": FORMATS[kind].replace(f" {DATATYPES[kind]}", ""),
                "DataType": DATATYPES[kind]}
    return {"Name": name, "Location": "Device", "Dimensions": dims, "Format/Datatype": FORMATS[kind]}


def graph_summary(onnx_path: str) -> dict:
    """The ONNX graph's nodes, inputs and outputs (computed by the test with the onnx package)."""
    import onnx

    graph = onnx.load(onnx_path).graph
    return {"sha256": hashlib.sha256(open(onnx_path, "rb").read()).hexdigest(),
            "inputs": [value.name for value in graph.input], "outputs": [value.name for value in graph.output],
            "nodes": [{"name": n.name, "op_type": n.op_type, "input": list(n.input), "output": list(n.output)} for n in graph.node]}


def load_graph(onnx_path: str) -> SimpleNamespace:
    with open(os.environ["FAKE_ONNX_GRAPH"]) as handle:
        summary = json.load(handle)
    if hashlib.sha256(open(onnx_path, "rb").read()).hexdigest() != summary["sha256"]:
        raise SystemExit(f"fake trtexec: {onnx_path} is not the ONNX summarised in FAKE_ONNX_GRAPH")
    return SimpleNamespace(input=[SimpleNamespace(name=name) for name in summary["inputs"]],
                           output=[SimpleNamespace(name=name) for name in summary["outputs"]],
                           node=[SimpleNamespace(**node) for node in summary["nodes"]])


def layer_info(onnx_path: str, float_node: str | None) -> dict:
    """Layers as TensorRT would fuse this Q/DQ graph: DQ folded into consumers, Q into producers (or a reformat on
    the network input), a conv fused with its pointwise activation (PWN) and any Q after it."""
    graph = load_graph(onnx_path)
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    inputs = {value.name for value in graph.input}
    dims = [1, 16, 32, 32]
    major, minor, _ = version()
    fused: set[str] = set()
    layers = []

    def source(name: str) -> tuple[str, str]:
        producer = producers.get(name)
        if producer is not None and producer.op_type == "DequantizeLinear":
            return producer.input[0], "int8"
        return name, "fp32" if name in inputs else "fp16"

    for node in graph.node:
        if node.op_type in ("DequantizeLinear", "Constant") or node.name in fused:
            continue
        if node.op_type == "QuantizeLinear":
            if node.input[0] in inputs:
                layers.append({"Name": node.name, "LayerType": "Reformat", "ParameterType": "Reformat", "Origin": "QDQ",
                               "Inputs": [tensor(node.input[0], "fp32", dims)], "Outputs": [tensor(node.output[0], "int8", dims)]})
            continue
        members, last = [node], node
        while node.op_type in ("Conv", "MatMul", "Gemm"):
            following = consumers.get(last.output[0], [])
            if len(following) == 1 and following[0].op_type == "Relu":
                members.append(following[0])
            elif len(following) == 2 and {n.op_type for n in following} == {"Sigmoid", "Mul"}:
                members += sorted(following, key=lambda n: n.op_type != "Sigmoid")
            else:
                break
            last = members[-1]
        fused.update(n.name for n in members)
        out_name, out_kind = last.output[0], "fp16"
        quantize = [n for n in consumers.get(out_name, []) if n.op_type == "QuantizeLinear"]
        if quantize and len(consumers[out_name]) == 1:
            out_name, out_kind = quantize[0].output[0], "int8"
            fused.add(quantize[0].name)
        data = [source(name) for name in node.input[:1]] + [source(name) for name in node.input[1:]
                                                           if node.op_type in ("Add", "Mul", "Concat")]
        head = node.name
        if len(members) > 1:
            head += " + PWN(" + ", ".join(n.name for n in members[1:]) + ")"
        weight = None
        if node.op_type in ("Conv", "MatMul", "Gemm"):
            weight_dq = producers.get(node.input[1])
            quantized = weight_dq is not None and weight_dq.op_type == "DequantizeLinear"
            weight = "int8" if quantized and data[0][1] == "int8" else "fp16"
            if quantized:
                head = weight_dq.name + " + " + head
        layer = {"Name": head, "LayerType": "CaskConvolution" if node.op_type == "Conv" else "PointWise",
                 "ParameterType": "Convolution" if node.op_type == "Conv" else "PointWise",
                 "Inputs": [tensor(name, kind, dims) for name, kind in data], "Outputs": [tensor(out_name, out_kind, dims)]}
        if weight:
            layer["Weights"] = {"Type": DATATYPES[weight], "Count": 432}
            layer["TacticName"] = "sm87_xmma_fprop_implicit_gemm_interleaved_i8i8_i8i32_f32" if weight == "int8" else "sm87_xmma_fprop_f16f16"
        if (major, minor) >= (8, 6):  # Metadata names the ONNX nodes from 8.6, joined by \x1f
            layer["Metadata"] = "\x1f".join(f"[ONNX Layer: {n.name}]" for n in members)
        if node.name == float_node:  # TensorRT "chose" FP16 behind a reformat: the case the proof must catch
            reformat_out = data[0][0] + " copy"
            layers.append({"Name": f"Reformatting CopyNode for Input Tensor 0 to {head}", "LayerType": "Reformat",
                           "ParameterType": "Reformat", "Origin": "REFORMAT", "Inputs": [tensor(data[0][0], "int8", dims)],
                           "Outputs": [tensor(reformat_out, "fp16", dims)]})
            layer["Inputs"][0] = tensor(reformat_out, "fp16", dims)
            layer["Weights"] = {"Type": "Half", "Count": 432}
        layers.append(layer)
    io = [value.name for value in graph.input] + [value.name for value in graph.output]
    if major >= 11:
        return {"Layers": layers, "I/O Tensors": [{"Name": name, "IOMode": "Input" if name in inputs else "Output",
                                                   "DataType": "Float", "Dimensions": dims} for name in io]}
    return {"Layers": layers, "Bindings": io}


def write_times(path: str, iterations: int, latency_ms: float, warmup_ms: float) -> None:
    """Times since inference began: 8.5+ leave the warm-up inferences out, 8.2 lists them first."""
    warmups = int(warmup_ms // latency_ms) + 1 if version()[:2] < (8, 5) else 0
    rows, start = [], 0.0 if warmups else warmup_ms
    for index in range(warmups + iterations):
        compute = latency_ms * (1.0 + 0.01 * (index % 5))
        row = {"startEnqMs": start, "endEnqMs": start + 0.01, "startH2dMs": start, "endH2dMs": start,
               "startComputeMs": start, "endComputeMs": start + compute, "startD2hMs": start + compute,
               "endD2hMs": start + compute, "h2dMs": 0, "computeMs": compute, "d2hMs": 0, "latencyMs": compute}
        if version()[:2] == (8, 2):
            row["endToEndMs"] = compute
        rows.append(row)
        start += compute
    with open(path, "w") as out:
        out.write("[\n  " + "\n, ".join(json.dumps(row) for row in rows) + "\n]\n")


def write_profile(path: str, names: list[str], latency_ms: float, runs: int) -> None:
    share = latency_ms / max(1, len(names))
    with open(path, "w") as out:
        out.write("[\n  { \"count\" : %d }\n" % runs)
        for name in names:
            row = {"name": name, "timeMs": share * runs, "averageMs": share}
            if version()[:2] != (8, 2):  # 8.2 has no medianMs
                row["medianMs"] = share
            row["percentage"] = 100.0 / max(1, len(names))
            out.write(", " + json.dumps(row) + "\n")
        out.write("]\n")


def main(argv: list[str]) -> int:
    options = dict(arg[2:].split("=", 1) if "=" in arg else (arg[2:], "") for arg in argv if arg.startswith("--"))
    with open(os.environ["FAKE_TRTEXEC_LOG"], "a") as log:
        log.write(json.dumps(argv) + "\n")
    code = version()[0] * (10000 if version()[0] >= 10 else 1000) + version()[1] * 100 + version()[2]
    print(f"&&&& RUNNING TensorRT.trtexec [TensorRT v{code}] # trtexec " + " ".join(argv))
    if "onnx" in options:
        info = layer_info(options["onnx"], os.environ.get("FAKE_TRT_FLOAT_NODE"))
        with open(options["saveEngine"], "w") as out:
            json.dump({"fake_engine_of": options["onnx"], "dla": options.get("useDLACore"),
                       "layers": [layer["Name"] for layer in info["Layers"]]}, out)
        if "exportLayerInfo" in options:
            with open(options["exportLayerInfo"], "w") as out:
                json.dump(info, out, indent=1)
        if "timingCacheFile" in options:
            with open(options["timingCacheFile"], "ab") as out:
                out.write(b"timings\n")
        return 0
    if "loadEngine" in options:
        with open(options["loadEngine"]) as handle:
            engine = json.load(handle)
        latency = float(os.environ["FAKE_TRT_DLA_MS" if engine["dla"] is not None else "FAKE_TRT_MS"])
        iterations = int(options.get("iterations", 10))
        if "exportTimes" in options:
            write_times(options["exportTimes"], iterations, latency, float(options.get("warmUp", 200)))
        if "exportProfile" in options:
            write_profile(options["exportProfile"], engine["layers"], latency, iterations)
        return 0
    print("=== Model Options ===  (usage)")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
