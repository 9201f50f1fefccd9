"""TensorQuantizer: int8 symmetric fake quantization of one tensor, per tensor or per output channel.

Fake quantization uses ``torch.fake_quantize_per_{tensor,channel}_affine`` so that the TorchScript
ONNX exporter writes QuantizeLinear/DequantizeLinear pairs, and autograd gets the clipped
straight-through estimator (gradient 1 inside the range, 0 outside).

Scale is ``amax / 127`` with zero point 0 and the int8 range [-128, 127] that ONNX QuantizeLinear
uses, so PyTorch and ONNX Runtime round and saturate alike. Weights are effectively narrow range
[-127, 127]: their ``amax`` is the per-channel max of |w|, so no weight reaches -128.
"""

from __future__ import annotations

from enum import Enum
from typing import Callable

import torch
from torch import Tensor, nn

from ..errors import EdgeCompressError
from .calibrators import INT8_BOUND, Calibrator

MIN_AMAX = 1e-6  # floor for amax: an all-zero channel (e.g. pruned) still gets a valid positive scale


class QuantMode(str, Enum):
    """What a quantizer does in ``forward``."""

    DISABLED = "disabled"  # identity
    CALIBRATING = "calibrating"  # identity, and the calibrator records statistics
    QUANTIZING = "quantizing"  # fake quantization with the stored amax


class TensorQuantizer(nn.Module):
    """Quantizes a tensor to int8 and back; ``axis=0`` for per-output-channel weights, None for per-tensor."""

    def __init__(self, axis: int | None = None, channels: int = 1):
        super().__init__()
        if axis is not None and channels < 1:
            raise EdgeCompressError(f"a per-channel quantizer needs channels >= 1, got {channels}")
        self.axis = axis
        self.mode = QuantMode.DISABLED
        self.calibrator: Calibrator | None = None
        self._mode_before_calibration = QuantMode.DISABLED
        self.register_buffer("amax", torch.ones(channels) if axis is not None else torch.tensor(1.0))

    def extra_repr(self) -> str:
        granularity = "per-tensor" if self.axis is None else f"per-channel axis={self.axis}"
        return f"int8 {granularity}, mode={self.mode.value}"

    def begin_calibration(self, calibrator: Calibrator) -> None:
        """Pass tensors through unchanged while ``calibrator`` records them."""
        self.calibrator, self._mode_before_calibration = calibrator, self.mode
        self.mode = QuantMode.CALIBRATING

    def abort_calibration(self) -> None:
        """Drop the calibrator and return to the mode held before :meth:`begin_calibration`."""
        self.mode, self.calibrator = self._mode_before_calibration, None

    def end_calibration(self) -> Tensor:
        """Store the calibrator's amax, drop the calibrator and start fake-quantizing; returns amax."""
        if self.calibrator is None:
            raise EdgeCompressError("end_calibration called before begin_calibration; call begin_calibration first")
        self.set_amax(self.calibrator.compute_amax())
        self.calibrator = None
        return self.amax

    def set_amax(self, amax: Tensor) -> None:
        """Fix the clipping range (floored at MIN_AMAX) and switch to quantizing."""
        amax = torch.as_tensor(amax, dtype=torch.float32).reshape(self.amax.shape)
        self.amax.copy_(amax.clamp(min=MIN_AMAX).to(self.amax.device))
        self.mode = QuantMode.QUANTIZING

    def forward(self, x: Tensor) -> Tensor:
        return _FORWARD[self.mode](self, x)

    def _collect(self, x: Tensor) -> Tensor:
        self.calibrator.collect(x)
        return x

    def _fake_quantize(self, x: Tensor) -> Tensor:
        scale = self.amax / INT8_BOUND
        if self.axis is None:
            zero_point = torch.zeros((), dtype=torch.int32, device=x.device)
            return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, -INT8_BOUND - 1, INT8_BOUND)
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(x, scale, zero_point, self.axis, -INT8_BOUND - 1, INT8_BOUND)


_FORWARD: dict[QuantMode, Callable[[TensorQuantizer, Tensor], Tensor]] = {
    QuantMode.DISABLED: lambda quantizer, x: x,
    QuantMode.CALIBRATING: TensorQuantizer._collect,
    QuantMode.QUANTIZING: TensorQuantizer._fake_quantize,
}
