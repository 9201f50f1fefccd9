"""int8 fake quantization: quantized twins of float layers, calibrators, BN folding, quantizer placement and calibration.

``quantize_model`` swaps every layer that has a registered twin (``register_quant_module``) for it
and places activation quantizers; ``calibrate`` sets their ranges from a forward loop or batches.
"""

from .calibrators import CALIBRATORS, EntropyCalibrator, HistogramCalibrator, MaxCalibrator, MseCalibrator, PercentileCalibrator, make_calibrator
from .fold import conv_bn_pairs, fold_batchnorm
from .forward_loop import CalibrationData, ForwardLoop, batches_loop
from .modules import QUANT_MODULES, QuantConv2d, QuantLinear, quant_module_for, register_quant_module
from .placement import BACKENDS, place_activation_quantizers
from .quantize import calibrate, default_float_layers, learned_range_groups, quantize_model, quantizers
from .quantizer import QuantMode, TensorQuantizer
from .api import quantize  # the function shadows the .quantize submodule name; import from .quantize explicitly

__all__ = [
    "CALIBRATORS", "EntropyCalibrator", "HistogramCalibrator", "MaxCalibrator", "MseCalibrator", "PercentileCalibrator",
    "make_calibrator", "conv_bn_pairs", "fold_batchnorm", "CalibrationData", "ForwardLoop", "batches_loop",
    "QUANT_MODULES", "QuantConv2d", "QuantLinear", "quant_module_for", "register_quant_module", "BACKENDS", "place_activation_quantizers",
    "calibrate", "default_float_layers", "learned_range_groups", "quantize_model", "quantizers", "QuantMode", "TensorQuantizer", "quantize",
]
