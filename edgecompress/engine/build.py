"""Turn an exported ONNX into what runs on a target, with the builder the target names (``Target.builder``).

- ``onnxruntime``: an onnxruntime-optimised model (runs here), and beside it an OpenVINO IR checked against it when
  the ``openvino`` package is installed;
- ``tensorrt``: a serialized TensorRT engine when this machine has the target's GPU and TensorRT (with its sidecar
  record, layer information and int8 proof), otherwise a deployment bundle with the ONNX and a script that builds,
  proves and profiles on the device (a Jetson, usually).

A new builder is one function registered with :func:`register_builder`; the options it takes are its keyword
parameters (``dla_core``, ``workspace_mib``, ``timing_cache``), and a target whose builder lacks one refuses it.
"""

from __future__ import annotations

import inspect
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from ..artifacts import atomic_path, write_text
from ..errors import EdgeCompressError
from ..export.qdq import qdq_summary
from . import int8_proof
from .bundle import write_bundle
from .openvino_ir import openvino_available, write_openvino_ir
from .qdq_nodes import qdq_nodes, write_qdq_nodes
from .target import Target
from .tensorrt_build import build_with_tensorrt, tensorrt_version, why_not_local
from .trtexec import check_dla_core, check_precision, static_shapes, trtexec_command

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
    """Let onnxruntime apply its graph optimisations once and save the result, so sessions start faster; write the
    OpenVINO IR beside it when openvino is installed."""
    import onnxruntime as ort

    optimised = out_dir / f"model_{precision}.ort.onnx"
    options = ort.SessionOptions()
    # EXTENDED fuses nodes for the CPU provider; ALL would add hardware-specific layouts we should not save.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    with atomic_path(optimised) as tmp:
        options.optimized_model_filepath = str(tmp)
        ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    ort.InferenceSession(str(optimised), providers=["CPUExecutionProvider"])  # the saved model must load
    paths = {"model": optimised}
    notes = [f"onnxruntime {ort.__version__} ORT_ENABLE_EXTENDED graph optimisations for the CPU provider"]
    if openvino_available():
        import openvino as ov

        seed = secrets.randbits(32)
        qdq = precision == "int8"
        paths["openvino"], worst = write_openvino_ir(onnx_path, out_dir / "openvino", f"model_{precision}", qdq=qdq, seed=seed)
        measure = "relative L2 error" if qdq else "max difference"
        notes.append(f"OpenVINO {ov.__version__} IR (weights uncompressed): loads on the CPU plugin and agrees with "
                     f"onnxruntime on random input (seed {seed}, {measure} {worst:.3g})")
    else:
        notes.append("OpenVINO IR skipped: the openvino package is not installed (pip install 'edgecompress[openvino]')")
    return EngineResult(kind="onnxruntime", target=target.name, precision=precision, paths=paths, notes=notes)


def _prove_int8(onnx_path: Path, layers: Path, out_dir: Path, dla: bool) -> Path:
    """Run the int8 proof on a locally built engine's layer information; refuse the engine when it fails."""
    import json

    report = int8_proof.prove(int8_proof.load_layers(str(layers)), qdq_nodes(onnx_path), dla=dla)
    path = write_text(out_dir / "int8_proof.json", json.dumps(report, indent=2) + "\n")
    if not report["ok"]:
        lines = [f"{o['node']} runs in {o['precision']} in layer '{o['layer']}' ({'; '.join(o['causes'])})"
                 for o in report["offenders"]] + [f"{name}: in no layer of the engine" for name in report["missing"]]
        raise EdgeCompressError(f"int8 proof failed ({path}): " + " | ".join(lines))
    return path


def _build_gpu(
    target: Target, onnx_path: Path, out_dir: Path, precision: str, dla_core: int | None = None,
    workspace_mib: int | None = None, timing_cache: Path | None = None,
) -> EngineResult:
    """Build the engine here when this machine is the target's GPU; otherwise write the deployment bundle."""
    reason = why_not_local(target)
    if reason is None:
        built = build_with_tensorrt(target, onnx_path, out_dir / f"model_{precision}.engine", precision=precision,
                                    workspace_mib=workspace_mib, dla_core=dla_core, timing_cache=timing_cache)
        paths = {"engine": built.engine, "record": built.record, "layers": built.layers,
                 "qdq_nodes": write_qdq_nodes(onnx_path, out_dir / "qdq_nodes.json"),
                 "int8_proof": _prove_int8(onnx_path, built.layers, out_dir, dla=dla_core is not None)}
        return EngineResult(
            kind="engine", target=target.name, precision=precision, paths=paths,
            command=trtexec_command(target, onnx_path, built.engine, precision=precision, shapes=static_shapes(onnx_path),
                                    workspace_mib=workspace_mib, dla_core=dla_core, timing_cache=built.timing_cache),
            notes=[f"built here with TensorRT {tensorrt_version()} on {target.gpu_arch}"
                   + ("; int8 proof passed" if precision == "int8" else ""), f"timing cache: {built.timing_cache}"],
        )
    if timing_cache is not None:
        raise EdgeCompressError(f"--timing-cache applies to an engine built here, and {reason[0].lower() + reason[1:]} "
                                "The bundle keeps its own cache per device in timing-cache/; drop --timing-cache")
    paths, command = write_bundle(target, onnx_path, out_dir, precision=precision, reason=reason, dla_core=dla_core,
                                  workspace_mib=workspace_mib)
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
    workspace_mib: int | None = None,
    timing_cache: str | Path | None = None,
) -> EngineResult:
    """Produce the target's deployable artifact from ``onnx_path`` into ``out_dir``.

    ``precision`` defaults to the target's best (int8, or fp16 on GPUs without fast int8); ``dla_core`` builds for
    that DLA core with GPU fallback; ``workspace_mib`` defaults to the target's (from its memory); ``timing_cache``
    defaults to this user's cache for the GPU and TensorRT release (engines built here only).
    """
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    if not onnx_path.is_file():
        raise EdgeCompressError(f"ONNX file not found: {onnx_path}; run the export stage first")
    precision = precision or target.precision
    check_precision(target, precision)
    _check_onnx_matches(target, onnx_path, precision)
    check_dla_core(target, dla_core)
    if workspace_mib is not None and workspace_mib < 1:
        raise EdgeCompressError(f"--workspace-mib must be a positive number of MiB (got {workspace_mib})")
    if target.builder not in BUILDERS:
        raise EdgeCompressError(f"target {target.name} names builder {target.builder!r}, which is not registered; choose one of {', '.join(BUILDERS)}")
    builder = BUILDERS[target.builder]
    options = {"dla_core": dla_core, "workspace_mib": workspace_mib,
               "timing_cache": Path(timing_cache) if timing_cache is not None else None}
    options = {name: value for name, value in options.items() if value is not None}
    unsupported = [name for name in options if name not in inspect.signature(builder).parameters]
    if unsupported:
        flags = ", ".join("--" + name.replace("_", "-") for name in unsupported)
        verb, pronoun = ("does", "it") if len(unsupported) == 1 else ("do", "them")
        raise EdgeCompressError(f"{flags} {verb} not apply to {target.name} (its {target.builder} builder has no such option); drop {pronoun}")
    out_dir.mkdir(parents=True, exist_ok=True)
    return builder(target, onnx_path, out_dir, precision, **options)
