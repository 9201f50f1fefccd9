"""Which TensorRT Python API calls build_with_tensorrt makes per major version, checked against a recording stand-in
for the ``tensorrt`` module (no TensorRT here). It records calls; it builds nothing: the "plan" it returns is bytes,
the inspector JSON a fixed string. Names as documented in python/docstrings/infer/pyCoreDoc.h at tags 8.2.1, v10.3.0
and v11.1 of https://github.com/NVIDIA/TensorRT."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path

import pytest

from edgecompress.engine import engine_meta, tensorrt_build
from edgecompress.errors import EdgeCompressError
from edgecompress.targets import get_target

LAYERS = json.dumps({"Layers": [{"Name": "/conv/Conv", "LayerType": "CaskConvolution"}], "Bindings": ["x", "y"]})


def _recording_tensorrt(version: str, calls: list) -> types.ModuleType:
    """A ``tensorrt`` module whose objects append (what, value) to ``calls``."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    enum = lambda *names: types.SimpleNamespace(**{name: name for name in names})
    trt.BuilderFlag = enum("FP16", "INT8", "GPU_FALLBACK")
    trt.MemoryPoolType = enum("WORKSPACE")
    trt.ProfilingVerbosity = enum("DETAILED")
    trt.DeviceType = enum("DLA", "GPU")
    trt.LayerInformationFormat = enum("JSON")
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)

    class Logger:
        WARNING = "WARNING"

        def __init__(self, level):
            pass

    class Config:
        def __setattr__(self, name, value):
            calls.append((name, value))

        def set_memory_pool_limit(self, pool, size):
            calls.append(("set_memory_pool_limit", (pool, size)))

        def set_flag(self, flag):
            calls.append(("set_flag", flag))

        def create_timing_cache(self, blob):
            calls.append(("create_timing_cache", bytes(blob)))
            return "cache"

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("set_timing_cache", ignore_mismatch))
            return True

        def get_timing_cache(self):
            return types.SimpleNamespace(serialize=lambda: b"timings after the build")

        def add_optimization_profile(self, profile):
            calls.append(("add_optimization_profile", profile.shapes))

    class Network:
        num_inputs = 1

        def get_input(self, index):
            return types.SimpleNamespace(name="images", shape=(-1, 3, 32, 32))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls.append(("create_network", flags))
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            profile = types.SimpleNamespace(shapes={})
            profile.set_shape = lambda name, *shapes: profile.shapes.update({name: shapes})
            return profile

        def build_serialized_network(self, network, config):
            return b"plan bytes"

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls.append(("parse_from_file", Path(path).name))
            return True

    inspector = types.SimpleNamespace(get_engine_information=lambda fmt: calls.append(("get_engine_information", fmt)) or LAYERS)
    engine = types.SimpleNamespace(create_engine_inspector=lambda: inspector)
    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
    trt.Runtime = lambda logger: types.SimpleNamespace(deserialize_cuda_engine=lambda plan: engine)
    return trt


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch):
    def install(version: str) -> list:
        calls: list = []
        monkeypatch.setitem(sys.modules, "tensorrt", _recording_tensorrt(version, calls))
        monkeypatch.setattr(tensorrt_build, "local_gpu_arch", lambda: "sm_87")
        return calls
    return install


@pytest.mark.parametrize(("version", "workspace_call"), [
    ("8.5.2.2", ("max_workspace_size", 1024 << 20)),
    ("10.3.0.30", ("set_memory_pool_limit", ("WORKSPACE", 1024 << 20))),
    ("11.4.1.5", ("set_memory_pool_limit", ("WORKSPACE", 1024 << 20))),
])
def test_calls_per_major(recorded, version: str, workspace_call: tuple, qdq_onnx: Path, tmp_path: Path) -> None:
    calls = recorded(version)
    target = dataclasses.replace(get_target("jetson-orin-nx-8gb"), tensorrt=version)
    (tmp_path / "cache.bin").write_bytes(b"earlier timings")
    built = tensorrt_build.build_with_tensorrt(target, qdq_onnx, tmp_path / "model.engine", precision="int8",
                                               dla_core=0, timing_cache=tmp_path / "cache.bin")
    assert ("create_network", 1 if version.startswith("8.") else 0) in calls  # EXPLICIT_BATCH only in 8.x
    assert workspace_call in calls
    flags = [value for name, value in calls if name == "set_flag"]
    assert flags == (["GPU_FALLBACK"] if version.startswith("11.") else ["INT8", "FP16", "GPU_FALLBACK"])
    assert ("profiling_verbosity", "DETAILED") in calls
    assert ("default_device_type", "DLA") in calls and ("DLA_core", 0) in calls
    assert ("create_timing_cache", b"earlier timings") in calls and ("set_timing_cache", False) in calls
    assert ("add_optimization_profile", {"images": ((1, 3, 32, 32),) * 3}) in calls
    assert ("get_engine_information", "JSON") in calls
    assert built.engine.read_bytes() == b"plan bytes" and built.timing_cache.read_bytes() == b"timings after the build"
    assert json.loads(built.layers.read_text())["Layers"][0]["Name"] == "/conv/Conv"
    record = json.loads(built.record.read_text())
    assert (record["tensorrt"], record["gpu_arch"], record["device_type"]) == (".".join(version.split(".")[:3]), "sm_87", "DLA0")
    assert engine_meta.check_engine(str(built.engine), version, "sm_87")["precision"] == "int8"


def test_default_timing_cache_is_per_gpu_and_release(recorded, float_onnx: Path, tmp_path: Path, monkeypatch) -> None:
    recorded("10.3.0.30")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    built = tensorrt_build.build_with_tensorrt(get_target("jetson-orin-nano"), float_onnx, tmp_path / "m.engine", precision="fp16")
    assert built.timing_cache == tmp_path / "cache/edgecompress/timing/timing-sm_87-trt10.3.0.cache"
    assert built.timing_cache.read_bytes() == b"timings after the build"


def test_tensorrt_11_fp16_needs_an_fp16_onnx_and_no_dla_on_the_orin_nano(recorded, float_onnx: Path, tmp_path: Path) -> None:
    recorded("11.4.1")
    with pytest.raises(EdgeCompressError, match="TensorRT 11 has no fp16 flag"):
        tensorrt_build.build_with_tensorrt(get_target("jetson-agx-thor-trt11"), float_onnx, tmp_path / "m.engine", precision="fp16")
    recorded("10.3.0")
    with pytest.raises(EdgeCompressError, match="0 DLA core"):
        tensorrt_build.build_with_tensorrt(get_target("jetson-orin-nano"), float_onnx, tmp_path / "m.engine", precision="fp16", dla_core=0)
