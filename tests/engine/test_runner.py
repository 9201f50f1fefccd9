"""The engine runner: buffer backend selection, the torch timing path (here on the CPU), and, where TensorRT and a
GPU exist, engines loaded, run against onnxruntime and timed."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from torch import nn

from edgecompress.engine import buffers, runner
from edgecompress.engine.buffers import CudaPythonBackend
from edgecompress.engine.runner import (
    BUFFER_BACKENDS, EngineRunner, register_buffer_backend, select_backend, time_torch_module, timing_loop,
)
from edgecompress.errors import EdgeCompressError

SCHEMA = json.loads((Path(runner.__file__).parents[1] / "profile" / "latency_report.schema.json").read_text())
CUDA_MODULES = ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart", "pycuda", "pycuda.driver")


@pytest.fixture
def no_cuda_packages(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """cuda-python and pycuda unimportable, torch without CUDA, whatever this machine has."""
    for name in CUDA_MODULES:
        monkeypatch.setitem(sys.modules, name, None)  # a None entry makes `import name` raise ImportError
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return monkeypatch


def test_no_backend_error_names_every_backend_and_the_fix(no_cuda_packages: pytest.MonkeyPatch) -> None:
    with pytest.raises(EdgeCompressError) as error:
        select_backend()
    message = str(error.value)
    assert "\n" not in message
    assert f"torch: torch {torch.__version__} sees no CUDA device" in message
    assert "cuda-python: not installed" in message and "pycuda: not installed" in message
    assert message.endswith("install torch with CUDA, cuda-python or pycuda on a machine with an NVIDIA GPU")


def test_torch_without_package_and_named_backends(no_cuda_packages: pytest.MonkeyPatch) -> None:
    no_cuda_packages.setitem(sys.modules, "torch", None)
    with pytest.raises(EdgeCompressError, match=r"\(torch: not installed;"):
        select_backend()
    with pytest.raises(EdgeCompressError, match=r"buffer backend pycuda cannot run here \(not installed\); install pycuda"):
        select_backend("pycuda")
    with pytest.raises(EdgeCompressError, match="unknown buffer backend 'opencl'; use one of torch, cuda-python, pycuda"):
        select_backend("opencl")


def test_first_usable_backend_in_registry_order(no_cuda_packages: pytest.MonkeyPatch) -> None:
    no_cuda_packages.setattr(torch.cuda, "is_available", lambda: True)
    assert select_backend() is BUFFER_BACKENDS["torch"]
    assert select_backend("torch").name == "torch"


def test_a_new_backend_is_one_registration(no_cuda_packages: pytest.MonkeyPatch) -> None:
    class RuntimeV2(CudaPythonBackend):
        name, package = "cuda-runtime-v2", "cuda-runtime-v2"

        @classmethod
        def unavailable(cls) -> str | None:
            return None

    no_cuda_packages.setattr(buffers, "BUFFER_BACKENDS", dict(BUFFER_BACKENDS))
    register_buffer_backend(RuntimeV2)
    assert list(buffers.BUFFER_BACKENDS)[-1] == "cuda-runtime-v2"
    assert select_backend() is RuntimeV2  # the built-in ones cannot run here
    assert "cuda-runtime-v2" not in BUFFER_BACKENDS


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_torch_module_on_cpu_gives_a_schema_report_with_numpy_percentiles() -> None:
    model = SmallNet().train()
    report = time_torch_module(model, torch.randn(2, 3, 16, 16), iterations=25, warmup=3)
    jsonschema.validate(report, SCHEMA)
    assert model.training  # put back as it was
    times = np.array(report["times_ms"])
    host = report["latency_ms"]["host"]
    assert host["count"] == len(times) == 25 and (times > 0).all()
    assert host["median"] == np.median(times)
    assert (host["p90"], host["p99"]) == (np.percentile(times, 90), np.percentile(times, 99))
    assert host["mean"] == pytest.approx(times.mean(), rel=1e-12)
    assert (host["min"], host["max"]) == (times.min(), times.max())
    assert report["latency_ms"]["gpu_compute"] is None and report["memory_mb"]["gpu"] is None
    assert report["runtime"] == {"name": "torch", "version": torch.__version__, "device": "CPU", "precision": "fp32"}
    assert report["inputs"] == [{"name": "input", "shape": [2, 3, 16, 16], "dtype": "float32"}]
    assert report["settings"]["batch"] == 2 and report["settings"]["threads"] == torch.get_num_threads()
    state = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    assert report["model"] == {"path": "SmallNet (in memory)", "bytes": state, "format": "torch", "stage": None}
    # throughput = images over the wall time of the timed runs, which holds every timed run
    wall_s = 2 * 25 / report["throughput_ips"]
    assert times.sum() / 1e3 <= wall_s < times.sum() / 1e3 + 1.0


def test_duration_extends_the_timed_runs() -> None:
    report = time_torch_module(SmallNet(), torch.randn(1, 3, 8, 8), iterations=2, warmup=0, duration_s=0.05)
    count = report["latency_ms"]["host"]["count"]
    assert count >= 2 and count / report["throughput_ips"] >= 0.05


def test_timing_loop_refuses_bad_counts() -> None:
    with pytest.raises(EdgeCompressError, match="iterations must be >= 1"):
        timing_loop(lambda start, end: None, iterations=0, warmup=1)


def test_engine_runner_refuses_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EdgeCompressError, match="engine not found: .*build_engine.sh"):
        EngineRunner(tmp_path / "missing.engine")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EdgeCompressError, match="the tensorrt Python package is not installed"):
        EngineRunner(engine)


# ---- with TensorRT and a GPU ----------------------------------------------------------------------------------------


def _tensorrt_here() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed here: EngineRunner's TensorRT paths run on a machine with TensorRT and a GPU"
    reasons = [backend.unavailable() for backend in BUFFER_BACKENDS.values()]
    return None if None in reasons else "no CUDA buffer backend here (torch with CUDA, cuda-python or pycuda)"


needs_tensorrt = pytest.mark.skipif(_tensorrt_here() is not None, reason=str(_tensorrt_here()))


@pytest.fixture
def fp32_engine(float_onnx: Path, tmp_path: Path) -> Path:
    """The conftest's float ONNX built into an engine on this GPU with the TensorRT Python API."""
    import tensorrt as trt

    from edgecompress.engine.tensorrt_build import NETWORK_APIS

    api = NETWORK_APIS[int(trt.__version__.split(".")[0])]
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(api.network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(float_onnx))
    config = builder.create_builder_config()
    api.set_workspace(trt, config, 256 << 20)
    serialized = builder.build_serialized_network(network, config)
    engine = tmp_path / "tiny_fp32.engine"
    engine.write_bytes(bytes(serialized))
    return engine


@needs_tensorrt
def test_engine_outputs_match_onnxruntime(fp32_engine: Path, float_onnx: Path, input_shape: tuple[int, ...]) -> None:
    import onnxruntime as ort

    x = np.random.default_rng().standard_normal(input_shape).astype(np.float32)
    expected = ort.InferenceSession(str(float_onnx), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    with EngineRunner(fp32_engine) as engine:
        assert [spec.name for spec in engine.inputs] == ["images"]
        outputs = engine.infer({"images": x})
    np.testing.assert_allclose(outputs["out"], expected, rtol=1e-3, atol=1e-3)


@needs_tensorrt
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_engine_time_report(fp32_engine: Path, cuda_graph: bool) -> None:
    with EngineRunner(fp32_engine) as engine:
        if cuda_graph and not engine.backend.graphs:
            pytest.skip(f"the {engine.backend.name} buffer backend has no CUDA graphs")
        report = engine.time(iterations=50, warmup=5, cuda_graph=cuda_graph)
    jsonschema.validate(report, SCHEMA)
    host, gpu = report["latency_ms"]["host"], report["latency_ms"]["gpu_compute"]
    assert host["count"] == gpu["count"] == 50 and gpu["median"] <= host["median"]
    assert report["memory_mb"]["gpu"] > 0 and report["settings"]["cuda_graph"] is cuda_graph


@needs_tensorrt
def test_engine_from_another_tensorrt_is_refused(tmp_path: Path) -> None:
    engine = tmp_path / "foreign.engine"
    engine.write_bytes(np.random.default_rng().bytes(4096))
    with pytest.raises(EdgeCompressError, match="built by another TensorRT version or for another GPU.*build_engine.sh"):
        EngineRunner(engine)
