"""trtexec command lines, one recipe per TensorRT major version (flags changed in 8 -> 10 -> 11).

Sources, checked against NVIDIA's documentation:
- TensorRT 8.x: explicit quantization needs the INT8 builder flag; ``--workspace=N`` (MiB) is accepted through 8.x
  (deprecated from 8.4, removed in 10).
  https://docs.nvidia.com/deeplearning/tensorrt/11.4.1/api/migration/tensorrt-8x-to-10x-trtexec.html
- TensorRT 10.x: ``--memPoolSize=workspace:N`` (MiB); ``--fp16``/``--int8`` still build weakly typed networks
  (weak typing deprecated in 10.12, https://docs.nvidia.com/deeplearning/tensorrt/latest/getting-started/release-notes-10/10.12.0.html).
- TensorRT 11.x: every network is strongly typed; ``--fp16 --int8 --best --calib`` are removed; int8 comes only from
  Q/DQ nodes and fp16 from an fp16 ONNX made offline with ModelOpt AutoCast.
  https://docs.nvidia.com/deeplearning/tensorrt/11.4.1/api/migration/tensorrt-10x-to-11x-trtexec.html
- DLA: ``--useDLACore=N --allowGPUFallback`` (samples/trtexec/README.md in github.com/NVIDIA/TensorRT).
- Every major: ``--timingCacheFile=<file>`` (load, then save, the timing cache), ``--profilingVerbosity=detailed``
  with ``--exportLayerInfo=<file>`` (the engine inspector's JSON), ``--exportTimes``/``--exportProfile`` (per-inference
  and per-layer timings). Build without timing: ``--buildOnly`` in 8.x, ``--skipInference`` from 10.0 (8.x has no
  ``--skipInference``, 10.x no ``--buildOnly``); ``--separateProfileRun`` is a no-op from 11.0 (always separate).
  Option lists of samples/common/sampleOptions.cpp at tags 8.2.1, 8.5.2, v10.3.0, v10.13.3 and v11.1 of
  https://github.com/NVIDIA/TensorRT.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import EdgeCompressError
from .target import Target

@dataclass(frozen=True)
class TrtexecRecipe:
    """How one TensorRT major version is asked for a precision and a workspace."""

    workspace_flag: Callable[[int], str]
    precision_flags: dict[str, tuple[str, ...]]
    # Builder flags for the Python API (names in trt.BuilderFlag), same meaning as precision_flags.
    builder_flags: dict[str, tuple[str, ...]]
    # Build the engine and stop, without the default timing run.
    build_only_flag: str = "--skipInference"
    # Profile in a run of its own so the per-layer profiler does not skew the timed run (always so from 11).
    separate_profile_flags: tuple[str, ...] = ("--separateProfileRun",)
    # fp16 needs the ONNX converted offline first (TensorRT 11: no --fp16).
    fp16_needs_autocast: bool = False


_WEAKLY_TYPED_FLAGS = {
    "fp32": (),
    "fp16": ("--fp16",),
    # Q/DQ nodes give the int8 layers; --fp16 lets the layers outside Q/DQ regions run in half precision.
    "int8": ("--int8", "--fp16"),
}
_WEAKLY_TYPED_BUILDER = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8", "FP16")}

RECIPES: dict[int, TrtexecRecipe] = {
    8: TrtexecRecipe(lambda mib: f"--workspace={mib}", _WEAKLY_TYPED_FLAGS, _WEAKLY_TYPED_BUILDER, build_only_flag="--buildOnly"),
    10: TrtexecRecipe(lambda mib: f"--memPoolSize=workspace:{mib}", _WEAKLY_TYPED_FLAGS, _WEAKLY_TYPED_BUILDER),
    11: TrtexecRecipe(
        lambda mib: f"--memPoolSize=workspace:{mib}",
        {"fp32": (), "fp16": (), "int8": ()},
        {"fp32": (), "fp16": (), "int8": ()},
        separate_profile_flags=(),
        fp16_needs_autocast=True,
    ),
}


def recipe_for(target: Target) -> TrtexecRecipe:
    """The recipe for the target's TensorRT major version; a CPU target or an unknown major is a user error."""
    major = target.tensorrt_major
    if major not in RECIPES:
        raise EdgeCompressError(
            f"target {target.name} has TensorRT {target.tensorrt}, which edgecompress has no build recipe for; "
            f"use a target with TensorRT {', '.join(f'{m}.x' for m in RECIPES)}"
        )
    return RECIPES[major]


def check_precision(target: Target, precision: str) -> None:
    """Refuse a precision the target cannot run, with the fix in the message."""
    if precision not in ("fp32", "fp16", "int8"):
        raise EdgeCompressError(f"unknown precision {precision!r}; use int8, fp16 or fp32")
    if precision == "int8" and not target.int8:
        raise EdgeCompressError(
            f"{target.name} ({target.gpu_arch}) has no fast int8, so a Q/DQ network does not build there; "
            f"use --precision {target.precision} (QAT is skipped for this target)"
        )
    if precision == "fp16" and not target.fp16:
        raise EdgeCompressError(f"{target.name} has no fp16 support; use --precision {target.precision}")


def autocast_command(onnx_path: str | Path, fp16_path: str | Path) -> list[str]:
    """ModelOpt AutoCast: the TensorRT 11 way to get fp16 (documented migration step)."""
    return ["python3", "-m", "modelopt.onnx.autocast", "--onnx_path", str(onnx_path), "--output_path", str(fp16_path)]


def autocast_path(onnx_path: str | Path) -> Path:
    """Where the fp16 AutoCast copy of ``onnx_path`` goes."""
    path = Path(onnx_path)
    return path.with_name(f"{path.stem}_fp16{path.suffix}")


def trtexec_command(
    target: Target,
    onnx_path: str | Path,
    engine_path: str | Path | None,
    *,
    precision: str,
    workspace_mib: int | None = None,
    dla_core: int | None = None,
    shapes: str | None = None,
    fp16_onnx: bool = False,
    timing_cache: str | Path | None = None,
    layer_info: str | Path | None = None,
    build_only: bool = False,
) -> list[str]:
    """The exact trtexec build command for this target's TensorRT version.

    ``workspace_mib`` defaults to the target's (:attr:`Target.workspace_mib`, from its memory).
    ``shapes`` (``name:1x3x128x128,...``, see :func:`static_shapes`) pins the optimisation profile of
    an ONNX with a dynamic batch dimension instead of leaving trtexec to guess it.
    On TensorRT 11 with fp16 the ONNX named here is the AutoCast output (see :func:`autocast_command`),
    unless ``fp16_onnx`` says ``onnx_path`` already is an fp16 export.
    ``timing_cache`` is loaded and saved back (per GPU and TensorRT version, see :mod:`.timing_cache`);
    ``layer_info`` writes the engine inspector's JSON with detailed verbosity (what the int8 proof reads).
    Without ``engine_path`` the engine is not saved (trtexec builds it, then times it unless ``build_only``).
    """
    check_precision(target, precision)
    check_dla_core(target, dla_core)
    recipe = recipe_for(target)
    autocast = precision == "fp16" and recipe.fp16_needs_autocast and not fp16_onnx
    source = autocast_path(onnx_path) if autocast else Path(onnx_path)
    command = ["trtexec", f"--onnx={source}", *([f"--saveEngine={engine_path}"] if engine_path is not None else []),
               *recipe.precision_flags[precision]]
    command.append(recipe.workspace_flag(workspace_mib or target.workspace_mib))
    if shapes:
        command += [f"--minShapes={shapes}", f"--optShapes={shapes}", f"--maxShapes={shapes}"]
    if dla_core is not None:
        command += [f"--useDLACore={dla_core}", "--allowGPUFallback"]
    if timing_cache:
        command.append(f"--timingCacheFile={timing_cache}")
    if layer_info:
        command += ["--profilingVerbosity=detailed", f"--exportLayerInfo={layer_info}"]
    if build_only:
        command.append(recipe.build_only_flag)
    return command


def check_dla_core(target: Target, dla_core: int | None) -> None:
    """A DLA core the target does not have is a user error (the Orin Nano and Thor have none)."""
    if dla_core is not None and not 0 <= dla_core < target.dla_cores:
        with_dla = "jetson-xavier-nx, jetson-orin-nx-8gb, jetson-orin-nx-16gb, jetson-agx-orin"
        raise EdgeCompressError(
            f"{target.name} has {target.dla_cores} DLA core(s), so DLA core {dla_core} does not exist; "
            f"drop --dla-core or pick a target with DLA ({with_dla})"
        )


def static_shapes(onnx_path: str | Path, batch: int = 1) -> str | None:
    """``name:NxCxHxW`` for every graph input with a symbolic dimension (set to ``batch``); None if all are fixed."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    specs, dynamic = [], False
    for value in graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else batch for d in value.type.tensor_type.shape.dim]
        dynamic |= any(not d.HasField("dim_value") for d in value.type.tensor_type.shape.dim)
        specs.append(f"{value.name}:{'x'.join(str(d) for d in dims)}")
    return ",".join(specs) if dynamic else None


def profile_command(
    engine_path: str | Path,
    *,
    target: Target | None = None,
    iterations: int = 200,
    warmup_ms: int = 500,
    avg_runs: int = 10,
    times: str | Path | None = None,
    profile: str | Path | None = None,
    dla_core: int | None = None,
) -> list[str]:
    """A trtexec timing run of a saved engine, plus a per-layer profile in a separate run so it does not skew timing.

    ``times``/``profile`` export the per-inference and per-layer timings as JSON; a DLA engine is loaded with its
    ``--useDLACore``. ``target`` picks its TensorRT's flags (TensorRT 11 always profiles separately).
    """
    separate = recipe_for(target).separate_profile_flags if target is not None else ("--separateProfileRun",)
    command = [
        "trtexec",
        f"--loadEngine={engine_path}",
        f"--iterations={iterations}",
        f"--warmUp={warmup_ms}",
        f"--avgRuns={avg_runs}",
        *separate,
        "--dumpProfile",
    ]
    if dla_core is not None:
        command.append(f"--useDLACore={dla_core}")
    if times:
        command.append(f"--exportTimes={times}")
    if profile:
        command.append(f"--exportProfile={profile}")
    return command
