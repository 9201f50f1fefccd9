"""Run folders of two real quick builds (tests/comparison/data) and a comparison of them with latency reports."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgecompress.comparison import compare_runs
from edgecompress.profile import LatencyReport, profile_model

DATA = Path(__file__).parent / "data" / "quick_builds"
CPU_RUN, JETSON_RUN = "yolo-mbv2-cpu-quick", "yolo-mbv2-jetson-orin-nano-quick"


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> Path:
    """A copy of the two run folders (the comparison only reads them; tests may break a copy)."""
    folder = tmp_path_factory.mktemp("runs")
    for run in (CPU_RUN, JETSON_RUN):
        shutil.copytree(DATA / run, folder / run)
    return folder


def device_report(rng: np.random.Generator) -> LatencyReport:
    """A report shaped like the deploy/ runner's on an Orin Nano (random times: test input for the comparison, not a measurement)."""
    times = rng.gamma(6.0, 0.25, size=400)
    layers = [{"name": f"/model.{i}/conv/Conv + /model.{i}/act/Relu", "time_ms": float(t), "percent": None, "type": "Convolution",
               "precision": "int8" if i % 4 else "fp16"} for i, t in enumerate(rng.uniform(0.005, 0.2, size=24))]
    return LatencyReport.from_times(
        times, model={"path": "model.engine", "bytes": 1_900_000, "format": "engine", "stage": "int8"},
        runtime={"name": "tensorrt", "version": "10.3.0", "device": "GPU", "precision": "int8"},
        machine={"cpu": "ARMv8 Processor rev 1 (v8l)", "gpu": "NVIDIA Jetson Orin Nano (integrated GPU)", "target": "jetson-orin-nano"},
        inputs=[{"name": "images", "shape": [1, 3, 128, 128], "dtype": "float32"}], settings={"warmup": 50, "iterations": 400, "batch": 1},
        source="edgecompress-runner", layers=layers)


@pytest.fixture(scope="session")
def comparison(runs, tmp_path_factory) -> dict[str, Path]:
    """compare_runs over both runs, a real onnxruntime timing of an ONNX in the CPU run's export folder, and a device report."""
    folder = tmp_path_factory.mktemp("latency")
    torch.manual_seed(0)
    onnx = runs / CPU_RUN / "export" / "pruned.onnx"
    small = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1)).eval()
    torch.onnx.export(small, (torch.randn(1, 3, 128, 128),), str(onnx), input_names=["images"], dynamo=False)
    timed = profile_model(onnx, iterations=40, warmup=2, threads=1, stage="pruned").save(folder / "pruned_onnxruntime.json")
    device = device_report(np.random.default_rng(secrets.randbits(32))).save(folder / "orin_nano_int8.json")
    return compare_runs([runs / CPU_RUN, runs / JETSON_RUN], [timed, device], tmp_path_factory.mktemp("out") / "comparison")
