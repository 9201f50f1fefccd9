"""Per-layer latency tables: the one-layer models compute what the layers compute, tables are measured in a real
runtime, cached per runtime/machine/precision/shape and reused, and their step curves predict off-grid counts."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from edgecompress.errors import EdgeCompressError
from edgecompress.export.qdq import ort_optimized_int8_ops
from edgecompress.profile import LayerShape, LayerTable, layer_shapes, measure_latency_tables, measure_layer_table
from edgecompress.profile.layer_latency import CACHE_ENV, cache_folder, grid
from edgecompress.profile.layer_onnx import one_layer_onnx

LAYERS = {
    "strided": (nn.Conv2d(6, 10, 3, stride=2, padding=1), (1, 6, 9, 11)),
    "dilated-same": (nn.Conv2d(4, 8, 3, padding="same", dilation=2, bias=False), (2, 4, 8, 8)),
    "depthwise": (nn.Conv2d(8, 8, 5, padding=2, groups=8), (1, 8, 7, 7)),
    "grouped": (nn.Conv2d(8, 12, 1, groups=4), (1, 8, 5, 5)),
    "conv1d": (nn.Conv1d(5, 7, 3, padding=1), (1, 5, 16)),
    "linear": (nn.Linear(12, 6), (3, 12)),
}


def _run(model, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("name", list(LAYERS))
def test_one_layer_onnx_computes_the_layer(name: str) -> None:
    """The fp32 model is the torch layer with the ONNX weights; the fp16 model and the int8 Q/DQ models (onnxruntime and
    TensorRT layouts) are close to it."""
    layer, input_shape = LAYERS[name]
    ((shape,),) = layer_shapes(layer, torch.randn(input_shape)).values()
    model = one_layer_onnx(shape, "fp32", seed=3)
    weights = {tensor.name: torch.tensor(numpy_helper.to_array(tensor)) for tensor in model.graph.initializer}
    with torch.no_grad():
        layer.weight.copy_(weights["weight"].T if name == "linear" else weights["weight"])
        if layer.bias is not None:
            layer.bias.copy_(weights["bias"])
    x = np.random.default_rng(7).standard_normal(input_shape, dtype=np.float32)
    expected = layer(torch.from_numpy(x)).detach().numpy()
    assert expected.shape == shape.output_shape
    np.testing.assert_allclose(_run(model, x), expected, rtol=1e-4, atol=1e-5)
    for layout in ("onnxruntime", "tensorrt"):
        int8 = one_layer_onnx(shape, "int8", seed=3, layout=layout)
        assert np.abs(_run(int8, x) - expected).max() < 0.1 * np.abs(expected).max() + 0.05
    half = _run(one_layer_onnx(shape, "fp16", seed=3), x.astype(np.float16))
    assert half.dtype == np.float16 and np.abs(half - expected).max() < 0.01 * np.abs(expected).max() + 0.01


def test_int8_conv_runs_as_an_integer_kernel(tmp_path) -> None:
    shape = LayerShape("conv", 16, 32, (1, 16, 8, 8), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1))
    path = tmp_path / "conv.onnx"
    path.write_bytes(one_layer_onnx(shape, "int8").SerializeToString())
    assert ort_optimized_int8_ops(path).get("QLinearConv") == 1


def test_a_layer_called_twice_has_two_shapes_and_pruned_shapes_follow_the_kept_channels() -> None:
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.dw = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8)

        def forward(self, x):
            return self.dw(self.conv(x)).mean() + self.conv(x[..., ::2, ::2]).mean()

    shapes = layer_shapes(Shared(), torch.randn(1, 3, 16, 16))
    assert [s.input_shape for s in shapes["conv"]] == [(1, 3, 16, 16), (1, 3, 8, 8)]
    (dw,) = shapes["dw"]
    assert dw.depthwise and dw.at(4, 4).groups == 4 and dw.at(4, 4).input_shape == (1, 4, 16, 16)
    with pytest.raises(EdgeCompressError, match="depthwise"):
        dw.at(4, 8)
    assert grid(64, 8, None) == [8, 16, 24, 32, 40, 48, 56, 64] and grid(64, 8, 4) == [16, 32, 48, 64] and grid(5, 8, 16) == [5]


def test_step_curves_predict_counts_between_and_off_the_measured_points() -> None:
    shape = LayerShape("conv", 32, 32, (1, 32, 8, 8), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1))
    points = {(32, 16): 1.0, (32, 32): 2.0, (16, 32): 1.5}
    table = LayerTable(shape, points)
    assert table.curve("out") == [(16, 1.0), (32, 2.0)] and table.curve("in") == [(16, 1.5), (32, 2.0)]
    assert table.latency(32, 20).item() == 2.0  # the next measured count above 20 is 32
    assert table.latency(32, 16).item() == 1.0 and table.latency(32, 3).item() == 1.0
    assert table.latency(16, 16).item() == pytest.approx(1.0 * 1.5 / 2.0)  # out curve x in curve / dense
    assert table.latency(np.array([16, 32]), np.array([16, 16])).tolist() == pytest.approx([0.75, 1.0])
    with pytest.raises(EdgeCompressError, match="dense point"):
        LayerTable(shape, {(32, 16): 1.0})


def _two_convs() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1))


MEASURE = {"warmup": 1, "runs": 3, "rounds": 2, "threads": 1}


def test_tables_are_measured_then_read_from_the_cache(tmp_path) -> None:
    model, x = _two_convs(), torch.randn(1, 3, 8, 8)
    first = measure_latency_tables(model, x, cache_dir=tmp_path, step=8, **MEASURE)
    # conv 0: out channels at 8 and 16 (its input is the image); conv 2: in channels at 8 and 16 (its output is the model's)
    assert sorted(first.tables["0"][0].points) == [(3, 8), (3, 16)] and sorted(first.tables["2"][0].points) == [(8, 8), (16, 8)]
    assert (first.measured_points, first.cached_points) == (4, 0)
    assert all(ms > 0 for calls in first.tables.values() for table in calls for ms in table.points.values())
    files = sorted(tmp_path.glob("onnxruntime-fp32-*.json"))
    assert len(files) == 2
    record = json.loads(files[0].read_text())
    assert record["key"]["machine"]["cpus"] and record["key"]["threads"] == 1 and len(record["points"]) == 2
    second = measure_latency_tables(model, x, cache_dir=tmp_path, step=8, **MEASURE)
    assert (second.measured_points, second.cached_points) == (0, 4)
    assert {name: calls[0].points for name, calls in second.tables.items()} == {name: calls[0].points for name, calls in first.tables.items()}
    finer = measure_latency_tables(model, x, cache_dir=tmp_path, step=4, **MEASURE)  # 4 and 12 are new on each curve
    assert (finer.measured_points, finer.cached_points) == (4, 4)
    other_threads = measure_latency_tables(model, x, cache_dir=tmp_path, step=8, **{**MEASURE, "threads": 2})
    assert other_threads.measured_points == 4 and len(list(tmp_path.glob("*.json"))) == 4


def test_cache_folder_and_bad_requests(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "tables"))
    assert cache_folder() == tmp_path / "tables" and cache_folder(tmp_path) == tmp_path
    shape = LayerShape("linear", 4, 4, (1, 4))
    with pytest.raises(EdgeCompressError, match="TensorRT"):
        measure_layer_table(shape, precision="fp16")
    with pytest.raises(EdgeCompressError, match="unknown runtime"):
        measure_layer_table(shape, runtime="tvm")
    with pytest.raises(EdgeCompressError, match="runs >= 1"):
        measure_layer_table(shape, runs=0)


def test_openvino_int8_table(tmp_path) -> None:
    pytest.importorskip("openvino", reason="openvino (the dev extra) is not installed")
    shape = LayerShape("conv", 8, 16, (1, 8, 8, 8), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1))
    table, timed = measure_layer_table(shape, ("out",), runtime="openvino", precision="int8", step=8, cache_dir=tmp_path, **MEASURE)
    assert timed == 2 and [count for count, _ in table.curve("out")] == [8, 16]
    assert measure_layer_table(shape, ("out",), runtime="openvino", precision="int8", step=8, cache_dir=tmp_path, **MEASURE)[1] == 0
