"""The latency report: numpy's percentiles, the schema on every report written, real timings in onnxruntime and OpenVINO."""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from torch import nn

from edgecompress.errors import EdgeCompressError
from edgecompress.profile import LatencyReport, latency_stats, profile_model, report_tables, validate_report
from edgecompress.profile.latency_report import schema
from edgecompress.profile.machine import cpu_model

SHAPE = (1, 3, 32, 32)


def _random_times() -> tuple[np.ndarray, int]:
    """Fresh long-tailed timings (a new seed each run, returned so a failure can be replayed)."""
    seed = secrets.randbits(32)
    rng = np.random.default_rng(seed)
    return rng.lognormal(mean=0.5, sigma=0.6, size=int(rng.integers(1, 500))), seed


def _report(times: np.ndarray, **extra) -> LatencyReport:
    return LatencyReport.from_times(
        times, model={"path": "m.onnx", "bytes": 1234, "format": "onnx", "stage": "int8"},
        runtime={"name": "onnxruntime", "version": "1", "device": "CPU", "precision": None}, machine={"cpu": cpu_model()},
        inputs=[{"name": "x", "shape": list(SHAPE), "dtype": "float32"}], settings={"warmup": 0, "iterations": len(times), "batch": 1},
        peak_host_mb=3.5, **extra)


def _check_schema(data: dict) -> None:
    jsonschema.Draft202012Validator.check_schema(schema())
    jsonschema.Draft202012Validator(schema()).validate(data)


def test_statistics_are_numpys_percentiles():
    for _ in range(20):
        times, seed = _random_times()
        stats = latency_stats(times)
        expected = {"median": np.median(times), "p90": np.percentile(times, 90), "p99": np.percentile(times, 99),
                    "mean": times.mean(), "min": times.min(), "max": times.max()}
        assert stats["count"] == len(times), seed
        assert all(stats[key] == pytest.approx(value, rel=1e-12, abs=0) for key, value in expected.items()), seed
        assert stats["min"] <= stats["median"] <= stats["p90"] <= stats["p99"] <= stats["max"], seed


def test_every_written_report_follows_the_schema_and_reads_back(tmp_path):
    times, seed = _random_times()
    report = _report(times, layers=[{"name": "conv1", "time_ms": float(times[0]), "percent": 40.0, "type": "Conv", "precision": "int8"}])
    path = report.save(tmp_path / "latency.json")
    data = json.loads(path.read_text())
    _check_schema(data)
    assert data["schema"] == "edgecompress.latency/1" and data["times_ms"] == pytest.approx(list(times)), seed
    assert data["throughput_ips"] == pytest.approx(len(times) / (times.sum() / 1e3)), seed
    again = LatencyReport.load(path)
    assert again.to_dict() == data
    assert len(report_tables(again)) == 2  # latency, and the per-layer table


def test_keys_outside_the_schema_pass_through(tmp_path):
    data = _report(_random_times()[0]).to_dict() | {"runner": {"git": "abc123"}}
    (tmp_path / "runner.json").write_text(json.dumps(data))
    assert LatencyReport.load(tmp_path / "runner.json").to_dict()["runner"] == {"git": "abc123"}


@pytest.mark.parametrize("with_jsonschema", [True, False], ids=["jsonschema", "required-keys"])
def test_a_report_missing_a_statistic_is_a_one_line_error(monkeypatch, with_jsonschema):
    if not with_jsonschema:
        monkeypatch.setitem(sys.modules, "jsonschema", None)  # `import jsonschema` raises ImportError
    data = _report(_random_times()[0]).to_dict()
    del data["latency_ms"]["host"]["p99"]
    with pytest.raises(EdgeCompressError, match=r"^runner\.json is not a latency report .*p99") as error:
        validate_report(data, "runner.json")
    assert "\n" not in str(error.value)
    data = _report(_random_times()[0]).to_dict() | {"schema": "edgecompress.latency/0"}
    with pytest.raises(EdgeCompressError, match="latency/1"):
        validate_report(data, "old.json")


def test_missing_or_garbled_files_are_one_line_errors(tmp_path):
    with pytest.raises(EdgeCompressError, match="nope.json not found"):
        LatencyReport.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(EdgeCompressError, match="bad.json is not valid JSON"):
        LatencyReport.load(tmp_path / "bad.json")


def test_cpu_model_reads_proc_cpuinfo_on_x86_and_arm():
    assert cpu_model("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n") == "Intel(R) Xeon(R) CPU @ 2.20GHz"
    assert cpu_model("processor\t: 0\nBogoMIPS\t: 62.50\nCPU part\t: 0xd42\n\nHardware\t: NVIDIA Jetson Orin Nano\n") == "NVIDIA Jetson Orin Nano"


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1)).eval()
    path = tmp_path_factory.mktemp("profile") / "tiny.onnx"
    torch.onnx.export(model, (torch.randn(SHAPE),), str(path), input_names=["x"], dynamo=False,
                      dynamic_axes={"x": {0: "batch"}})  # a symbolic batch: timed as 1 unless --shape says otherwise
    return path


def test_profile_model_times_an_onnx_model_in_onnxruntime(onnx_model, tmp_path):
    report = profile_model(onnx_model, iterations=25, warmup=2, threads=1, stage="baseline")
    data = json.loads(report.save(tmp_path / "r.json").read_text())
    _check_schema(data)
    times = np.asarray(data["times_ms"])
    assert len(times) == 25 and data["latency_ms"]["host"]["p99"] == pytest.approx(np.percentile(times, 99))
    assert data["latency_ms"]["host"]["max"] == times.max() and data["memory_mb"]["peak_host"] >= 0
    assert data["inputs"] == [{"name": "x", "shape": [1, 3, 32, 32], "dtype": "float32"}]
    assert data["model"] == {"path": str(onnx_model), "bytes": onnx_model.stat().st_size, "format": "onnx", "stage": "baseline"}
    assert data["runtime"]["name"] == "onnxruntime" and data["runtime"]["version"] and data["runtime"]["device"] == "CPU"
    assert 0 < data["throughput_ips"] <= 1e3 / times.mean() * 1.0001  # over the loop's wall time, which includes the loop itself


def test_profile_model_times_onnx_and_the_ir_in_openvino(onnx_model, tmp_path):
    ov = pytest.importorskip("openvino", reason="openvino (the dev extra) is not installed")
    report = profile_model(onnx_model, runtime="openvino", shape=(2, 3, 32, 32), iterations=10, warmup=1, threads=1)
    assert report.runtime["name"] == "openvino" and report.inputs[0]["shape"] == [2, 3, 32, 32] and report.settings["batch"] == 2
    xml = tmp_path / "tiny.xml"
    ov.save_model(ov.convert_model(str(onnx_model)), str(xml))
    ir = profile_model(xml, runtime="openvino", shape=SHAPE, iterations=10, warmup=1, threads=1)
    _check_schema(ir.to_dict())
    assert ir.model["format"] == "openvino-ir" and ir.model["bytes"] == xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
    assert ir.inputs[0]["name"] == "x" and ir.host["count"] == 10


def test_profile_model_refuses_before_timing(onnx_model, tmp_path):
    (tmp_path / "m.pt").write_bytes(b"x")
    (tmp_path / "m.xml").write_text("<net/>")
    with pytest.raises(EdgeCompressError, match="cannot time a .pt file"):
        profile_model(tmp_path / "m.pt")
    with pytest.raises(EdgeCompressError, match="onnxruntime cannot time openvino-ir files; use --runtime openvino"):
        profile_model(tmp_path / "m.xml", runtime="onnxruntime")
    with pytest.raises(EdgeCompressError, match="--iterations must be >= 1"):
        profile_model(onnx_model, iterations=0)
    with pytest.raises(EdgeCompressError, match="input shape 1,5,32,32"):
        profile_model(onnx_model, shape=(1, 5, 32, 32), iterations=1, warmup=0)


def test_cuda_without_the_provider_names_the_fix(onnx_model):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider; the refusal is for one without it")
    with pytest.raises(EdgeCompressError, match="no CUDAExecutionProvider .*pip install onnxruntime-gpu"):
        profile_model(onnx_model, device="cuda")
