"""Deployable artifacts for a target: TensorRT engines, trtexec recipes, deployment bundles, onnxruntime models,
the lint that checks an ONNX graph against the target's TensorRT before any build, the int8 proof from an engine's
layer information, and the Python engine runner with trtexec's exports read into the latency report."""

from .build import BUILDERS, EngineResult, build_engine, register_builder
from .lint import LintReport, check_onnx
from .runner import BUFFER_BACKENDS, EngineRunner, register_buffer_backend, select_backend, time_torch_module
from .target import Target
from .trtexec import RECIPES, profile_command, trtexec_command
from .trtexec_reports import TrtexecReportError, latency_report_from_trtexec

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
    "profile_command",
    "TrtexecReportError",
    "latency_report_from_trtexec",
    "register_buffer_backend",
    "register_builder",
    "select_backend",
    "time_torch_module",
    "trtexec_command",
]
