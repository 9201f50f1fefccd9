"""Turn an exported ONNX into what runs on a target, with the builder the target names (``Target.builder``).

- ``onnxruntime``: an onnxruntime-optimised model (runs here);
- ``tensorrt``: a serialized TensorRT engine when this machine has the target's GPU and TensorRT, otherwise a
  deployment bundle with the ONNX and the exact build/profile commands (a Jetson, usually).

A new builder is one function registered with :func:`register_builder`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from ..artifacts import atomic_path
from ..errors import EdgeCompressError
from ..export.qdq import qdq_summary
from .bundle import write_bundle
from .target import Target
from .tensorrt_build import build_with_tensorrt, tensorrt_version, why_not_local
from .trtexec import check_precision, static_shapes, trtexec_command

EngineKind = Literal["engine", "bundle", "onnxruntime"]


@dataclass
class EngineResult:
    """What the engine stage wrote for one target."""

    kind: EngineKind
    target: str
    precision: str
    paths: dict[str, Path]
    command: list[str] = field(default_factory=list)  # the trtexec build command (empty for onnxruntime)
    notes: list[str] = field(default_factory=list)


def _check_onnx_matches(target: Target, onnx_path: Path, precision: str) -> None:
    """A Q/DQ model must go with int8 and a float model with fp16/fp32; mixing them fails late on the device."""
    summary = qdq_summary(onnx_path)
    qdq = summary.quantize_linear + summary.dequantize_linear
    if precision == "int8" and qdq == 0:
        raise EdgeCompressError(
            f"{onnx_path} has no Q/DQ nodes, so it cannot build in int8 (explicit quantization only); "
            "export the QAT model, or use --precision fp16"
        )
    if precision != "int8" and qdq and target.kind != "cpu":
        raise EdgeCompressError(
            f"{onnx_path} has {qdq} Q/DQ nodes but precision is {precision}; export the float model for "
            f"{target.name}" + ("" if target.int8 else f" ({target.gpu_arch} has no int8, Q/DQ fails to build)")
        )


def _build_onnxruntime(target: Target, onnx_path: Path, out_dir: Path, precision: str) -> EngineResult:
    """Let onnxruntime apply its graph optimisations once and save the result, so sessions start faster."""
    import onnxruntime as ort

    optimised = out_dir / f"model_{precision}.ort.onnx"
    options = ort.SessionOptions()
    # EXTENDED fuses nodes for the CPU provider; ALL would add hardware-specific layouts we should not save.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    with atomic_path(optimised) as tmp:
        options.optimized_model_filepath = str(tmp)
        ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    ort.InferenceSession(str(optimised), providers=["CPUExecutionProvider"])  # the saved model must load
    return EngineResult(
        kind="onnxruntime", target=target.name, precision=precision, paths={"model": optimised},
        notes=[f"onnxruntime {ort.__version__} ORT_ENABLE_EXTENDED graph optimisations for the CPU provider"],
    )


def _build_gpu(
    target: Target, onnx_path: Path, out_dir: Path, precision: str, dla_core: int | None = None
) -> EngineResult:
    """Build the engine here when this machine is the target's GPU; otherwise write the deployment bundle."""
    reason = why_not_local(target)
    if reason is None and dla_core is None:
        engine = build_with_tensorrt(target, onnx_path, out_dir / f"model_{precision}.engine", precision=precision)
        return EngineResult(
            kind="engine", target=target.name, precision=precision, paths={"engine": engine},
            command=trtexec_command(target, onnx_path, engine, precision=precision, shapes=static_shapes(onnx_path)),
            notes=[f"built here with TensorRT {tensorrt_version()} on {target.gpu_arch}"],
        )
    reason = reason or "DLA engines are built on the device (this machine has no DLA)."
    paths, command = write_bundle(target, onnx_path, out_dir, precision=precision, reason=reason, dla_core=dla_core)
    return EngineResult(
        kind="bundle", target=target.name, precision=precision, paths=paths, command=command, notes=[reason]
    )


Builder = Callable[..., EngineResult]
BUILDERS: dict[str, Builder] = {"onnxruntime": _build_onnxruntime, "tensorrt": _build_gpu}


def register_builder(name: str, builder: Builder) -> Builder:
    """Make ``builder(target, onnx_path, out_dir, precision, **options)`` the builder of targets with ``builder=name``."""
    BUILDERS[name] = builder
    return builder


def build_engine(
    target: Target,
    onnx_path: str | Path,
    out_dir: str | Path,
    *,
    precision: str | None = None,
    dla_core: int | None = None,
) -> EngineResult:
    """Produce the target's deployable artifact from ``onnx_path`` into ``out_dir``.

    ``precision`` defaults to the target's best (int8, or fp16 on GPUs without fast int8).
    """
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    if not onnx_path.is_file():
        raise EdgeCompressError(f"ONNX file not found: {onnx_path}; run the export stage first")
    precision = precision or target.precision
    check_precision(target, precision)
    _check_onnx_matches(target, onnx_path, precision)
    if dla_core is not None and not 0 <= dla_core < target.dla_cores:
        raise EdgeCompressError(f"{target.name} has {target.dla_cores} DLA core(s); drop --dla-core or pick a DLA target")
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = {"dla_core": dla_core} if dla_core is not None else {}
    if target.builder not in BUILDERS:
        raise EdgeCompressError(f"target {target.name} names builder {target.builder!r}, which is not registered; choose one of {', '.join(BUILDERS)}")
    return BUILDERS[target.builder](target, onnx_path, out_dir, precision, **extra)
