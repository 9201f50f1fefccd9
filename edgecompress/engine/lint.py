"""ONNX lint: check a graph against the target TensorRT's ONNX parser (its ops) and explicit-quantization rules, without TensorRT.

The rules live in :data:`~edgecompress.engine.lint_rules.RULES`; one marked ``tensorrt_only`` is
skipped for targets without TensorRT (the CPU, where onnxruntime accepts uint8 and asymmetric Q/DQ).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

from .target import Target
from ..errors import EdgeCompressError
from .lint_rules import RULES, SEVERITY_ORDER, Finding, Graph


@dataclass
class LintReport:
    """All findings of :func:`check_onnx` for one file and target."""

    path: str
    target: str
    tensorrt: str | None
    opset: int
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        """No errors: the target should parse and build this graph (in int8 where it has Q/DQ)."""
        return not self.errors

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok, "errors": len(self.errors), "warnings": len(self.warnings)}


def check_onnx(path: str | os.PathLike, target: Target) -> LintReport:
    """Lint the ONNX file at ``path`` for ``target`` (look one up with :func:`edgecompress.targets.get_target`)."""
    resolved = target
    path = Path(path)
    if not path.is_file():
        raise EdgeCompressError(f"ONNX file not found: {path}; export the model first (edgecompress quantize --out DIR writes one)")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError and others for non-ONNX files
        raise EdgeCompressError(f"{path} is not an ONNX model ({type(exc).__name__}); pass a .onnx file written by export_onnx") from None
    if not model.graph.node:
        raise EdgeCompressError(f"{path} holds no ONNX graph nodes; pass a .onnx file written by export_onnx")
    graph = Graph(model)
    findings = [f for rule in RULES.values() if resolved.tensorrt or not rule.tensorrt_only for f in rule.check(graph, resolved)]
    findings.sort(key=lambda f: SEVERITY_ORDER[f.severity])
    return LintReport(path=str(path), target=resolved.name, tensorrt=resolved.tensorrt, opset=graph.opset, findings=findings)
