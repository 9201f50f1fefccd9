"""Latency and peak memory of ONNX models on this machine's CPU, each timed in a fresh process, in any registered runtime."""

from .latency import LatencyStats, compare_models, profile_onnx, stats_table
from .runtimes import RUNTIMES, Runtime, get_runtime, register_runtime

__all__ = ["LatencyStats", "RUNTIMES", "Runtime", "compare_models", "get_runtime", "profile_onnx", "register_runtime", "stats_table"]
