"""Stage "qat": int8 fake-quant modules, calibrators, BN folding and model preparation for QAT."""

from .calibrators import CALIBRATORS, EntropyCalibrator, HistogramCalibrator, MaxCalibrator, MseCalibrator, PercentileCalibrator, make_calibrator
from .fold import conv_bn_pairs, fold_batchnorm
from .modules import QUANT_MODULES, QuantConv2d, QuantLinear
from .placement import BACKEND_FOR_TARGET_KIND, BACKENDS, place_activation_quantizers
from .quantize import calibrate, quantize_model, quantizers
from .quantizer import QuantMode, TensorQuantizer
from .api import quantize  # the function shadows the .quantize submodule name; import from .quantize explicitly

__all__ = [
    "CALIBRATORS", "EntropyCalibrator", "HistogramCalibrator", "MaxCalibrator", "MseCalibrator", "PercentileCalibrator",
    "make_calibrator", "conv_bn_pairs", "fold_batchnorm", "QUANT_MODULES", "QuantConv2d", "QuantLinear", "BACKEND_FOR_TARGET_KIND", "BACKENDS", "place_activation_quantizers",
    "calibrate", "quantize_model", "quantizers", "QuantMode", "TensorQuantizer",
]
