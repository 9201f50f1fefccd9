"""profile_onnx / compare_models measure real onnxruntime runs in a fresh process."""

from __future__ import annotations

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
    assert stats.to_dict()["median_ms"] == stats.median_ms


def test_compare_models_same_settings_and_table(models: dict[str, Path]) -> None:
    stats = compare_models(models, SHAPE, warmup=2, runs=15, rounds=2, threads=1)
    assert list(stats) == ["wide", "narrow"] and all(s.runs == 30 for s in stats.values())  # runs of both rounds pooled
    assert stats["narrow"].file_size_bytes < stats["wide"].file_size_bytes
    table = stats_table(stats)
    assert table.row_count == 2


def test_wrong_shape_is_a_user_error(models: dict[str, Path]) -> None:
    with pytest.raises(EdgeCompressError, match="input-shape"):
        profile_onnx(models["wide"], input_shape=(1, 5, 32, 32), warmup=0, runs=1)
