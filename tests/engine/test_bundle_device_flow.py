"""The deployment bundle's build_engine.sh, run here with a stand-in trtexec (tests/engine/fake_trtexec.py) on PATH:
the trtexec flags per TensorRT major, the timing cache, the DLA engine and the choice, the int8 proof passing on a
faithful layer information and failing on a demoted layer, and the latency report against the shared schema."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from edgecompress.engine import build_engine
from edgecompress.engine.tensorrt_build import why_not_local
from edgecompress.targets import get_target

SCHEMA = json.loads((Path(__file__).parents[2] / "edgecompress/profile/latency_report.schema.json").read_text())
FAKE_TRTEXEC = Path(__file__).with_name("fake_trtexec.py")
sys.path.insert(0, str(FAKE_TRTEXEC.parent))
from fake_trtexec import graph_summary  # noqa: E402

def _device_python() -> str:
    """JetPack 4 (the Nano) has Python 3.6: run the bundle's scripts with a 3.6 interpreter when one is installed."""
    found = sorted(Path.home().glob(".pyenv/versions/3.6.*/bin/python3")) or [Path(p) for p in [shutil.which("python3.6")] if p]
    return str(found[0]) if found else sys.executable


DEVICE_PYTHON = _device_python()

# target -> (the TensorRT its JetPack ships, compute capability nvidia-smi reports, ONNX fixture, precision)
CASES = {
    "jetson-nano": ("8.2.1", "5.3", "residual_float_onnx", "fp16"),
    "jetson-xavier-nx": ("8.5.2", "7.2", "residual_int8_onnx", "int8"),
    "jetson-orin-nano": ("10.3.0", "8.7", "residual_int8_onnx", "int8"),
    "jetson-agx-orin": ("10.3.0", "8.7", "residual_int8_onnx", "int8"),
    "jetson-agx-thor-trt11": ("11.4.1", "11.0", "residual_int8_onnx", "int8"),
}


def _tools(folder: Path, compute_capability: str) -> Path:
    """trtexec, nvidia-smi and nvpmodel stand-ins, first on PATH."""
    folder.mkdir()
    scripts = {
        "trtexec": f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_TRTEXEC}" "$@"\n',
        "nvidia-smi": f"#!/bin/sh\necho {compute_capability}\n",
        "nvpmodel": '#!/bin/sh\necho "NV Power Mode: 15W"\necho 1\n',
    }
    for name, text in scripts.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def _run_bundle(name: str, onnx: Path, tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, Path, list[list[str]]]:
    version, capability, _, precision = CASES[name]
    target = get_target(name)
    if why_not_local(target) is None:
        pytest.skip(f"this machine builds {name} engines itself")
    result = build_engine(target, onnx, tmp_path / "bundle", precision=precision)
    assert result.kind == "bundle"
    tools = _tools(tmp_path / "bin", capability)
    log, graph = tmp_path / "trtexec.log", tmp_path / "graph.json"
    graph.write_text(json.dumps(graph_summary(str(result.paths["onnx"]))))
    environment = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}", "PYTHON": DEVICE_PYTHON,
                   "FAKE_ONNX_GRAPH": str(graph),
                   "FAKE_TRT_VERSION": version, "FAKE_TRTEXEC_LOG": str(log), "FAKE_TRT_MS": "3.0",
                   "FAKE_TRT_DLA_MS": "12.0", **env}
    done = subprocess.run(["bash", str(result.paths["script"])], env=environment, capture_output=True, text=True,
                          timeout=120)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return done, tmp_path / "bundle", calls


@pytest.mark.parametrize("name", list(CASES))
def test_bundle_builds_proves_and_profiles_with_the_flags_of_its_tensorrt(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    onnx = request.getfixturevalue(CASES[name][2])
    done, bundle, calls = _run_bundle(name, onnx, tmp_path)
    assert done.returncode == 0, done.stderr
    target = get_target(name)
    builds = [call for call in calls if any(arg.startswith("--onnx=") for arg in call)]
    profiles = [call for call in calls if any(arg.startswith("--loadEngine=") for arg in call)]
    assert len(builds) == len(profiles) == (2 if target.dla_cores else 1)
    gpu_build, gpu_profile = builds[0], profiles[0]
    major = target.tensorrt_major
    precision_flags = {"--int8", "--fp16"} & set(gpu_build)
    if major == 11:  # strongly typed: no precision flags, int8 from Q/DQ only
        assert not precision_flags and "--skipInference" in gpu_build and "--separateProfileRun" not in gpu_profile
    elif CASES[name][3] == "int8":
        assert precision_flags == {"--int8", "--fp16"}
    else:
        assert precision_flags == {"--fp16"}
    workspace = [arg for arg in gpu_build if "workspace" in arg]
    assert workspace == ([f"--workspace={target.workspace_mib}"] if major == 8 else [f"--memPoolSize=workspace:{target.workspace_mib}"])
    assert ("--buildOnly" if major == 8 else "--skipInference") in gpu_build
    cache = f"--timingCacheFile=timing-cache/timing-{target.gpu_arch}-trt{CASES[name][0]}.cache"
    assert all(cache in build for build in builds)  # one cache per GPU + TensorRT, shared by GPU and DLA builds
    assert {"--profilingVerbosity=detailed", "--exportLayerInfo=layers.json"} <= set(gpu_build)
    assert not any(arg.startswith("--useDLACore") for arg in gpu_build + gpu_profile)
    assert {"--exportTimes=times.json", "--exportProfile=profile.json", "--loadEngine=model.engine"} <= set(gpu_profile)

    record = json.loads((bundle / "model.engine.json").read_text())
    assert (record["tensorrt"], record["gpu_arch"], record["target"]) == (CASES[name][0], target.gpu_arch, name)
    device = json.loads((bundle / "device.json").read_text())
    assert device["power_mode"] == "15W (1)" and device["tensorrt"] == CASES[name][0]
    proof = json.loads((bundle / "int8_proof.json").read_text())
    assert proof["ok"] and proof["qdq_nodes"] == (4 if CASES[name][3] == "int8" else 0)
    latency = json.loads((bundle / "latency.json").read_text())
    jsonschema.validate(latency, SCHEMA)
    assert latency["machine"]["power_mode"] == "15W (1)" and latency["runtime"]["device"] == "GPU"
    assert latency["latency_ms"]["host"]["median"] == pytest.approx(3.0, rel=0.05)
    decision = json.loads((bundle / "deployment.json").read_text())
    assert decision["use"] == "model.engine" and decision["power_mode"] == "15W (1)"
    if target.dla_cores:
        dla_build, dla_profile = builds[1], profiles[1]
        assert {"--useDLACore=0", "--allowGPUFallback", "--saveEngine=model_dla0.engine"} <= set(dla_build)
        assert {"--useDLACore=0", "--loadEngine=model_dla0.engine"} <= set(dla_profile)
        jsonschema.validate(json.loads((bundle / "latency_dla0.json").read_text()), SCHEMA)
        assert [c["device"] for c in decision["candidates"]] == ["GPU", "DLA0"]
        assert "GPU 3.0" in decision["reason"] and "DLA0 12." in decision["reason"]


def test_dla_engine_is_chosen_only_when_its_median_is_lower(residual_int8_onnx: Path, tmp_path: Path) -> None:
    done, bundle, _ = _run_bundle("jetson-agx-orin", residual_int8_onnx, tmp_path, FAKE_TRT_DLA_MS="1.5")
    assert done.returncode == 0, done.stderr
    decision = json.loads((bundle / "deployment.json").read_text())
    assert (decision["use"], decision["device"]) == ("model_dla0.engine", "DLA0")
    assert json.loads((bundle / "latency_dla0.json").read_text())["runtime"]["device"] == "DLA0"


@pytest.mark.parametrize("name", ["jetson-orin-nano", "jetson-agx-thor-trt11", "jetson-xavier-nx"])
def test_int8_proof_fails_the_build_naming_the_layer_that_ran_fp16(
    name: str, residual_int8_onnx: Path, tmp_path: Path
) -> None:
    done, bundle, calls = _run_bundle(name, residual_int8_onnx, tmp_path, FAKE_TRT_FLOAT_NODE="/conv1.0/Conv")
    assert done.returncode == 1
    offending = [line for line in done.stderr.splitlines() if line.startswith("NOT INT8")]
    assert len(offending) == 1
    assert "/conv1.0/Conv (Conv) runs in fp16 in layer '/conv1.0/weight_quantizer/DequantizeLinear + /conv1.0/Conv" in offending[0]
    assert "reformat layer before it ('Reformatting CopyNode for Input Tensor 0 to" in offending[0]
    assert "int8 proof: FAILED: 1 of 4 Q/DQ layers" in done.stderr
    assert not any(arg.startswith("--loadEngine") for call in calls for arg in call)  # stopped before profiling
    assert not (bundle / "latency.json").exists()


def test_a_device_with_another_tensorrt_major_is_refused_before_building(residual_int8_onnx: Path, tmp_path: Path) -> None:
    done, bundle, calls = _run_bundle("jetson-orin-nano", residual_int8_onnx, tmp_path, FAKE_TRT_VERSION="8.5.2")
    assert done.returncode == 2 and not any(arg.startswith("--onnx=") for call in calls for arg in call)
    assert "this device has TensorRT 8.5.2 but the bundle was made for jetson-orin-nano with TensorRT 10.3" in done.stderr


def test_an_engine_from_another_device_is_refused_before_profiling(residual_int8_onnx: Path, tmp_path: Path) -> None:
    done, bundle, _ = _run_bundle("jetson-orin-nano", residual_int8_onnx, tmp_path)
    assert done.returncode == 0, done.stderr
    device = json.loads((bundle / "device.json").read_text())
    (bundle / "device.json").write_text(json.dumps({**device, "tensorrt": "10.7.0"}))
    check = subprocess.run([DEVICE_PYTHON, "engine_meta.py", "check", "model.engine", "--device", "device.json"],
                           cwd=bundle, capture_output=True, text=True)
    assert check.returncode == 2
    assert "built with TensorRT 10.3.0 but this machine has TensorRT 10.7.0" in check.stderr


def test_the_bundle_readme_and_manifest_describe_the_device_flow(residual_int8_onnx: Path, tmp_path: Path) -> None:
    result = build_engine(get_target("jetson-orin-nx-8gb"), residual_int8_onnx, tmp_path)
    readme = result.paths["readme"].read_text()
    assert "deployment.json" in readme and "1024 MiB" in readme and "DLA is not assumed faster" in readme
    manifest = json.loads(result.paths["manifest"].read_text())
    assert manifest["workspace_mib"] == 1024 and manifest["target"]["dla_cores"] == 1
    qdq = json.loads(result.paths["qdq_nodes"].read_text())
    assert [node["name"] for node in qdq["nodes"]] == ["/stem.0/Conv", "/conv1.0/Conv", "/conv2.0/Conv", "/head/Conv"]
    assert {"engine_meta", "int8_proof", "trtexec_reports"} <= set(result.paths)
