"""TensorQuantizer: int8 symmetric fake quantization of one tensor, per tensor or per output channel.

Fake quantization uses ``torch.fake_quantize_per_{tensor,channel}_affine`` so that the TorchScript
ONNX exporter writes QuantizeLinear/DequantizeLinear pairs, and autograd gets the clipped
straight-through estimator (gradient 1 inside the range, 0 outside).

Scale is ``amax / 127`` with zero point 0 and the int8 range [-128, 127] that ONNX QuantizeLinear
uses, so PyTorch and ONNX Runtime round and saturate alike. Weight quantizers are narrow range
[-127, 127] (``narrow_range=True``): the weight is clipped to [-amax, amax] before rounding, so no
weight reaches -128 even when QAT moves it past its calibrated range (the ONNX export stores the
int8 weights clipped to [-127, 127] instead, the same values).

A weight quantizer can use fewer levels (:meth:`TensorQuantizer.set_bits`): 7-bit weights (scale
``amax / 63``, codes in [-63, 63], still stored as int8) are the known remedy for x86 CPUs without
VNNI, whose int8 kernels sum two products in 16 bits and saturate with full 8-bit weights
(:func:`~edgecompress.profile.cpu.int8_dot_products_saturate`): 255 x 63 x 2 stays below 32767.

An activation quantizer built with ``uint8=True`` (onnxruntime's scheme: its x86 kernels are
uint8 x int8) stores uint8, and ``amax`` is the top of its range: scale ``amax / (255 - zero_point)``.
A tensor calibration saw non-negative (after ReLU) gets zero point 0 and scale ``amax / 255``: the
zero point is the range's minimum, so onnxruntime drops the ReLU and fuses the conv into
QLinearConv. A tensor that went negative is asymmetric, as onnxruntime's own quantizer does it: the
range is the observed [min, max], each end clipped to the calibrated magnitude ``amax``, and the
zero point is where 0 falls on the 256 levels.

A quantizer built with ``fixed_amax`` quantizes a tensor whose range is known in advance (a sigmoid's
output, in [0, 1]): :func:`~edgecompress.quant.calibrate` sets that range without measuring, and QAT does
not learn it.

:meth:`TensorQuantizer.learn_amax` turns a per-tensor ``amax`` into a Parameter trained with the
LSQ gradient (Esser et al., 2020; gradient scaled by 1 / sqrt(numel * qmax)) during QAT.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Callable

import torch
from torch import Tensor, nn

from ..errors import EdgeCompressError
from .calibrators import INT8_BOUND, UINT8_BOUND, Calibrator

MIN_AMAX = 1e-6  # floor for amax: an all-zero channel (e.g. pruned) still gets a valid positive scale


class QuantMode(str, Enum):
    """What a quantizer does in ``forward``."""

    DISABLED = "disabled"  # identity
    CALIBRATING = "calibrating"  # identity, and the calibrator records statistics
    QUANTIZING = "quantizing"  # fake quantization with the stored amax


class TensorQuantizer(nn.Module):
    """Quantizes a tensor to int8 and back; ``axis=0`` for per-output-channel weights, None for per-tensor."""

    # Class-level defaults, so quantizers pickled before these options existed (older run folders) still load and run.
    narrow_range = False
    uint8 = False
    zero_point = 0
    kept_float = False  # set by keep_float(): calibration leaves it disabled
    bits = 8  # of a weight quantizer: codes in [-(2**(bits-1) - 1), 2**(bits-1) - 1]
    fixed_amax: float | None = None  # a range known in advance: calibration sets it without measuring

    def __init__(self, axis: int | None = None, channels: int = 1, *, narrow_range: bool = False, uint8: bool = False,
                 fixed_amax: float | None = None):
        super().__init__()
        if axis is not None and channels < 1:
            raise EdgeCompressError(f"a per-channel quantizer needs channels >= 1, got {channels}")
        if axis is not None and (uint8 or fixed_amax is not None):
            raise EdgeCompressError("uint8 and fixed_amax are for per-tensor activation quantizers; quantize weights per channel in int8")
        self.axis = axis
        self.narrow_range = narrow_range
        self.uint8 = uint8
        self.fixed_amax = fixed_amax
        self.zero_point = 0  # of a uint8 quantizer, chosen by calibration
        self.observed_min, self.observed_max = float("inf"), float("-inf")
        self.mode = QuantMode.DISABLED
        self.calibrator: Calibrator | None = None
        self._mode_before_calibration = QuantMode.DISABLED
        self.register_buffer("amax", torch.ones(channels) if axis is not None else torch.tensor(1.0))

    def extra_repr(self) -> str:
        granularity = "per-tensor" if self.axis is None else f"per-channel axis={self.axis}"
        fixed = "" if self.fixed_amax is None else f", fixed amax={self.fixed_amax:g}"
        kind = "uint8" if self.uint8 else "int8" if self.bits == 8 else f"int{self.bits} (int8 storage)"
        return f"{kind} {granularity}{fixed}, mode={self.mode.value}"

    @property
    def bound(self) -> int:
        """Largest magnitude of a weight code: 127 for 8 bits, 63 for 7."""
        return 2 ** (self.bits - 1) - 1

    def set_bits(self, bits: int) -> None:
        """Quantize this per-channel weight quantizer to ``bits`` (2 to 8) instead of 8; the codes stay int8 in ONNX."""
        if self.axis is None:
            raise EdgeCompressError("fewer bits are for per-channel weight quantizers; activations stay 8-bit")
        if not 2 <= bits <= 8:
            raise EdgeCompressError(f"weight bits must be 2 to 8 (int8 storage), got {bits}; use 7 for x86 CPUs without VNNI, else 8")
        self.bits = bits

    def keep_float(self) -> None:
        """Disable this quantizer for good: :func:`~edgecompress.quant.calibrate` no longer turns it on."""
        self.kept_float, self.mode = True, QuantMode.DISABLED

    def begin_calibration(self, calibrator: Calibrator) -> None:
        """Pass tensors through unchanged while ``calibrator`` records them."""
        self.calibrator, self._mode_before_calibration = calibrator, self.mode
        self.observed_min, self.observed_max = float("inf"), float("-inf")
        self.mode = QuantMode.CALIBRATING

    def abort_calibration(self) -> None:
        """Drop the calibrator and return to the mode held before :meth:`begin_calibration`."""
        self.mode, self.calibrator = self._mode_before_calibration, None

    def end_calibration(self) -> Tensor:
        """Store the calibrator's amax, drop the calibrator and start fake-quantizing; returns amax."""
        if self.calibrator is None:
            raise EdgeCompressError("end_calibration called before begin_calibration; call begin_calibration first")
        signed = self.observed_min < 0.0
        amax = self.calibrator.compute_amax(unsigned=self.uint8 and not signed)
        self.zero_point = 0
        if self.uint8 and signed:
            amax = self._set_asymmetric_range(float(amax))
        self.set_amax(amax)
        self.calibrator = None
        return self.amax

    def _set_asymmetric_range(self, amax: float) -> float:
        """Zero point for the observed [min, max] clipped to [-amax, amax]; returns the new top of the range."""
        low, high = max(self.observed_min, -amax), max(min(self.observed_max, amax), 0.0)
        scale = max(high - low, MIN_AMAX) / UINT8_BOUND
        self.zero_point = min(round(-low / scale), UINT8_BOUND - 1)  # at least one level above zero
        return (UINT8_BOUND - self.zero_point) * scale

    @torch.no_grad()
    def set_amax(self, amax: Tensor) -> None:
        """Fix the clipping range (floored at MIN_AMAX) and switch to quantizing."""
        amax = torch.as_tensor(amax, dtype=torch.float32).reshape(self.amax.shape)
        self.amax.copy_(amax.clamp(min=MIN_AMAX).to(self.amax.device))
        self.mode = QuantMode.QUANTIZING

    def learn_amax(self) -> None:
        """Make ``amax`` a trainable Parameter (same state-dict key); only for per-tensor quantizers."""
        if self.axis is not None or self.fixed_amax is not None:
            raise EdgeCompressError("learnable amax is for calibrated activation quantizers; weights and fixed ranges keep theirs")
        if not isinstance(self.amax, nn.Parameter):
            amax = self._buffers.pop("amax")
            self.amax = nn.Parameter(amax.clone())

    def forward(self, x: Tensor) -> Tensor:
        return _FORWARD[self.mode](self, x)

    def _collect(self, x: Tensor) -> Tensor:
        self.calibrator.collect(x)
        low, high = torch.aminmax(x.detach())
        self.observed_min, self.observed_max = min(self.observed_min, float(low)), max(self.observed_max, float(high))
        return x

    def _fake_quantize(self, x: Tensor) -> Tensor:
        if self.axis is None:
            zero_point = torch.zeros((), dtype=torch.int32, device=x.device)
            low, high = (0, UINT8_BOUND) if self.uint8 else (-INT8_BOUND - 1, INT8_BOUND)
            scale = self.amax / (UINT8_BOUND - self.zero_point if self.uint8 else INT8_BOUND)
            zero_point = zero_point + self.zero_point
            if isinstance(self.amax, nn.Parameter) and torch.is_grad_enabled() and not torch.onnx.is_in_onnx_export():
                grad_factor = 1.0 / math.sqrt(x.numel() * high)
                return torch._fake_quantize_learnable_per_tensor_affine(x, scale.reshape(1), zero_point.float().reshape(1), low, high, grad_factor)
            return torch.fake_quantize_per_tensor_affine(x, scale.detach(), zero_point, low, high)
        scale = self.amax / self.bound
        if self.narrow_range and not torch.onnx.is_in_onnx_export():  # export clips the int8 weights instead
            bound = self.amax.reshape([-1 if dim == self.axis else 1 for dim in range(x.dim())])
            x = torch.maximum(torch.minimum(x, bound), -bound)
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
        # ONNX QuantizeLinear has the int8 range only: export writes it, and clips the stored codes to the bound
        low, high = (-INT8_BOUND - 1, INT8_BOUND) if torch.onnx.is_in_onnx_export() else (-self.bound - 1, self.bound)
        return torch.fake_quantize_per_channel_affine(x, scale, zero_point, self.axis, low, high)


_FORWARD: dict[QuantMode, Callable[[TensorQuantizer, Tensor], Tensor]] = {
    QuantMode.DISABLED: lambda quantizer, x: x,
    QuantMode.CALIBRATING: TensorQuantizer._collect,
    QuantMode.QUANTIZING: TensorQuantizer._fake_quantize,
}
