"""Latency sources of `edgecompress profile`: a schema report passed through, trtexec's exports imported, an engine refused without TensorRT."""

from __future__ import annotations

import importlib.util
import json
import secrets

import jsonschema
import numpy as np
import pytest

from edgecompress.comparison import import_report, profile_file
from edgecompress.comparison.sources import import_kind
from edgecompress.errors import EdgeCompressError
from edgecompress.profile import LatencyReport
from edgecompress.profile.latency_report import schema

needs_trtexec_reader = pytest.mark.skipif(importlib.util.find_spec("edgecompress.engine.trtexec_reports") is None,
                                          reason="edgecompress.engine.trtexec_reports (the trtexec importer) is not in this tree")


def write_trtexec_exports(folder, rng: np.random.Generator, inferences: int = 60) -> dict[str, object]:
    """trtexec's three export files in the layout samples/common/sampleReporting.cpp writes (TensorRT 8.5+: no warm-up
    records), with fresh random times; returns the paths and the host latencies they hold."""
    records, start = [], 250.0
    for _ in range(inferences):
        h2d, compute, d2h = rng.uniform(0.02, 0.05), rng.lognormal(0.0, 0.3), rng.uniform(0.02, 0.05)
        record = {"startEnqMs": start, "endEnqMs": start + 0.01, "startH2dMs": start, "endH2dMs": start + h2d,
                  "startComputeMs": start + h2d, "endComputeMs": start + h2d + compute, "startD2hMs": start + h2d + compute,
                  "endD2hMs": start + h2d + compute + d2h, "h2dMs": h2d, "computeMs": compute, "d2hMs": d2h, "latencyMs": h2d + compute + d2h}
        records.append(record)
        start = record["endD2hMs"] + 0.005
    layer_ms = rng.uniform(0.01, 0.3, size=5)
    names = ["conv1 + relu1", "conv2 + relu2", "conv3", "head_quantize", "head_dequantize"]
    profile = [{"count": inferences}] + [{"name": name, "timeMs": float(ms * inferences), "averageMs": float(ms), "medianMs": float(ms),
                                          "percentage": float(100 * ms / layer_ms.sum())} for name, ms in zip(names, layer_ms)]
    tensor = lambda name, kind: {"Name": name, "Location": "Device", "Dimensions": [1, 16, 64, 64], "Format/Datatype": kind}  # noqa: E731
    layer_info = {"Layers": [{"Name": name, "LayerType": "CaskConvolution", "Inputs": [tensor("images" if i == 0 else f"t{i}", "Row major linear INT8 format")],
                              "Outputs": [tensor(f"t{i + 1}", "Row major linear INT8 format")]} for i, name in enumerate(names)],
                  "Bindings": ["images", "t5"]}
    paths = {}
    for kind, data in (("times", records), ("profile", profile), ("layers", layer_info)):
        paths[kind] = folder / f"{kind}.json"
        paths[kind].write_text(json.dumps(data, indent=1))
    paths["host_ms"] = [record["latencyMs"] for record in records]
    return paths


@needs_trtexec_reader
def test_trtexec_exports_import_into_the_schema(tmp_path):
    seed = secrets.randbits(32)
    files = write_trtexec_exports(tmp_path, np.random.default_rng(seed))
    assert [import_kind(files[kind]) for kind in ("times", "profile", "layers")] == ["times", "profile", "layer_info"]
    report = import_report([files["layers"], files["times"], files["profile"]], model=tmp_path / "model.engine", stage="int8",
                           target="jetson-orin-nano", precision="int8")
    data = report.to_dict()
    jsonschema.validate(data, schema())
    host = np.asarray(files["host_ms"])
    assert data["latency_ms"]["host"]["p99"] == pytest.approx(np.percentile(host, 99)), seed
    assert data["latency_ms"]["host"]["median"] == pytest.approx(np.median(host)), seed
    assert data["latency_ms"]["gpu_compute"]["count"] == len(host) and data["runtime"]["precision"] == "int8"
    assert data["model"]["stage"] == "int8" and data["model"]["format"] == "engine"
    assert {layer["name"] for layer in data["layers"]} >= {"conv1 + relu1", "head_dequantize"}
    assert all(layer.get("precision") == "int8" for layer in data["layers"])


@needs_trtexec_reader
def test_trtexec_imports_need_the_times_and_the_model(tmp_path):
    files = write_trtexec_exports(tmp_path, np.random.default_rng(secrets.randbits(32)))
    with pytest.raises(EdgeCompressError, match="--exportTimes file; import it too"):
        import_report([files["profile"]], model=tmp_path / "model.engine")
    with pytest.raises(EdgeCompressError, match="name what trtexec timed"):
        import_report([files["times"]])
    with pytest.raises(EdgeCompressError, match="both times files"):
        import_report([files["times"], files["times"]], model=tmp_path / "model.engine")


def test_a_runner_report_is_checked_and_passed_through(tmp_path):
    times = np.random.default_rng(secrets.randbits(32)).gamma(4.0, 0.5, size=300)
    written = LatencyReport.from_times(
        times, model={"path": "yolo_int8.engine", "bytes": 4_000_000, "format": "engine", "stage": "int8"},
        runtime={"name": "tensorrt", "version": "10.3.0", "device": "GPU", "precision": "int8"},
        machine={"cpu": "ARMv8 Processor rev 1 (v8l)", "gpu": "Orin (nvgpu)", "target": "jetson-orin-nano", "power_mode": "15W (0)"},
        inputs=[{"name": "images", "shape": [1, 3, 320, 320], "dtype": "float32"}], settings={"warmup": 50, "iterations": 300, "cuda_graph": True},
        source="edgecompress-runner").to_dict() | {"runner_build": "Release"}
    (tmp_path / "runner.json").write_text(json.dumps(written))
    assert import_kind(tmp_path / "runner.json") == "report"
    assert import_report([tmp_path / "runner.json"]).to_dict() == written
    (tmp_path / "profile.json").write_text(json.dumps([{"count": 10}, {"name": "conv1", "averageMs": 0.2}]))
    with pytest.raises(EdgeCompressError, match="complete latency report; import it alone"):
        import_report([tmp_path / "runner.json", tmp_path / "profile.json"])


def test_imports_that_are_not_reports_are_one_line_errors(tmp_path):
    (tmp_path / "odd.json").write_text(json.dumps({"hello": 1}))
    (tmp_path / "broken.json").write_text("[{")
    (tmp_path / "times.txt").write_text("[]")
    for name, message in (("odd.json", "neither a latency report nor a trtexec export"), ("broken.json", "not valid JSON"),
                          ("times.txt", "imports are .json files"), ("missing.json", "missing.json not found")):
        with pytest.raises(EdgeCompressError, match=message) as error:
            import_report([tmp_path / name])
        assert "\n" not in str(error.value)


def test_an_engine_without_tensorrt_says_what_to_install(tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here; the refusal is for machines without it")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0" * 64)
    with pytest.raises(EdgeCompressError, match=r"needs TensorRT's Python bindings .*python3-libnvinfer.*edgecompress\[tensorrt\]"):
        profile_file(engine)
    with pytest.raises(EdgeCompressError, match="runs in TensorRT on its GPU"):
        profile_file(engine, runtime="openvino")


@needs_trtexec_reader
def test_profile_command_imports_trtexec_exports(tmp_path):
    from typer.testing import CliRunner

    from edgecompress.cli import app

    files = write_trtexec_exports(tmp_path, np.random.default_rng(secrets.randbits(32)))
    result = CliRunner().invoke(app, ["profile", str(tmp_path / "model.engine"), "--import", str(files["times"]), "--import", str(files["profile"]),
                                      "--stage", "int8", "--precision", "int8", "--json", str(tmp_path / "latency.json")])
    assert result.exit_code == 0, result.output
    assert "│ gpu" in result.output and "layers, slowest first" in result.output  # GPU compute row, per-layer table
    data = json.loads((tmp_path / "latency.json").read_text())
    jsonschema.validate(data, schema())
    assert data["latency_ms"]["host"]["median"] == pytest.approx(np.median(files["host_ms"]))
