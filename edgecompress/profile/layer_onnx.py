"""One-layer ONNX models of a layer shape at fewer channels, for the latency tables (:mod:`.layer_latency`).

An ONNX ``Conv`` (or ``MatMul`` + ``Add`` for a linear) with seeded random weights, in fp32, or in int8 as a
Q/DQ graph that onnxruntime fuses into ``QLinearConv`` and OpenVINO runs with int8 kernels (uint8
activations, per-output-channel symmetric int8 weights, int32 bias: the onnxruntime layout of
:mod:`edgecompress.quant.placement`). Kept apart from :mod:`.layer_shapes` so that planning from given
tables does not import onnx.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import EdgeCompressError
from .layer_shapes import PRECISIONS, LayerShape

OPSET = 17  # as edgecompress.export writes


def one_layer_onnx(shape: LayerShape, precision: str = "fp32", seed: int = 0) -> onnx.ModelProto:
    """A one-layer ONNX model of ``shape`` with seeded random weights, in ``precision`` (fp32 or int8 Q/DQ)."""
    if precision not in PRECISIONS:
        raise EdgeCompressError(f"layer tables are measured in {' or '.join(PRECISIONS)} here, not {precision!r}; "
                                "fp16 needs a runtime with fp16 kernels (TensorRT on the device)")
    rng = np.random.default_rng(seed)
    if shape.op == "conv":
        weight = rng.standard_normal((shape.out_channels, shape.in_channels // shape.groups, *shape.kernel), dtype=np.float32) * 0.1
        attributes = {"kernel_shape": list(shape.kernel), "strides": list(shape.stride), "pads": list(shape.pads),
                      "dilations": list(shape.dilation), "group": shape.groups}
        op = "Conv"
    else:
        weight = rng.standard_normal((shape.in_channels, shape.out_channels), dtype=np.float32) * 0.1
        attributes, op = {}, "MatMul"
    bias = rng.standard_normal(shape.out_channels, dtype=np.float32) * 0.1 if shape.bias else None
    builder = _Int8Graph(weight, bias, shape.op) if precision == "int8" else _FloatGraph(weight, bias)
    x = builder.activation("x")
    y = builder.node(op, [x, builder.weight()] + ([builder.bias()] if shape.op == "conv" and bias is not None else []), **attributes)
    if shape.op == "linear" and bias is not None:
        y = builder.node("Add", [y, builder.bias()])
    y = builder.activation(y)
    graph = helper.make_graph(
        builder.nodes, f"{shape.op}-{shape.in_channels}-{shape.out_channels}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape.input_shape))],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, list(shape.output_shape))],
        builder.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgecompress.layer_latency")
    onnx.checker.check_model(model)
    return model


class _FloatGraph:
    """Nodes and initializers of an fp32 one-layer graph."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None):
        self.weight_value, self.bias_value = weight, bias
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], **attributes) -> str:
        output = f"{op.lower()}{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

    def activation(self, name: str) -> str:
        return name

    def weight(self) -> str:
        return self.constant("weight", self.weight_value)

    def bias(self) -> str:
        return self.constant("bias", self.bias_value)


class _Int8Graph(_FloatGraph):
    """A Q/DQ graph: uint8 activations (zero point 128: the random input and output are signed), int8 weights
    symmetric per output channel (per tensor for a linear's MatMul), int32 bias at input scale x weight scale."""

    ACTIVATION_SCALE = 4.0 / 127  # standard-normal data, clipped at 4 sigma

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None, op: str):
        super().__init__(weight, bias)
        self.per_channel = op == "conv"
        amax = np.abs(weight).reshape(len(weight), -1).max(1) if self.per_channel else np.abs(weight).max(keepdims=True)
        self.weight_scale = (np.maximum(amax, 1e-8) / 127).astype(np.float32)

    def activation(self, name: str) -> str:
        scale = self.constant(f"{name}_scale", np.array(self.ACTIVATION_SCALE, dtype=np.float32))
        zero = self.constant(f"{name}_zero", np.array(128, dtype=np.uint8))
        return self.node("DequantizeLinear", [self.node("QuantizeLinear", [name, scale, zero]), scale, zero])

    def weight(self) -> str:
        scale = self.weight_scale if self.per_channel else self.weight_scale.reshape(())
        broadcast = scale.reshape((-1,) + (1,) * (self.weight_value.ndim - 1)) if self.per_channel else scale
        quantized = np.clip(np.round(self.weight_value / broadcast), -127, 127).astype(np.int8)
        zero = np.zeros_like(scale, dtype=np.int8)
        inputs = [self.constant("weight_q", quantized), self.constant("weight_scale", scale), self.constant("weight_zero", zero)]
        return self.node("DequantizeLinear", inputs, **({"axis": 0} if self.per_channel else {}))

    def bias(self) -> str:
        if not self.per_channel:  # a linear's bias is added in float after the MatMul
            return super().bias()
        scale = (self.weight_scale * self.ACTIVATION_SCALE).astype(np.float32)
        quantized = np.round(self.bias_value / scale).astype(np.int32)
        return self.node("DequantizeLinear", [self.constant("bias_q", quantized), self.constant("bias_scale", scale),
                                              self.constant("bias_zero", np.zeros_like(quantized))], axis=0)
