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
    assert set(result.paths) == {"onnx", "qdq_nodes", "engine_meta", "int8_proof", "trtexec_reports", "script", "readme",
                                 "manifest"}
    assert result.paths["onnx"].read_bytes() == float_onnx.read_bytes()
    script = result.paths["script"]
    assert os.access(script, os.X_OK) and script.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in script.read_text()
    build, profile = _script_commands(script)  # a board without DLA: one engine
    assert shlex.split(build)[1:] == ["--onnx=model.onnx", "--saveEngine=model.engine", "--fp16", "--workspace=512",
                                      "--timingCacheFile=$CACHE", "--profilingVerbosity=detailed",
                                      "--exportLayerInfo=layers.json", "--buildOnly"]
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
    gpu_build, _, dla_build, _ = _script_commands(result.paths["script"])  # GPU-only and DLA engines
    assert "--int8" in dla_build and "--memPoolSize=workspace:4096" in dla_build and "--useDLACore=0" in dla_build
    assert "--useDLACore" not in gpu_build
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


@pytest.mark.parametrize("fixture", ["residual_float_onnx", "residual_int8_onnx"])
def test_cpu_target_writes_an_openvino_ir_that_agrees_with_onnxruntime(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path, input_shape: tuple[int, ...]
) -> None:
    pytest.importorskip("openvino", reason="OpenVINO is optional (pip install 'edgecompress[openvino]')")
    import openvino as ov

    precision = "int8" if "int8" in fixture else "fp32"
    source = request.getfixturevalue(fixture)
    result = build_engine(get_target("cpu"), source, tmp_path, precision=precision)
    xml = result.paths["openvino"]
    assert xml == tmp_path / "openvino" / f"model_{precision}.xml" and xml.with_suffix(".bin").is_file()
    assert "agrees with onnxruntime on random input" in result.notes[1]
    model = ov.Core().read_model(str(xml))
    weights = [op for op in model.get_ops() if op.get_type_name() == "Constant" and op.get_output_element_type(0) == ov.Type.f16]
    assert not weights  # compress_to_fp16=False: no weight was halved
    x = np.random.default_rng(7).standard_normal(input_shape, dtype=np.float32)
    theirs = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({0: x})[0]
    ours = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    if precision == "int8":  # int8 kernels differ; the bound depends on the CPU (see openvino_ir.py)
        assert np.linalg.norm(theirs - ours) / np.linalg.norm(ours) <= 0.2
    else:
        assert np.abs(theirs - ours).max() <= 1e-4 * max(1.0, np.abs(ours).max())


def test_an_openvino_ir_that_lost_precision_is_caught(residual_float_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openvino", reason="OpenVINO is optional")
    import openvino as ov

    from edgecompress.engine.openvino_ir import write_openvino_ir

    convert = ov.convert_model

    def convert_with_fp16_weights(path: str) -> ov.Model:  # what compress_to_fp16=True would have shipped
        ov.save_model(convert(path), str(tmp_path / "half.xml"), compress_to_fp16=True)
        return ov.Core().read_model(str(tmp_path / "half.xml"))

    monkeypatch.setattr(ov, "convert_model", convert_with_fp16_weights)
    with pytest.raises(EdgeCompressError, match="disagrees with onnxruntime.*max difference"):
        write_openvino_ir(residual_float_onnx, tmp_path / "ir", "model", qdq=False, seed=3)


def test_cpu_target_notes_a_skipped_openvino_ir(float_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import edgecompress.engine.build as build

    monkeypatch.setattr(build, "openvino_available", lambda: False)
    result = build_engine(get_target("cpu"), float_onnx, tmp_path, precision="fp32")
    assert "openvino" not in result.paths and result.notes[1].startswith("OpenVINO IR skipped: the openvino package is not installed")


def test_options_a_builder_does_not_take_are_refused(float_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(EdgeCompressError, match="--workspace-mib does not apply to cpu.*drop it"):
        build_engine(get_target("cpu"), float_onnx, tmp_path, precision="fp32", workspace_mib=512)
    with pytest.raises(EdgeCompressError, match="--timing-cache applies to an engine built here"):
        build_engine(get_target("jetson-orin-nano"), float_onnx, tmp_path, precision="fp16", timing_cache=tmp_path / "t.cache")
    with pytest.raises(EdgeCompressError, match="positive"):
        build_engine(get_target("jetson-orin-nano"), float_onnx, tmp_path, precision="fp16", workspace_mib=0)


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
