"""build_engine: deployment bundles for Jetsons, an onnxruntime model for the CPU, TensorRT where present."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgecompress.engine import build_engine
from edgecompress.engine.tensorrt_build import local_gpu_arch, tensorrt_version, why_not_local
from edgecompress.errors import EdgeCompressError
from edgecompress.export import qdq_summary
from edgecompress.targets import get_target


def _script_commands(script: Path) -> list[str]:
    return [line for line in script.read_text().splitlines() if line.startswith('"$TRTEXEC"')]


@pytest.mark.skipif(why_not_local(get_target("jetson-nano")) is None, reason="this machine is a Jetson Nano")
def test_nano_bundle_ships_fp16_onnx_and_build_script(float_onnx: Path, tmp_path: Path) -> None:
    result = build_engine(get_target("jetson-nano"), float_onnx, tmp_path)
    assert result.kind == "bundle" and result.precision == "fp16"
    assert set(result.paths) == {"onnx", "script", "readme", "manifest"}
    assert result.paths["onnx"].read_bytes() == float_onnx.read_bytes()
    script = result.paths["script"]
    assert os.access(script, os.X_OK) and script.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in script.read_text()
    build, profile = _script_commands(script)
    assert shlex.split(build)[1:] == ["--onnx=model.onnx", "--saveEngine=model.engine", "--fp16", "--workspace=1024"]
    assert "--loadEngine=model.engine" in profile and "--iterations=200" in profile
    assert result.command == ["trtexec", *shlex.split(build)[1:]]
    readme = result.paths["readme"].read_text()
    assert "GPU architecture" in readme and "TensorRT 8.2" in readme and "./build_engine.sh" in readme
    manifest = json.loads(result.paths["manifest"].read_text())
    assert manifest["target"]["name"] == "jetson-nano" and manifest["precision"] == "fp16"
    assert not list(tmp_path.glob(".*.tmp"))  # nothing half-written left behind


def test_nano_refuses_qdq_model(qdq_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(EdgeCompressError, match="Q/DQ"):
        build_engine(get_target("jetson-nano"), qdq_onnx, tmp_path, precision="fp16")
    with pytest.raises(EdgeCompressError, match="no fast int8"):
        build_engine(get_target("jetson-nano"), qdq_onnx, tmp_path, precision="int8")


@pytest.mark.skipif(why_not_local(get_target("jetson-agx-orin")) is None, reason="this machine is an Orin")
def test_orin_int8_bundle_from_qdq(qdq_onnx: Path, tmp_path: Path) -> None:
    assert qdq_summary(qdq_onnx).quantize_linear >= 1
    result = build_engine(get_target("jetson-agx-orin"), qdq_onnx, tmp_path / "orin", dla_core=0)
    assert result.kind == "bundle" and result.precision == "int8"
    build, _ = _script_commands(result.paths["script"])
    assert "--int8" in build and "--memPoolSize=workspace:1024" in build and "--useDLACore=0" in build
    assert "TensorRT 10.3" in result.paths["readme"].read_text()


def test_int8_needs_a_qdq_model(float_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(EdgeCompressError, match="no Q/DQ nodes"):
        build_engine(get_target("jetson-agx-orin"), float_onnx, tmp_path, precision="int8")


@pytest.mark.parametrize("fixture", ["float_onnx", "qdq_onnx"])
def test_cpu_target_writes_ort_model_that_runs(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path, input_shape: tuple[int, ...]
) -> None:
    source = request.getfixturevalue(fixture)
    precision = "int8" if fixture == "qdq_onnx" else "fp32"
    result = build_engine(get_target("cpu"), source, tmp_path, precision=precision)
    assert result.kind == "onnxruntime" and result.command == []
    x = np.random.default_rng(1).standard_normal(input_shape, dtype=np.float32)
    run = lambda path: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    optimised, original = run(result.paths["model"]), run(source)
    assert optimised.shape == (1, 4, 16, 16) and np.abs(optimised).max() > 0
    np.testing.assert_allclose(optimised, original, rtol=1e-4, atol=1e-4)


def test_missing_onnx_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(EdgeCompressError, match="not found"):
        build_engine(get_target("cpu"), tmp_path / "nope.onnx", tmp_path)


def _local_target_name() -> str | None:
    arch = local_gpu_arch() if tensorrt_version() else None
    return next((name for name in ("t4", "a100", "rtx-3090", "rtx-4090", "h100")
                 if get_target(name).gpu_arch == arch), None)


@pytest.mark.skipif(tensorrt_version() is None, reason="TensorRT is not installed (pip install tensorrt)")
@pytest.mark.skipif(
    tensorrt_version() is not None and _local_target_name() is None, reason="no CUDA GPU matching a desktop target"
)
def test_tensorrt_builds_engine_on_matching_gpu(float_onnx: Path, tmp_path: Path) -> None:
    import dataclasses

    target = get_target(_local_target_name())
    target = dataclasses.replace(target, tensorrt=tensorrt_version())
    result = build_engine(target, float_onnx, tmp_path, precision="fp16" if target.tensorrt_major < 11 else "fp32")
    assert result.kind == "engine" and result.paths["engine"].stat().st_size > 0


def test_tensorrt_11_fp16_bundle_autocasts_first(float_onnx: Path, tmp_path: Path) -> None:
    import dataclasses

    target = dataclasses.replace(get_target("h100"), tensorrt="11.4")
    if why_not_local(target) is None:
        pytest.skip("this machine could build the TensorRT 11 engine itself")
    result = build_engine(target, float_onnx, tmp_path, precision="fp16")
    lines = result.paths["script"].read_text().splitlines()
    autocast = next(i for i, line in enumerate(lines) if "modelopt.onnx.autocast" in line)
    build = next(i for i, line in enumerate(lines) if "--saveEngine=" in line)
    assert autocast < build and "--onnx=model_fp16.onnx" in lines[build] and "--fp16" not in lines[build]


def test_tensorrt_11_fp16_bundle_builds_an_fp16_onnx_without_autocast(float_onnx: Path, tmp_path: Path) -> None:
    import dataclasses

    from edgecompress.export import convert_fp16

    target = dataclasses.replace(get_target("h100"), tensorrt="11.4")
    if why_not_local(target) is None:
        pytest.skip("this machine could build the TensorRT 11 engine itself")
    fp16_onnx = convert_fp16(float_onnx, tmp_path / "model_fp16.onnx")
    result = build_engine(target, fp16_onnx, tmp_path / "bundle", precision="fp16")
    script = result.paths["script"].read_text()
    assert "modelopt.onnx.autocast" not in script
    assert "--onnx=model.onnx" in script and "--fp16" not in script
