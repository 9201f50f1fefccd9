"""Stage "export": ONNX export (float or int8 Q/DQ), simplification, verification and inspection."""

from .qdq import QdqSummary, openvino_conv_precisions, ort_optimized_int8_ops, ort_optimized_ops, qdq_summary, qdq_summary_of
from .onnx import convert_fp16, export_onnx
from .verify import VerifyReport, verify_onnx

__all__ = ["QdqSummary", "openvino_conv_precisions", "ort_optimized_int8_ops", "ort_optimized_ops", "qdq_summary", "qdq_summary_of",
           "convert_fp16", "export_onnx", "VerifyReport", "verify_onnx"]
