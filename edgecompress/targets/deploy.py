"""``edgecompress.build_engine``: the engine stage on its own, for a target named by the user."""

from __future__ import annotations

from pathlib import Path

from ..engine.build import EngineResult
from ..engine.build import build_engine as build_for_target
from ..engine.target import Target
from .registry import get_target


def build_engine(
    onnx_path: str | Path,
    target: str | Target,
    out_dir: str | Path = "engine",
    *,
    precision: str | None = None,
    dla_core: int | None = None,
    workspace_mib: int | None = None,
    timing_cache: str | Path | None = None,
) -> EngineResult:
    """Build ``onnx_path`` for ``target`` (a registry name or alias, or a :class:`Target`) into ``out_dir``.

    Here when this machine has the target's GPU and TensorRT (engine, sidecar record, layer information, int8 proof),
    otherwise a deployment bundle whose ``build_engine.sh`` does the same on the device; for the CPU an onnxruntime
    model and an OpenVINO IR. See :func:`edgecompress.engine.build_engine` for the options.
    """
    resolved = target if isinstance(target, Target) else get_target(target)
    return build_for_target(resolved, onnx_path, out_dir, precision=precision, dla_core=dla_core,
                            workspace_mib=workspace_mib, timing_cache=timing_cache)
