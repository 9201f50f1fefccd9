"""Deployable artifacts for a target: TensorRT engines, trtexec recipes, deployment bundles, onnxruntime models,
the lint that checks an ONNX graph against the target's TensorRT before any build, the int8 proof from an engine's
layer information, the Python engine runner with trtexec's exports read into the latency report, and the latency
bundle that measures per-layer TensorRT latency tables on the device."""

from importlib import import_module

# Public name -> module defining it, loaded on first use: the board table (``Target``) is read at every
# start-up and must not pull onnx, onnxslim and TensorRT's wrappers in with it.
_API = {
    "BUILDERS": ".build",
    "EngineResult": ".build",
    "build_engine": ".build",
    "register_builder": ".build",
    "LintReport": ".lint",
    "check_onnx": ".lint",
    "BUFFER_BACKENDS": ".runner",
    "EngineRunner": ".runner",
    "register_buffer_backend": ".runner",
    "select_backend": ".runner",
    "time_torch_module": ".runner",
    "Target": ".target",
    "RECIPES": ".trtexec",
    "profile_command": ".trtexec",
    "trtexec_command": ".trtexec",
    "TrtexecReportError": ".trtexec_reports",
    "latency_report_from_trtexec": ".trtexec_reports",
    "import_layer_latency": ".latency_bundle",
    "write_latency_bundle": ".latency_bundle",
}

__all__ = [
    "BUFFER_BACKENDS",
    "BUILDERS",
    "EngineResult",
    "EngineRunner",
    "LintReport",
    "RECIPES",
    "Target",
    "build_engine",
    "check_onnx",
    "import_layer_latency",
    "profile_command",
    "TrtexecReportError",
    "latency_report_from_trtexec",
    "register_buffer_backend",
    "register_builder",
    "select_backend",
    "time_torch_module",
    "trtexec_command",
    "write_latency_bundle",
]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'edgecompress.engine' has no attribute {name!r}")
    return getattr(import_module(_API[name], __name__), name)
