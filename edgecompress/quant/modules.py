"""Drop-in quantized layers: nn.Conv2d / nn.Linear with an input and a weight quantizer.

They subclass the torch layers, so state-dict keys, ``isinstance`` checks and pruning code keep
working; the quantizers add ``input_quantizer.amax`` and ``weight_quantizer.amax`` buffers. The
input is quantized per tensor, the weight per output channel (axis 0, narrow range [-127, 127]),
as TensorRT expects. When the input tensor is quantized once for several consumers (see
:mod:`.placement`), the layer's ``input_quantizer`` is ``nn.Identity`` and it reads the shared Q/DQ.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .quantizer import TensorQuantizer


class QuantConv2d(nn.Conv2d):
    """nn.Conv2d whose input and weight are fake-quantized to int8."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.input_quantizer = TensorQuantizer()
        self.weight_quantizer = TensorQuantizer(axis=0, channels=self.out_channels, narrow_range=True)

    @classmethod
    def from_float(cls, conv: nn.Conv2d) -> "QuantConv2d":
        """A QuantConv2d with the hyper-parameters and (shared) parameters of ``conv``."""
        quant = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
            conv.groups, conv.bias is not None, conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype,
        )
        quant.weight, quant.bias = conv.weight, conv.bias
        quant.train(conv.training)
        return quant

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self.input_quantizer(x), self.weight_quantizer(self.weight), self.bias)


class QuantLinear(nn.Linear):
    """nn.Linear whose input and weight are fake-quantized to int8."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.input_quantizer = TensorQuantizer()
        self.weight_quantizer = TensorQuantizer(axis=0, channels=self.out_features, narrow_range=True)

    @classmethod
    def from_float(cls, linear: nn.Linear) -> "QuantLinear":
        """A QuantLinear with the (shared) parameters of ``linear``."""
        quant = cls(linear.in_features, linear.out_features, linear.bias is not None, device=linear.weight.device, dtype=linear.weight.dtype)
        quant.weight, quant.bias = linear.weight, linear.bias
        quant.train(linear.training)
        return quant

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.input_quantizer(x), self.weight_quantizer(self.weight), self.bias)


QUANT_MODULES: dict[type[nn.Module], type[nn.Module]] = {nn.Conv2d: QuantConv2d, nn.Linear: QuantLinear}
