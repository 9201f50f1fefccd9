"""The shapes of a model's convs and linears as they run (from one forward pass on the example input).

A latency table (:mod:`.layer_latency`) times one layer shape alone at several kept-channel counts, as a
one-layer ONNX model built by :mod:`.layer_onnx`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from ..errors import EdgeCompressError
from ..helpers import evaluating

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
