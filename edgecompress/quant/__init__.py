"""Stage "qat": int8 fake-quant modules, calibrators, BN folding and model preparation for QAT."""

from .calibrators import CALIBRATORS, EntropyCalibrator, HistogramCalibrator, MaxCalibrator, MseCalibrator, PercentileCalibrator, make_calibrator
from .fold import conv_bn_pairs, fold_batchnorm
from .modules import QUANT_MODULES, QuantConv2d, QuantLinear
from .quantize import calibrate, quantize_model, quantizers
from .quantizer import QuantMode, TensorQuantizer

__all__ = [
    "CALIBRATORS", "EntropyCalibrator", "HistogramCalibrator", "MaxCalibrator", "MseCalibrator", "PercentileCalibrator",
    "make_calibrator", "conv_bn_pairs", "fold_batchnorm", "QUANT_MODULES", "QuantConv2d", "QuantLinear",
    "calibrate", "quantize_model", "quantizers", "QuantMode", "TensorQuantizer",
]
