"""Q/DQ lint: each rule fires on a small hand-built graph, and a real int8 export passes clean."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgecompress.errors import EdgeCompressError
from edgecompress.export import export_onnx
from edgecompress.engine import check_onnx
from edgecompress.targets import get_target, list_targets
from edgecompress.quant import calibrate, quantize_model


def _qdq_conv_model(
    *, zero_point: int = 0, zp_type=np.int8, weight_scales: int = 4, weight_axis: int = 0, quantize_input: bool = True,
    opset: int = 17, tail: str | None = None,
) -> onnx.ModelProto:
    """x -> Q -> DQ -> Conv(int8 weight -> DQ) -> [tail op] -> y; the keyword arguments break one rule each."""
    rng = np.random.default_rng(0)
    weight = rng.integers(-127, 128, size=(4, 3, 3, 3)).astype(np.int8)
    initializers = [
        numpy_helper.from_array(weight, "w_q"),
        numpy_helper.from_array(np.full(weight_scales, 0.02, np.float32) if weight_scales > 1 else np.array(0.02, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(weight_scales, np.int8) if weight_scales > 1 else np.array(0, np.int8), "w_zp"),
        numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(zero_point, zp_type), "x_zp"),
    ]
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="dq_w", axis=weight_axis)]
    conv_input = "x"
    if quantize_input:
        nodes += [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="q_x"),
                  helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="dq_x")]
        conv_input = "x_dq"
    nodes.append(helper.make_node("Conv", [conv_input, "w"], ["conv" if tail else "y"], name="conv0", pads=[1, 1, 1, 1]))
    if tail == "softmax":
        nodes += [helper.make_node("QuantizeLinear", ["conv", "x_scale", "x_zp"], ["c_q"], name="q_c"),
                  helper.make_node("DequantizeLinear", ["c_q", "x_scale", "x_zp"], ["c_dq"], name="dq_c"),
                  helper.make_node("Softmax", ["c_dq"], ["y"], name="softmax0", axis=1)]
    elif tail == "residual":
        nodes += [helper.make_node("QuantizeLinear", ["conv", "x_scale", "x_zp"], ["c_q"], name="q_c"),
                  helper.make_node("DequantizeLinear", ["c_q", "x_scale", "x_zp"], ["c_dq"], name="dq_c"),
                  helper.make_node("Relu", ["conv"], ["r"], name="relu0"),
                  helper.make_node("Add", ["c_dq", "r"], ["y"], name="add0")]
    elif tail == "concat":  # two Q/DQ pairs on the same tensor with different scales, then Concat
        initializers.append(numpy_helper.from_array(np.array(0.1, np.float32), "c_scale"))
        nodes += [helper.make_node("QuantizeLinear", ["conv", "x_scale", "x_zp"], ["a_q"], name="q_a"),
                  helper.make_node("DequantizeLinear", ["a_q", "x_scale", "x_zp"], ["a_dq"], name="dq_a"),
                  helper.make_node("QuantizeLinear", ["conv", "c_scale", "x_zp"], ["b_q"], name="q_b"),
                  helper.make_node("DequantizeLinear", ["b_q", "c_scale", "x_zp"], ["b_dq"], name="dq_b"),
                  helper.make_node("Concat", ["a_dq", "b_dq"], ["y"], name="concat0", axis=1)]
    elif tail == "dynamic-scale":  # the activation scale is computed by a node, not stored as a constant
        nodes.insert(0, helper.make_node("Abs", ["x_scale"], ["x_scale_run_time"], name="abs_scale"))
        for node in nodes[1:]:
            node.input[:] = ["x_scale_run_time" if name == "x_scale" else name for name in node.input]
        nodes.append(helper.make_node("Relu", ["conv"], ["y"], name="relu0"))
    elif tail == "bitshift":  # an op no TensorRT version imports
        nodes.append(helper.make_node("BitShift", ["conv", "conv"], ["y"], name="bitshift0", direction="LEFT"))
    graph = helper.make_graph(nodes, "lint", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _rules(model: onnx.ModelProto, tmp_path, target: str = "jetson-orin-nano") -> dict[str, str]:
    path = tmp_path / "model.onnx"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return {f.rule: f.severity for f in check_onnx(path, get_target(target)).findings}


def test_clean_hand_built_graph_has_no_findings(tmp_path):
    assert _rules(_qdq_conv_model(), tmp_path) == {}


@pytest.mark.parametrize(
    "kwargs, rule, severity",
    [
        ({"zero_point": 3}, "zero-point", "error"),
        ({"weight_scales": 1}, "per-tensor-weight", "warning"),
        ({"weight_axis": 1}, "weight-axis", "error"),
        ({"quantize_input": False}, "partial-quant", "warning"),
        ({"opset": 19}, "opset", "error"),
        ({"tail": "softmax"}, "reformat", "warning"),
        ({"tail": "residual"}, "residual-add", "warning"),
        ({"tail": "bitshift"}, "unsupported-op", "error"),
        ({"tail": "concat"}, "concat-scales", "warning"),
        ({"tail": "dynamic-scale"}, "dynamic-scale", "error"),
    ],
)
def test_each_rule_fires(tmp_path, kwargs, rule, severity):
    target = "jetson-xavier-nx" if rule == "opset" else "jetson-orin-nano"  # TensorRT 8.5 parses opset <= 17
    assert _rules(_qdq_conv_model(**kwargs), tmp_path, target).get(rule) == severity


def test_uint8_zero_point_is_flagged_as_wrong_type(tmp_path):
    rules = _rules(_qdq_conv_model(zp_type=np.uint8, zero_point=0), tmp_path)
    assert rules == {"int8-type": "error"}


def test_version_dependent_op_and_opset(tmp_path):
    model = _qdq_conv_model(opset=17)
    trilu = helper.make_node("Trilu", ["y"], ["z"], name="trilu0")
    model.graph.node.append(trilu)
    model.graph.output[0].name = "z"
    assert _rules(model, tmp_path, "jetson-nano") == {"opset": "error", "unsupported-op": "error", "no-int8": "error"}
    assert _rules(model, tmp_path, "jetson-orin-nano") == {}


def test_cpu_target_skips_tensorrt_only_rules(tmp_path):
    assert _rules(_qdq_conv_model(zero_point=3, zp_type=np.uint8, opset=21), tmp_path, "cpu") == {}
    assert _rules(_qdq_conv_model(quantize_input=False), tmp_path, "cpu") == {"partial-quant": "warning"}


def _tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()


def test_real_int8_export_is_clean_and_float_layer_is_reported(tmp_path):
    x = torch.randn(2, 3, 16, 16)
    batches = [torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    clean = quantize_model(_tiny_cnn(), x)
    calibrate(clean, batches, method="max")
    report = check_onnx(export_onnx(clean, x, tmp_path / "int8.onnx"), get_target("jetson-agx-orin"))
    assert report.ok and not report.warnings, report.findings
    mixed = quantize_model(_tiny_cnn(), x, skip=("3",))
    calibrate(mixed, batches, method="max")
    report = check_onnx(export_onnx(mixed, x, tmp_path / "mixed.onnx"), get_target("orin-nano"))
    assert report.ok and [(f.rule, f.severity) for f in report.findings] == [("float-layer", "info")]
    assert "no-int8" in {f.rule for f in check_onnx(tmp_path / "int8.onnx", get_target("jetson-nano")).errors}
    assert report.to_dict()["ok"] is True


def test_target_aliases():
    assert get_target("orin-nano").name == "jetson-orin-nano"
    assert get_target("4090").name == "rtx-4090"
    with pytest.raises(EdgeCompressError, match="ambiguous: jetson-orin-nano, jetson-orin-nx-8gb, jetson-orin-nx-16gb, jetson-agx-orin"):
        get_target("orin")
    with pytest.raises(EdgeCompressError, match="unknown target 'banana'"):
        get_target("banana")


def test_bad_files(tmp_path):
    with pytest.raises(EdgeCompressError, match="not found"):
        check_onnx(tmp_path / "missing.onnx", get_target("cpu"))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x01 definitely not a model \xff\xfe")
    with pytest.raises(EdgeCompressError, match="not an ONNX model|no ONNX graph"):
        check_onnx(junk, get_target("cpu"))


def test_onnxruntime_backend_export_passes_for_cpu_but_not_tensorrt(tmp_path):
    x = torch.rand(2, 3, 16, 16)
    model = quantize_model(_tiny_cnn(), x, backend="onnxruntime")
    calibrate(model, [torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(3))], method="max")
    path = export_onnx(model, x, tmp_path / "ort.onnx")
    assert check_onnx(path, get_target("cpu")).ok
    assert "int8-type" in {f.rule for f in check_onnx(path, get_target("jetson-orin-nano")).errors}  # uint8 activations: onnxruntime only


# --- operator support per TensorRT version (engine/onnx_ops.py) and custom ops ---

TENSORRT_TARGETS = [t.name for t in list_targets() if t.tensorrt]


def _float_model(*nodes: onnx.NodeProto, opset: int = 13, domains: dict[str, int] | None = None,
                 functions: list[onnx.FunctionProto] = ()) -> onnx.ModelProto:
    """x [1, 4, 8, 8] -> Relu -> r -> nodes... -> y (the last node writes y)."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"], name="relu0"), *nodes], "ops",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, v) for d, v in (domains or {}).items())]
    return helper.make_model(graph, opset_imports=opsets, functions=list(functions))


def _findings(model: onnx.ModelProto, tmp_path, target: str, check: bool = True) -> list[tuple[str, str, str]]:
    path = tmp_path / f"{target}.onnx"
    if check:
        onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return [(f.severity, f.rule, f.op) for f in check_onnx(path, get_target(target)).findings if f.rule != "no-qdq"]


@pytest.mark.parametrize("target", TENSORRT_TARGETS)
def test_unique_is_unsupported_on_every_tensorrt(tmp_path, target):
    model = _float_model(helper.make_node("Unique", ["r"], ["y"], name="unique0"))
    assert _findings(model, tmp_path, target) == [("error", "unsupported-op", "Unique")]
    report = check_onnx(tmp_path / f"{target}.onnx", get_target(target))
    assert "no Unique importer" in report.errors[0].message and not report.ok


def test_custom_domain_op_needs_a_plugin(tmp_path):
    model = _float_model(helper.make_node("FancyActivation", ["r"], ["y"], name="fancy0", domain="com.example"), domains={"com.example": 1})
    for target in ("jetson-nano", "jetson-orin-nano", "rtx-4090"):
        assert _findings(model, tmp_path, target) == [("error", "custom-op", "FancyActivation")]
    finding = check_onnx(tmp_path / "rtx-4090.onnx", get_target("rtx-4090")).errors[0]
    assert "com.example" in finding.message and "plugin named FancyActivation" in finding.fix
    assert check_onnx(tmp_path / "rtx-4090.onnx", get_target("cpu")).findings[0].rule == "no-qdq"  # onnxruntime: no TensorRT rules


def test_tensorrt_plugin_library_op_is_a_note(tmp_path):
    model = _float_model(helper.make_node("EfficientNMS_TRT", ["r"], ["y"], name="nms0", domain="trt.plugins"), domains={"trt.plugins": 1})
    assert _findings(model, tmp_path, "jetson-agx-orin", check=False) == [("info", "custom-op", "EfficientNMS_TRT")]


@pytest.mark.parametrize("op, inputs, opset, older, newer, since", [
    ("LayerNormalization", ["r", "r"], 17, "jetson-xavier-nx", "jetson-orin-nano", "8.6"),  # TensorRT 8.5 vs 10.3
    ("NonZero", ["r"], 13, "jetson-nano", "jetson-xavier-nx", "8.5"),  # 8.2 vs 8.5
])
def test_op_newer_than_the_targets_tensorrt(tmp_path, op, inputs, opset, older, newer, since):
    model = _float_model(helper.make_node(op, inputs, ["y"], name="op0"), opset=opset)
    assert _findings(model, tmp_path, older) == [("error", "unsupported-op", op)]
    assert f"needs TensorRT {since}+" in check_onnx(tmp_path / f"{older}.onnx", get_target(older)).errors[0].message
    assert _findings(model, tmp_path, newer) == []


def test_op_of_a_newer_tensorrt_10(tmp_path):
    """Attention (ONNX opset 23) came with TensorRT 10.14: not on the Orin's 10.3, fine on the desktop 10.16 (opset aside)."""
    from dataclasses import replace

    from edgecompress.engine.lint_rules import check_operators, Graph

    model = _float_model(helper.make_node("Attention", ["r", "r", "r"], ["y"], name="attention0"), opset=23)
    graph = Graph(model)
    assert [(f.rule, f.op) for f in check_operators(graph, get_target("jetson-orin-nano"))] == [("unsupported-op", "Attention")]
    assert check_operators(graph, get_target("rtx-4090")) == []
    assert [f.op for f in check_operators(graph, replace(get_target("rtx-4090"), tensorrt="10.5"))] == ["Attention"]


def test_ops_inside_subgraphs_and_local_functions(tmp_path):
    branch = helper.make_graph([helper.make_node("Unique", ["r"], ["u"], name="unique_in_branch")], "then", [],
                               [helper.make_tensor_value_info("u", TensorProto.FLOAT, ["n"])])
    other = helper.make_graph([helper.make_node("Identity", ["r"], ["u2"], name="identity_in_branch")], "else", [],
                              [helper.make_tensor_value_info("u2", TensorProto.FLOAT, ["n"])])
    cond = helper.make_node("Constant", [], ["cond"], name="cond0", value=helper.make_tensor("c", TensorProto.BOOL, [], [True]))
    model = _float_model(cond, helper.make_node("If", ["cond"], ["y"], name="if0", then_branch=branch, else_branch=other))
    assert _findings(model, tmp_path, "jetson-agx-orin") == [("error", "unsupported-op", "Unique")]

    function = helper.make_function("local.fn", "DoubleRelu", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["t"]), helper.make_node("Relu", ["t"], ["b"])],
                                    [helper.make_opsetid("", 13)])
    model = _float_model(helper.make_node("DoubleRelu", ["r"], ["y"], name="fn0", domain="local.fn"), domains={"local.fn": 1}, functions=[function])
    assert _findings(model, tmp_path, "jetson-orin-nano") == []  # TensorRT 9.0+ inlines local functions
    assert _findings(model, tmp_path, "jetson-xavier-nx") == [("error", "custom-op", "DoubleRelu")]


def test_float_model_for_an_int8_target_says_no_qdq(tmp_path):
    path = tmp_path / "float.onnx"
    onnx.save(_float_model(helper.make_node("Relu", ["r"], ["y"], name="relu1")), str(path))
    for target in ("jetson-orin-nano", "rtx-4090", "cpu"):
        report = check_onnx(path, get_target(target))
        assert report.ok and [(f.severity, f.rule) for f in report.findings] == [("info", "no-qdq")], target
        assert report.findings[0].message.startswith("no Q/DQ in this model") and "int8" in report.findings[0].fix
    assert check_onnx(path, get_target("jetson-nano")).findings == []  # fp16 is the Nano's precision: nothing to say
    assert "strongly typed" in check_onnx(path, _trt11()).findings[0].message


def _trt11():
    from dataclasses import replace

    return replace(get_target("rtx-4090"), tensorrt="11.4")


def test_op_lists_per_tensorrt_release():
    from edgecompress.engine.onnx_ops import RELEASES, first_release_with, supported_ops

    versions = [release.version for release in RELEASES]
    assert versions == sorted(versions) and all(release.source.startswith("https://") for release in RELEASES)
    for older, newer in zip(versions, versions[1:]):
        assert supported_ops(older) < supported_ops(newer)
    experimental = {"ImageScaler", "ParametricSoftplus", "ScaledTanh"}  # old experimental ONNX ops TensorRT still imports
    assert all(onnx.defs.has(op) for op in supported_ops((11, 5)) - experimental)
    assert {"Conv", "QuantizeLinear", "DequantizeLinear", "Resize", "Concat"} <= supported_ops((8, 2))
    assert "Unique" not in supported_ops((11, 5)) and first_release_with("Unique") is None
    assert first_release_with("Trilu") == (8, 5) and first_release_with("DFT") == (11, 2)
    assert supported_ops((7, 1)) == supported_ops((8, 2))  # older than the table: the 8.2 list


@pytest.mark.parametrize("model_name, size", [("resnet20", 32), ("mobilenetv2", 32), ("yolo-mbv2", 64), ("yolov8n", 64)])
def test_zoo_exports_lint_clean_for_every_target(tmp_path, model_name, size):
    """The project's own models, float and int8, at each target's export opset: no false unsupported-op."""
    from edgecompress.models import build_model

    torch.manual_seed(0)
    model = build_model(model_name).eval()
    x = torch.rand(1, 3, size, size)
    exports = {opset: export_onnx(model, x, tmp_path / f"float{opset}.onnx", opset=opset) for opset in {t.export_opset for t in list_targets()}}
    for target in list_targets():
        report = check_onnx(exports[target.export_opset], target)
        assert not report.errors and not report.warnings, (target.name, report.findings)


@pytest.mark.parametrize("target", [t.name for t in list_targets()])
def test_clean_exports_lint_clean_for_every_target(tmp_path, target):
    target = get_target(target)
    x = torch.randn(2, 3, 16, 16)
    float_report = check_onnx(export_onnx(_tiny_cnn(), x, tmp_path / "float.onnx", opset=target.export_opset), target)
    assert float_report.ok and not float_report.warnings
    assert {f.rule for f in float_report.findings} == ({"no-qdq"} if target.int8 else set())
    model = quantize_model(_tiny_cnn(), x, backend=target.qdq_backend)
    calibrate(model, [torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))], method="max")
    int8_report = check_onnx(export_onnx(model, x, tmp_path / "int8.onnx", opset=target.export_opset), target)
    if target.int8:
        assert int8_report.findings == [], int8_report.findings
    else:
        assert [f.rule for f in int8_report.findings] == ["no-int8"]
