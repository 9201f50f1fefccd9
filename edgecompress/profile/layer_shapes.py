"""The shapes of a model's convs and linears as they run, and one-layer ONNX models of them at fewer channels.

A latency table (:mod:`.layer_latency`) times one layer shape alone at several kept-channel counts; this
module says what the shapes are (from one forward pass on the example input) and builds the one-layer
models: an ONNX ``Conv`` (or ``MatMul`` + ``Add`` for a linear) with seeded random weights, in fp32, or in
int8 as a Q/DQ graph that onnxruntime fuses into ``QLinearConv`` and OpenVINO runs with int8 kernels
(uint8 activations, per-output-channel symmetric int8 weights, int32 bias: the onnxruntime layout of
:mod:`edgecompress.quant.placement`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from ..errors import EdgeCompressError
from ..helpers import evaluating

OPSET = 17  # as edgecompress.export writes
PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class LayerShape:
    """One conv (``op="conv"``, any spatial rank) or linear (``op="linear"``) call: its channels, its
    geometry and the shape of the input it was called on (``input_shape``: batch, channels, spatial... for
    a conv; leading dims then features for a linear)."""

    op: str
    in_channels: int
    out_channels: int
    input_shape: tuple[int, ...]
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()  # ONNX order: every spatial begin, then every end
    dilation: tuple[int, ...] = ()
    groups: int = 1
    bias: bool = True

    @property
    def depthwise(self) -> bool:
        """One filter per channel (groups == in == out): its in and out channels are cut together."""
        return self.op == "conv" and self.groups > 1 and self.groups == self.in_channels == self.out_channels

    @property
    def resizable(self) -> tuple[str, ...]:
        """The channel dims a one-layer model of this shape can be rebuilt at fewer of: both for a dense conv or
        a linear, the one tied pair for a depthwise conv, none for another grouped conv (its groups are kept whole)."""
        if self.op == "conv" and self.groups > 1 and not self.depthwise:
            return ()
        return ("in", "out")

    @property
    def output_shape(self) -> tuple[int, ...]:
        if self.op == "linear":
            return (*self.input_shape[:-1], self.out_channels)
        rank = len(self.kernel)
        spatial = [(size + self.pads[i] + self.pads[rank + i] - self.dilation[i] * (self.kernel[i] - 1) - 1) // self.stride[i] + 1
                   for i, size in enumerate(self.input_shape[2:])]
        return (self.input_shape[0], self.out_channels, *spatial)

    def at(self, kept_in: int, kept_out: int) -> LayerShape:
        """This layer with ``kept_in`` input and ``kept_out`` output channels (a depthwise conv keeps one group per channel)."""
        if self.depthwise and kept_in != kept_out:
            raise EdgeCompressError(f"a depthwise conv keeps as many inputs as outputs; got {kept_in} and {kept_out}")
        shape = list(self.input_shape)
        shape[1 if self.op == "conv" else -1] = kept_in
        return replace(self, in_channels=kept_in, out_channels=kept_out, input_shape=tuple(shape),
                       groups=kept_in if self.depthwise else self.groups)

    def record(self) -> dict[str, Any]:
        """JSON-ready fields (the cache key of a table)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> LayerShape:
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in record.items()})

    def __str__(self) -> str:
        if self.op == "linear":
            return f"linear {self.in_channels}->{self.out_channels} on {'x'.join(map(str, self.input_shape))}"
        kind = "dw" if self.depthwise else f"g{self.groups} " if self.groups > 1 else ""
        return (f"{kind}conv {'x'.join(map(str, self.kernel))}/{'x'.join(map(str, self.stride))} "
                f"{self.in_channels}->{self.out_channels} at {'x'.join(map(str, self.input_shape[2:]))}")


def _pads(layer: nn.modules.conv._ConvNd) -> tuple[int, ...]:
    """Explicit begin/end pads of a conv (``padding="same"`` resolved as torch pads it: the extra one at the end)."""
    if layer.padding == "valid":
        return (0,) * (2 * len(layer.kernel_size))
    if layer.padding == "same":
        total = [d * (k - 1) for d, k in zip(layer.dilation, layer.kernel_size)]
        return tuple(t // 2 for t in total) + tuple(t - t // 2 for t in total)
    return tuple(layer.padding) * 2


def layer_shape(layer: nn.Module, input_shape: tuple[int, ...]) -> LayerShape | None:
    """The shape of one call of a conv or linear on an input of ``input_shape``; None for other layers (transposed convs included)."""
    if isinstance(layer, nn.Linear):
        return LayerShape("linear", layer.in_features, layer.out_features, tuple(input_shape), bias=layer.bias is not None)
    if isinstance(layer, nn.modules.conv._ConvNd) and not layer.transposed:
        return LayerShape("conv", layer.in_channels, layer.out_channels, tuple(input_shape), tuple(layer.kernel_size), tuple(layer.stride),
                          _pads(layer), tuple(layer.dilation), layer.groups, layer.bias is not None)
    return None


def layer_shapes(model: nn.Module, example_input: torch.Tensor) -> dict[str, tuple[LayerShape, ...]]:
    """Every conv and linear of ``model`` that runs on ``example_input``: its module name and the shape of each
    call (a layer shared between inputs of several sizes has several), in the order they ran."""
    calls: dict[str, list[LayerShape]] = {}
    names = {module: name for name, module in model.named_modules()}

    def record(module: nn.Module, inputs: tuple) -> None:
        if inputs and isinstance(inputs[0], torch.Tensor) and (shape := layer_shape(module, tuple(inputs[0].shape))) is not None:
            calls.setdefault(names[module], []).append(shape)

    handles = [module.register_forward_pre_hook(record) for module in names if layer_shape(module, ()) is not None]
    try:
        with evaluating(model):
            model(example_input)
    finally:
        for handle in handles:
            handle.remove()
    return {name: tuple(shapes) for name, shapes in calls.items()}


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
