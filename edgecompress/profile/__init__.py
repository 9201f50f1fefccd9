"""Latency and peak memory of models on this machine, each timed in a fresh process, in any registered runtime;
latency reports (schema ``edgecompress.latency/1``) from every source; per-layer latency tables for latency-budget pruning;
per-layer times of a whole model from the runtime's own profiler."""

from .layer_latency import LatencyTables, LayerTable, measure_latency_tables, measure_layer_table
from .layer_profile import LayerProfile, LayerTime, profile_layers
from .layer_shapes import LayerShape, layer_shapes
from .latency import LatencyStats, compare_models, profile_onnx, run_worker, stats_table
from .latency_report import SCHEMA_ID, LatencyReport, latency_stats, read_json, report_tables, validate_report
from .measure import FORMATS, profile_model
from .runtimes import RUNTIMES, Runtime, get_runtime, register_runtime

__all__ = ["FORMATS", "LatencyReport", "LatencyStats", "LatencyTables", "LayerProfile", "LayerShape", "LayerTable", "LayerTime", "layer_shapes", "measure_latency_tables",
           "measure_layer_table", "RUNTIMES", "Runtime", "SCHEMA_ID", "compare_models", "get_runtime",
           "latency_stats", "profile_layers", "profile_model", "profile_onnx", "read_json", "register_runtime", "report_tables", "run_worker", "stats_table",
           "validate_report"]
