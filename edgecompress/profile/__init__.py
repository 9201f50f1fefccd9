"""Stage "profile": latency and memory of exported models with onnxruntime, each in a fresh process."""

from .latency import LatencyStats, compare_models, profile_onnx, stats_table

__all__ = ["LatencyStats", "compare_models", "profile_onnx", "stats_table"]
