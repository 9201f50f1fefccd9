"""Engine sidecar records, device detection, timing-cache names and the GPU/DLA choice (engine_meta.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgecompress.engine import engine_meta
from edgecompress.engine.tensorrt_build import check_engine_here, default_timing_cache
from edgecompress.errors import EdgeCompressError


def _engine(tmp_path: Path, tensorrt: str = "10.3.0.30", arch: str = "sm_87") -> Path:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"serialized plan")
    engine_meta.write_sidecar(str(engine), tensorrt, arch, "jetson-orin-nano", "int8", "GPU", "6.2", "MAXN (0)")
    return engine


def test_sidecar_records_release_gpu_and_hash(tmp_path: Path) -> None:
    record = json.loads(Path(engine_meta.sidecar_path(_engine(tmp_path))).read_text())
    assert (record["tensorrt"], record["gpu_arch"], record["hardware_compatibility"]) == ("10.3.0", "sm_87", "none")
    assert record["bytes"] == len(b"serialized plan") and len(record["sha256"]) == 64
    assert record["schema"] == "edgecompress.engine/1" and record["power_mode"] == "MAXN (0)"


@pytest.mark.parametrize(("tensorrt", "arch", "message"), [
    ("10.3.0.26", "sm_87", None),  # the build number does not matter
    ("10.7.0", "sm_87", "built with TensorRT 10.3.0 but this machine has TensorRT 10.7.0"),
    ("10.3.0", "sm_72", "built for GPU sm_87 but this GPU is sm_72"),
])
def test_engines_run_only_with_their_tensorrt_release_and_gpu(tmp_path: Path, tensorrt: str, arch: str, message) -> None:
    engine = _engine(tmp_path)
    if message is None:
        assert engine_meta.check_engine(str(engine), tensorrt, arch)["target"] == "jetson-orin-nano"
        return
    with pytest.raises(engine_meta.MismatchError, match=message) as error:
        engine_meta.check_engine(str(engine), tensorrt, arch)
    assert "rebuild it on this device" in str(error.value)


def test_an_engine_without_record_or_replaced_since_is_refused(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    engine.write_bytes(b"another plan")
    with pytest.raises(engine_meta.MismatchError, match="does not match its record"):
        engine_meta.check_engine(str(engine), "10.3.0", "sm_87")
    bare = tmp_path / "bare.engine"
    bare.write_bytes(b"x")
    with pytest.raises(engine_meta.MismatchError, match="no .*bare.engine.json"):
        engine_meta.check_engine(str(bare), "10.3.0", "sm_87")
    with pytest.raises(EdgeCompressError, match="no .*bare.engine.json"):
        check_engine_here(bare)  # the host API turns it into the CLI's user error


def test_timing_cache_is_keyed_by_gpu_and_tensorrt_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert engine_meta.timing_cache_name("sm_87", "10.3.0.30") == "timing-sm_87-trt10.3.0.cache"
    assert engine_meta.timing_cache_name("sm_53", "8.2.1") != engine_meta.timing_cache_name("sm_62", "8.2.1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_timing_cache("sm_89", "10.16.1.11") == tmp_path / "edgecompress/timing/timing-sm_89-trt10.16.1.cache"


def test_detect_reads_the_jetson_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    for name, text in {"nvidia-smi": "echo 8.7", "nvpmodel": 'echo "NV Power Mode: MAXN_SUPER"; echo 2',
                       "dpkg-query": 'case "$*" in *nvidia-jetpack*) echo "6.2+b77";; *libnvinfer-bin*) echo "10.3.0.30-1+cuda12.5";; *) exit 1;; esac'}.items():
        (tools / name).write_text(f"#!/bin/sh\n{text}\n")
        (tools / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(engine_meta, "_tensorrt_from_python", lambda: None)
    device = engine_meta.detect_device()
    assert (device["tensorrt"], device["jetpack"], device["power_mode"]) == ("10.3.0", "6.2", "MAXN_SUPER (2)")
    if not Path("/proc/device-tree/compatible").exists():
        assert device["gpu_arch"] == "sm_87"
    engine_meta.check_device(device, "10.3", "sm_87")
    with pytest.raises(engine_meta.MismatchError, match="TensorRT 10.3.0 but the bundle was made for jetson-nano with TensorRT 8.2"):
        engine_meta.check_device(device, "8.2", "sm_53", "jetson-nano")


@pytest.mark.parametrize(("code", "version"), [("8201", "8.2.1"), ("8502", "8.5.2"), ("100300", "10.3.0"), ("110401", "11.4.1")])
def test_tensorrt_release_from_the_trtexec_banner(tmp_path: Path, code: str, version: str) -> None:
    trtexec = tmp_path / "trtexec"
    trtexec.write_text(f'#!/bin/sh\necho "&&&& RUNNING TensorRT.trtexec [TensorRT v{code}] # trtexec"\nexit 1\n')
    trtexec.chmod(0o755)
    assert engine_meta._tensorrt_from_trtexec(str(trtexec)) == version


def _latency(path: Path, median: float) -> str:
    path.write_text(json.dumps({"latency_ms": {"host": {"median": median}}}))
    return str(path)


def test_choose_picks_the_fastest_engine_whose_int8_proof_did_not_fail(tmp_path: Path) -> None:
    passed, failed = tmp_path / "ok.json", tmp_path / "bad.json"
    passed.write_text(json.dumps({"ok": True}))
    failed.write_text(json.dumps({"ok": False}))
    gpu = ("model.engine", "GPU", _latency(tmp_path / "gpu.json", 35.0), str(passed))
    slow_dla = ("model_dla0.engine", "DLA0", _latency(tmp_path / "dla.json", 220.0), str(passed))
    decision = engine_meta.choose([gpu, slow_dla], {"tensorrt": "10.3.0", "power_mode": "MAXN (0)"})
    assert (decision["use"], decision["device"]) == ("model.engine", "GPU")
    assert decision["reason"] == "fastest median host latency: GPU 35.000 ms; DLA0 220.000 ms"
    fast_but_not_int8 = ("model_dla0.engine", "DLA0", _latency(tmp_path / "dla2.json", 5.0), str(failed))
    decision = engine_meta.choose([gpu, fast_but_not_int8], {})
    assert decision["use"] == "model.engine" and "(int8 proof failed)" in decision["reason"]
    fast_dla = ("model_dla0.engine", "DLA0", _latency(tmp_path / "dla3.json", 20.0), str(passed))
    assert engine_meta.choose([gpu, fast_dla], {})["device"] == "DLA0"
