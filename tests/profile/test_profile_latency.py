"""profile_onnx / compare_models measure real onnxruntime runs in a fresh process."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from torch import nn

from edgecompress.errors import EdgeCompressError
from edgecompress.profile import compare_models, profile_onnx, stats_table

SHAPE = (1, 3, 32, 32)


def _export(channels: int, path: Path) -> Path:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, 8, 3, padding=1))
    torch.onnx.export(model.eval(), (torch.randn(SHAPE),), str(path), input_names=["x"], dynamo=False)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("profile")
    return {"wide": _export(64, folder / "wide.onnx"), "narrow": _export(8, folder / "narrow.onnx")}


def test_profile_onnx_returns_sane_numbers(models: dict[str, Path]) -> None:
    stats = profile_onnx(models["wide"], input_shape=SHAPE, warmup=2, runs=20, threads=1)
    assert stats.runs == 20
    assert 0 < stats.min_ms <= stats.median_ms <= stats.p90_ms
    assert stats.min_ms <= stats.mean_ms
    assert stats.peak_memory_mb >= 0 and stats.file_size_bytes == models["wide"].stat().st_size
    assert asdict(stats)["median_ms"] == stats.median_ms


def test_compare_models_same_settings_and_table(models: dict[str, Path]) -> None:
    stats = compare_models(models, SHAPE, warmup=2, runs=15, rounds=2, threads=1)
    assert list(stats) == ["wide", "narrow"] and all(s.runs == 30 for s in stats.values())  # runs of both rounds pooled
    assert stats["narrow"].file_size_bytes < stats["wide"].file_size_bytes
    table = stats_table(stats)
    assert table.row_count == 2


def test_wrong_shape_is_a_user_error(models: dict[str, Path]) -> None:
    with pytest.raises(EdgeCompressError, match="input-shape"):
        profile_onnx(models["wide"], input_shape=(1, 5, 32, 32), warmup=0, runs=1)


def test_unknown_runtime_is_a_user_error(models: dict[str, Path]) -> None:
    with pytest.raises(EdgeCompressError, match="unknown runtime"):
        profile_onnx(models["wide"], input_shape=SHAPE, runs=1, runtime="tvm")


def test_openvino_times_the_float_and_the_int8_model(models: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("openvino", reason="openvino (the dev extra) is not installed")
    from edgecompress.export import export_onnx, openvino_conv_precisions
    from edgecompress.quant import calibrate, quantize_model

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 8, 3, padding=1)).eval()
    quantized = quantize_model(model, torch.rand(SHAPE), backend="onnxruntime")
    calibrate(quantized, [torch.rand(4, *SHAPE[1:]) for _ in range(2)])
    int8 = export_onnx(quantized, torch.rand(SHAPE), tmp_path / "int8.onnx", int8=True)
    assert openvino_conv_precisions(models["wide"]) == {"f32": 2}
    precisions = openvino_conv_precisions(int8)
    assert sum(precisions.values()) == 2 and set(precisions) <= {"u8", "i8"}  # OpenVINO runs the Q/DQ convs as integer kernels
    stats = compare_models({"fp32": models["wide"], "int8": int8}, SHAPE, warmup=2, runs=10, rounds=1, threads=1, runtime="openvino")
    assert all(s.runs == 10 and 0 < s.min_ms <= s.median_ms for s in stats.values())
