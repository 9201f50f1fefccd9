"""Inspect an exported ONNX graph: is it quantized the way TensorRT wants, and does ONNX Runtime run it in int8?"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from ..errors import EdgeCompressError

# ONNX Runtime kernels that compute in integers (what its QDQ fusion turns Q -> DQ -> op -> Q into).
INT8_OP_PREFIXES = ("QLinear", "NhwcQLinear")
INT8_OPS = {"ConvInteger", "MatMulInteger", "MatMulIntegerToFloat", "QGemm"}


@dataclass(frozen=True)
class QdqSummary:
    """Counts and properties of the Q/DQ nodes of an ONNX graph."""

    quantize_linear: int
    dequantize_linear: int
    conv: int
    conv_quantized: int  # Convs whose input and weight both come from DequantizeLinear
    weights_per_channel: bool  # every Conv weight DQ has a 1-D scale on axis 0, one per output channel
    zero_points_zero: bool  # every Q/DQ zero point is 0 (symmetric quantization)

    @property
    def fully_quantized(self) -> bool:
        """Every Conv is quantized per channel with symmetric zero points: TensorRT's explicit int8 layout."""
        return self.conv > 0 and self.conv_quantized == self.conv and self.weights_per_channel and self.zero_points_zero


def qdq_summary(onnx_path: str | os.PathLike) -> QdqSummary:
    """Summarise the Q/DQ structure of the ONNX file at ``onnx_path``."""
    if not Path(onnx_path).is_file():
        raise EdgeCompressError(f"ONNX file not found: {onnx_path}; export the model first")
    return qdq_summary_of(onnx.load(str(onnx_path)))


def qdq_summary_of(model: onnx.ModelProto) -> QdqSummary:
    """:func:`qdq_summary` for a loaded model."""
    graph = model.graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    constants.update({node.output[0]: numpy_helper.to_array(node.attribute[0].t) for node in graph.node if node.op_type == "Constant" and node.attribute[0].name == "value"})
    producers = {output: node for node in graph.node for output in node.output}
    ops = Counter(node.op_type for node in graph.node)
    convs = [node for node in graph.node if node.op_type == "Conv"]

    def from_dq(name: str) -> onnx.NodeProto | None:
        node = producers.get(name)
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    quantized = [conv for conv in convs if from_dq(conv.input[0]) and from_dq(conv.input[1])]
    weight_dqs = [from_dq(conv.input[1]) for conv in quantized]
    qdq_nodes = [node for node in graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")]
    return QdqSummary(
        quantize_linear=ops["QuantizeLinear"],
        dequantize_linear=ops["DequantizeLinear"],
        conv=len(convs),
        conv_quantized=len(quantized),
        weights_per_channel=bool(weight_dqs) and all(_per_channel_axis0(dq, producers, constants) for dq in weight_dqs),
        zero_points_zero=all(_zero_point_is_zero(node, constants) for node in qdq_nodes),
    )


def _per_channel_axis0(dq: onnx.NodeProto, producers: dict[str, onnx.NodeProto], constants: dict[str, np.ndarray]) -> bool:
    """True when ``dq`` dequantizes a constant weight with one scale per output channel (axis 0)."""
    axis = next((attr.i for attr in dq.attribute if attr.name == "axis"), 1)
    scale = constants.get(dq.input[1])
    source = producers.get(dq.input[0])
    weight_name = source.input[0] if source is not None and source.op_type == "QuantizeLinear" else dq.input[0]
    weight = constants.get(weight_name)
    return axis == 0 and scale is not None and weight is not None and scale.ndim == 1 and scale.shape[0] == weight.shape[0]


def _zero_point_is_zero(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> bool:
    if len(node.input) < 3 or not node.input[2]:
        return True  # an omitted zero point is 0
    zero_point = constants.get(node.input[2])
    return zero_point is not None and not np.any(zero_point)


def ort_optimized_int8_ops(onnx_path: str | os.PathLike) -> dict[str, int]:
    """Integer-kernel op counts in the graph ONNX Runtime (CPU, all optimisations) actually runs.

    Non-empty means ORT fused Q -> DQ -> op -> Q chains into int8 kernels such as QLinearConv.
    """
    return {op: count for op, count in ort_optimized_ops(onnx_path).items() if op.startswith(INT8_OP_PREFIXES) or op in INT8_OPS}


def ort_optimized_ops(onnx_path: str | os.PathLike) -> dict[str, int]:
    """Op counts of the graph ONNX Runtime (CPU, all optimisations) actually runs, integer kernels and float ops alike."""
    if not Path(onnx_path).is_file():
        raise EdgeCompressError(f"ONNX file not found: {onnx_path}; export the model first")
    with tempfile.TemporaryDirectory(prefix="edgecompress-ort-") as folder:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(options.optimized_model_filepath)
    return dict(sorted(Counter(node.op_type for node in optimized.graph.node).items()))


def openvino_conv_precisions(onnx_path: str | os.PathLike) -> dict[str, int]:
    """How many convolutions OpenVINO's CPU plugin runs at each precision (``{"u8": 71}``) for this ONNX file.

    Compiled with the fp32 precision hint, so "u8"/"i8" means OpenVINO's low-precision transformations
    turned the Q/DQ pairs into integer kernels, and "f32" that the conv stayed float.
    """
    try:
        import openvino as ov
    except ImportError:
        raise EdgeCompressError("openvino is not installed; pip install 'edgecompress[openvino]'") from None
    if not Path(onnx_path).is_file():
        raise EdgeCompressError(f"ONNX file not found: {onnx_path}; export the model first")
    compiled = ov.Core().compile_model(str(onnx_path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    precisions: Counter = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "Convolution" in info["layerType"].astype(str):
            precisions[info["runtimePrecision"].astype(str)] += 1
    return dict(sorted(precisions.items()))
