"""Drop-in quantized layers (nn.Conv2d / nn.Linear with an input and a weight quantizer) and the
registry that maps a float layer type to its quantized twin.

The twins subclass the torch layers, so state-dict keys, ``isinstance`` checks and pruning code keep
working; the quantizers add ``input_quantizer.amax`` and ``weight_quantizer.amax`` buffers. The
input is quantized per tensor, the weight per output channel (axis 0, narrow range [-127, 127]),
as TensorRT expects. When the input tensor is quantized once for several consumers (see
:mod:`.placement`), the layer's ``input_quantizer`` is ``nn.Identity`` and it reads the shared Q/DQ.

A twin registered with :func:`register_quant_module` is a module class with a ``from_float(layer)``
classmethod that returns the replacement, sharing the float layer's parameters; the replacement
has an ``input_quantizer`` (a :class:`TensorQuantizer` applied to its first input) and may have
more quantizers (``weight_quantizer``). The twin's ``forward`` replaces the layer's: subclasses of a
registered float type are quantized by their base's twin only when they inherit its ``forward``
(a ``class MyConv(nn.Conv2d)`` that only changes ``__init__`` gets a QuantConv2d). A subclass that
overrides ``forward`` is not matched, since the twin would drop its extra logic; register a twin
for it. (Model Optimizer instead converts the instance's class and keeps the subclass's forward;
twins here are built by ``from_float`` and pickle as plain classes.)
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import EdgeCompressError
from .quantizer import TensorQuantizer

QUANT_MODULES: dict[type[nn.Module], type[nn.Module]] = {}
"""Float layer type -> its quantized twin; fill it with :func:`register_quant_module`."""

QuantType = TypeVar("QuantType", bound=type)

# Subclasses of registered types whose owner reads their parameters without calling them: nn.MultiheadAttention's out_proj.
_NEVER_QUANTIZED: tuple[type[nn.Module], ...] = (nn.modules.linear.NonDynamicallyQuantizableLinear,)


def register_quant_module(float_type: type[nn.Module], quant_type: QuantType | None = None) -> QuantType | Callable[[QuantType], QuantType]:
    """Quantize layers of ``float_type`` (and subclasses inheriting its forward) with ``quant_type``.

    ``quant_type`` needs a ``from_float(layer)`` classmethod (see the module docstring). Called with
    ``float_type`` alone, it is a class decorator: ``@register_quant_module(nn.Conv1d)``. A later
    registration for the same ``float_type`` replaces the earlier one.
    """
    if quant_type is None:
        return lambda cls: register_quant_module(float_type, cls)
    for name, cls in (("float_type", float_type), ("quant_type", quant_type)):
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise EdgeCompressError(f"register_quant_module: {name} must be an nn.Module class, got {cls!r}")
    if not callable(getattr(quant_type, "from_float", None)):
        raise EdgeCompressError(f"{quant_type.__name__} has no from_float classmethod; add one that builds it from a {float_type.__name__}")
    if float_type in QUANT_MODULES.values():
        raise EdgeCompressError(f"{float_type.__name__} is a quantized twin itself; register the float layer type it replaces")
    QUANT_MODULES[float_type] = quant_type
    return quant_type


def is_quant_module(module: nn.Module) -> bool:
    """Whether ``module`` is an instance of a registered quantized twin."""
    return isinstance(module, tuple(QUANT_MODULES.values()))


def quant_module_for(module: nn.Module) -> type[nn.Module] | None:
    """The twin that quantizes ``module``: the registration of the most specific float type in its MRO.

    None when no base class is registered, when ``module`` is already a twin, or when its class
    overrides the ``forward`` of that registered base (the twin would drop the extra logic).
    """
    base = _registered_base(module)
    return QUANT_MODULES[base] if base is not None and type(module).forward is base.forward else None


def overrides_forward(module: nn.Module) -> bool:
    """Whether ``module`` subclasses a registered float type but overrides its ``forward``, so it stays float."""
    base = _registered_base(module)
    return base is not None and type(module).forward is not base.forward


def _registered_base(module: nn.Module) -> type[nn.Module] | None:
    if is_quant_module(module) or isinstance(module, _NEVER_QUANTIZED):
        return None
    return next((cls for cls in type(module).__mro__ if cls in QUANT_MODULES), None)


@register_quant_module(nn.Conv2d)
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


@register_quant_module(nn.Linear)
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

