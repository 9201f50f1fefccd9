"""Deployable artifacts for a target: TensorRT engines, trtexec recipes, deployment bundles, onnxruntime models,
and the lint that checks an ONNX graph against the target's TensorRT before any build."""

from .build import BUILDERS, EngineResult, build_engine, register_builder
from .lint import LintReport, check_onnx
from .target import Target
from .trtexec import RECIPES, profile_command, trtexec_command

__all__ = [
    "BUILDERS",
    "EngineResult",
    "LintReport",
    "RECIPES",
    "Target",
    "build_engine",
    "check_onnx",
    "profile_command",
    "register_builder",
    "trtexec_command",
]
