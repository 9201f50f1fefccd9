"""The int8 proof (edgecompress/engine/int8_proof.py) on layer information in NVIDIA's documented formats
(tests/engine/data: a TensorRT 8.5 engine named by fused layer names, a TensorRT 10 engine with Metadata and a Myelin
subgraph), on the Q/DQ node list of a real export, and its Python 3.6 compatibility (it runs on JetPack 4)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgecompress.engine import int8_proof
from edgecompress.engine.qdq_nodes import qdq_nodes

DATA = Path(__file__).with_name("data")
PROOF = Path(int8_proof.__file__)


def _prove(name: str, **options) -> dict:
    return int8_proof.prove(int8_proof.load_layers(str(DATA / f"layers_{name}.json")),
                            json.loads((DATA / f"qdq_{name}.json").read_text()), **options)


@pytest.mark.parametrize("module", ["int8_proof.py", "engine_meta.py"])
def test_device_scripts_are_python_3_6_and_stdlib_only(module: str) -> None:
    source = (PROOF.parent / module).read_text()
    tree = ast.parse(source, feature_version=(3, 6))  # no walrus, no positional-only parameters, ...
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    optional = {"tensorrt"}  # engine_meta probes JetPack's python3-libnvinfer inside a try
    assert imported <= (set(sys.stdlib_module_names) - {"dataclasses"}) | optional, imported
    assert not any(isinstance(node, ast.ImportFrom) and node.module == "__future__" for node in ast.walk(tree))
    fstrings = [node for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)]
    assert all("=}" not in ast.get_source_segment(source, node) for node in fstrings)  # no f"{x=}" (3.8)


def test_fused_names_map_to_onnx_nodes() -> None:
    order = ["a", "b", "/m/Sigmoid", "/m/Mul", "c", "d", "e"]
    assert int8_proof.name_tokens("w + Q_7 + a + PWN(PWN(/m/Sigmoid), /m/Mul)") == ["w", "Q_7", "a", "/m/Sigmoid", "/m/Mul"]
    assert int8_proof.onnx_nodes_of({"Name": "w + a + PWN(/m/Sigmoid, /m/Mul)"}, order) == ["a", "/m/Sigmoid", "/m/Mul"]
    assert int8_proof.onnx_nodes_of({"Name": "{ForeignNode[b...d]}"}, order) == ["b", "/m/Sigmoid", "/m/Mul", "c", "d"]
    assert int8_proof.onnx_nodes_of({"Name": "x", "Metadata": "[ONNX Layer: c]\x1f[ONNX Layer: e]\x1e[ONNX Layer: zz]"}, order) == ["c", "e"]
    assert int8_proof.onnx_nodes_of({"Name": "Reformatting CopyNode for Input Tensor 0 to a", "LayerType": "Reformat"}, order) == []


@pytest.mark.parametrize(("description", "expected"), [
    ({"Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}, "int8"),
    ({"Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}, "fp16"),
    ({"Format/Datatype": "Row major linear FP32"}, "fp32"),
    ({"Format/Datatype": "Half"}, "fp16"),
    ({"Format": "Row major linear FP32 format (kLINEAR)", "DataType": "Int8"}, "int8"),  # 11.x: split fields
    ({"Format/Datatype": "N/A due to dynamic shapes"}, None),
])
def test_tensor_datatypes_of_each_tensorrt_release(description: dict, expected: str | None) -> None:
    assert int8_proof.tensor_datatype(description) == expected


def test_tensorrt_8_engine_named_by_fused_layers_fails_on_the_fp16_residual_conv() -> None:
    report = _prove("trt85_qdq_resnet_block")
    assert not report["ok"] and report["missing"] == []
    assert [row["precision"] for row in report["layers"] if row["qdq_nodes"]] == ["int8", "int8", "fp16"]
    (offender,) = report["offenders"]
    assert (offender["node"], offender["precision"]) == ("Conv_34", "fp16")
    assert offender["layer"] == "layer1.0.conv2.weight + QuantizeLinear_32 + Conv_34 + Add_42 + Relu_43"
    assert offender["causes"][0].startswith("a reformat layer before it ('Reformatting CopyNode for Input Tensor 0 to layer1.0.conv2")
    assert "the Add after it ('Add_42') takes 'input.36' without Q/DQ" in offender["causes"][1]


def test_tensorrt_10_metadata_and_myelin_subgraph_boundaries() -> None:
    report = _prove("trt10_metadata_foreign")
    assert report["layers"][0]["onnx_nodes"] == ["/model.0/conv/Conv", "/model.0/act/Sigmoid", "/model.0/act/Mul"]
    assert report["layers"][1]["subgraph"] and report["layers"][1]["onnx_nodes"][0] == "/model.1/conv/Conv"
    offenders = {o["node"]: o for o in report["offenders"]}
    assert set(offenders) == {"/model.1/conv/Conv", "/model.3/conv/Conv"}
    assert "fused into the subgraph '{ForeignNode[/model.1/conv/Conv.../model.2/Add]}' (Myelin)" in offenders["/model.1/conv/Conv"]["causes"][0]
    assert "its input comes from '{ForeignNode[" in offenders["/model.3/conv/Conv"]["causes"][0]


def test_dla_fallback_and_unexplained_fp16_causes() -> None:
    layer = {"Name": "conv", "LayerType": "CaskConvolution", "Inputs": [{"Name": "t", "Format/Datatype": "Int8"}],
             "Weights": {"Type": "Half"}}
    node = {"name": "conv", "op": "Conv"}
    assert int8_proof.layer_precision(layer) == "fp16"
    (dla,) = int8_proof.likely_causes(layer, ["conv"], node, "fp16", {}, {"conv": "Conv"}, dla=True)
    assert "fell back from the DLA to the GPU" in dla
    (other,) = int8_proof.likely_causes(layer, ["conv"], node, "fp16", {}, {"conv": "Conv"}, dla=False)
    assert other.startswith("TensorRT chose a fp16 kernel")
    fused = int8_proof.likely_causes(layer, ["conv", "sm"], node, "fp16", {}, {"conv": "Conv", "sm": "Softmax"}, dla=False)
    assert fused == ["it is fused with op(s) TensorRT may not run in int8: sm (Softmax)"]


def test_cli_exit_codes_and_one_line_per_offending_layer(tmp_path: Path) -> None:
    run = lambda *args: subprocess.run([sys.executable, str(PROOF), *map(str, args)], capture_output=True, text=True)
    failed = run("--layers", DATA / "layers_trt85_qdq_resnet_block.json", "--qdq", DATA / "qdq_trt85_qdq_resnet_block.json",
                 "--out", tmp_path / "proof.json")
    assert failed.returncode == 1
    assert [line.split(" in layer")[0] for line in failed.stderr.splitlines() if line.startswith("NOT INT8")] == [
        "NOT INT8: Conv_34 (Conv) runs in fp16"]
    assert len(failed.stdout.splitlines()) == 5  # every layer's precision
    assert json.loads((tmp_path / "proof.json").read_text())["schema"] == "edgecompress.int8-proof/1"
    names_only = tmp_path / "names.json"
    names_only.write_text(json.dumps({"Layers": ["conv1 + relu1", "fc"], "Bindings": ["x", "y"]}))
    refused = run("--layers", names_only, "--qdq", DATA / "qdq_trt85_qdq_resnet_block.json")
    assert refused.returncode == 2 and "--profilingVerbosity=detailed" in refused.stderr


def test_a_qdq_node_in_no_layer_is_reported_missing(residual_int8_onnx: Path) -> None:
    qdq = qdq_nodes(residual_int8_onnx)
    layers = [{"Name": "/stem.0/Conv", "LayerType": "CaskConvolution", "Inputs": [{"Name": "x", "Format/Datatype": "Int8"}],
               "Weights": {"Type": "Int8"}}]
    report = int8_proof.prove(layers, qdq)
    assert report["missing"] == ["/conv1.0/Conv", "/conv2.0/Conv", "/head/Conv"] and not report["ok"]


def test_qdq_nodes_of_a_real_export_and_a_residual_add_without_qdq(residual_int8_onnx: Path, tmp_path: Path) -> None:
    import onnx

    found = qdq_nodes(residual_int8_onnx)
    assert [(n["name"], n["op"], n["residual_without_qdq"]) for n in found["nodes"]] == [
        (name, "Conv", None) for name in ("/stem.0/Conv", "/conv1.0/Conv", "/conv2.0/Conv", "/head/Conv")]
    assert found["ops"]["/Add"] == "Add" and found["order"].index("/conv2.0/Conv") < found["order"].index("/Add")
    model = onnx.load(str(residual_int8_onnx))  # feed the Add's skip input from the float SiLU output instead
    add = next(node for node in model.graph.node if node.op_type == "Add")
    mul = next(node for node in model.graph.node if node.name == "/stem.2/Mul")
    skip = next(i for i, name in enumerate(add.input) if "stem" in name)
    add.input[skip] = mul.output[0]
    onnx.save(model, str(tmp_path / "residual_float_skip.onnx"))
    conv2 = next(n for n in qdq_nodes(tmp_path / "residual_float_skip.onnx")["nodes"] if n["name"] == "/conv2.0/Conv")
    assert conv2["residual_without_qdq"] == {"add": "/Add", "input": mul.output[0]}
