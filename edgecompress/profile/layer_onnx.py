"""One-layer ONNX models of a layer shape at fewer channels, for the latency tables (:mod:`.layer_latency`).

An ONNX ``Conv`` (or ``MatMul`` + ``Add`` for a linear) with seeded random weights, in fp32, in fp16 (inputs,
weights and output: TensorRT on the device binds them in fp16, with no cast from fp32 around the layer), or
in int8 as a Q/DQ graph in one of two layouts (:mod:`edgecompress.quant.placement`):

- ``onnxruntime``: what onnxruntime fuses into ``QLinearConv`` and OpenVINO runs with int8 kernels (uint8
  activations quantized before and after the layer, per-output-channel symmetric int8 weights, int32 bias);
- ``tensorrt``: TensorRT's explicit quantization (int8 symmetric activations, zero point 0, on the layer's input
  only: TensorRT fuses the output quantization of the next layer itself; int8 weights per output channel; float bias).

Kept apart from :mod:`.layer_shapes` so that planning from given tables does not import onnx.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import EdgeCompressError
from .layer_shapes import PRECISIONS, LayerShape

OPSET = 17  # as edgecompress.export writes
MODEL_PRECISIONS = (*PRECISIONS, "fp16")
LAYOUTS = ("onnxruntime", "tensorrt")


def one_layer_onnx(shape: LayerShape, precision: str = "fp32", seed: int = 0, *, layout: str = "onnxruntime",
                   opset: int = OPSET) -> onnx.ModelProto:
    """A one-layer ONNX model of ``shape`` with seeded random weights, in ``precision`` (fp32, fp16, or int8 Q/DQ in the
    Q/DQ ``layout`` of the runtime that will run it), at ``opset`` (13 or later)."""
    if precision not in MODEL_PRECISIONS:
        raise EdgeCompressError(f"one-layer models are made in {', '.join(MODEL_PRECISIONS)}, not {precision!r}")
    if layout not in LAYOUTS:
        raise EdgeCompressError(f"unknown Q/DQ layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
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
    if precision == "int8":
        builder = (_TensorRTInt8Graph if layout == "tensorrt" else _Int8Graph)(weight, bias, shape.op)
    elif precision == "fp16":
        builder = _FloatGraph(weight.astype(np.float16), None if bias is None else bias.astype(np.float16))
    else:
        builder = _FloatGraph(weight, bias)
    x = builder.layer_input("x")
    y = builder.node(op, [x, builder.weight()] + ([builder.bias()] if shape.op == "conv" and bias is not None else []), **attributes)
    if shape.op == "linear" and bias is not None:
        y = builder.node("Add", [y, builder.bias()])
    y = builder.layer_output(y)
    element = TensorProto.FLOAT16 if precision == "fp16" else TensorProto.FLOAT
    graph = helper.make_graph(
        builder.nodes, f"{shape.op}-{shape.in_channels}-{shape.out_channels}",
        [helper.make_tensor_value_info("x", element, list(shape.input_shape))],
        [helper.make_tensor_value_info(y, element, list(shape.output_shape))],
        builder.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edgecompress.layer_latency")
    onnx.checker.check_model(model)
    return model


class _FloatGraph:
    """Nodes and initializers of a float (fp32 or fp16) one-layer graph."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None):
        self.weight_value, self.bias_value = weight, bias
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], **attributes) -> str:
        output = f"{op.lower()}{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def layer_input(self, name: str) -> str:
        return name

    def layer_output(self, name: str) -> str:
        return name

    def weight(self) -> str:
        return self.constant("weight", self.weight_value)

    def bias(self) -> str:
        return self.constant("bias", self.bias_value)


class _Int8Graph(_FloatGraph):
    """The onnxruntime Q/DQ layout: uint8 activations before and after the layer (zero point 128: the random input
    and output are signed), int8 weights symmetric per output channel (per tensor for a linear's MatMul), int32 bias
    at input scale x weight scale."""

    ACTIVATION_SCALE = 4.0 / 127  # standard-normal data, clipped at 4 sigma
    ACTIVATION_ZERO = np.uint8(128)
    LINEAR_PER_CHANNEL = False

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None, op: str):
        super().__init__(weight, bias)
        self.conv = op == "conv"
        self.channel_axis = 0 if self.conv else 1  # of the output channels: a conv's weight is (out, in, k...), a MatMul's (in, out)
        self.per_channel = self.conv or self.LINEAR_PER_CHANNEL
        by_channel = np.moveaxis(np.abs(weight), self.channel_axis, 0).reshape(weight.shape[self.channel_axis], -1)
        amax = by_channel.max(1) if self.per_channel else by_channel.max(keepdims=True)
        self.weight_scale = (np.maximum(amax, 1e-8) / 127).astype(np.float32)

    def quantized(self, name: str) -> str:
        scale = self.constant(f"{name}_scale", np.array(self.ACTIVATION_SCALE, dtype=np.float32))
        zero = self.constant(f"{name}_zero", np.array(self.ACTIVATION_ZERO))
        return self.node("DequantizeLinear", [self.node("QuantizeLinear", [name, scale, zero]), scale, zero])

    def layer_input(self, name: str) -> str:
        return self.quantized(name)

    def layer_output(self, name: str) -> str:
        return self.quantized(name)

    def weight(self) -> str:
        scale = self.weight_scale if self.per_channel else self.weight_scale.reshape(())
        broadcast = [1] * self.weight_value.ndim
        broadcast[self.channel_axis] = -1
        quantized = np.clip(np.round(self.weight_value / scale.reshape(broadcast)), -127, 127).astype(np.int8)
        zero = np.zeros_like(scale, dtype=np.int8)
        inputs = [self.constant("weight_q", quantized), self.constant("weight_scale", scale), self.constant("weight_zero", zero)]
        return self.node("DequantizeLinear", inputs, **({"axis": self.channel_axis} if self.per_channel else {}))

    def bias(self) -> str:
        if not self.conv:  # a linear's bias is added in float after the MatMul
            return super().bias()
        scale = (self.weight_scale * self.ACTIVATION_SCALE).astype(np.float32)
        quantized = np.round(self.bias_value / scale).astype(np.int32)
        return self.node("DequantizeLinear", [self.constant("bias_q", quantized), self.constant("bias_scale", scale),
                                              self.constant("bias_zero", np.zeros_like(quantized))], axis=0)


class _TensorRTInt8Graph(_Int8Graph):
    """The TensorRT Q/DQ layout: int8 symmetric activations (zero point 0) on the layer's input only, int8 weights
    symmetric per output channel (a linear's too, along the MatMul weight's axis 1), float bias."""

    ACTIVATION_ZERO = np.int8(0)
    LINEAR_PER_CHANNEL = True

    def layer_output(self, name: str) -> str:
        return name

    def bias(self) -> str:
        return _FloatGraph.bias(self)
