"""Per-layer times from the runtimes' own profilers, on a small Conv-BN-SiLU net exported as the build exports it."""

from __future__ import annotations

import statistics
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from edgecompress.errors import EdgeCompressError
from edgecompress.export import export_onnx
from edgecompress.models.yolov8 import C2f, ConvBNSiLU
from edgecompress.profile import LayerProfile, profile_layers
from edgecompress.profile.layer_profile import source_nodes, source_of
from edgecompress.profile.runtimes import RUNTIMES, Runtime, load_runner
from edgecompress.quant import calibrate, quantize_model

SHAPE = (1, 3, 64, 64)


def silu_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(ConvBNSiLU(3, 16, 3, 2), C2f(16, 16, 1, True), ConvBNSiLU(16, 32, 3, 2), nn.Conv2d(32, 6, 1)).eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The float net, and its int8 Q/DQ export in onnxruntime's layout (every conv output quantized)."""
    folder = tmp_path_factory.mktemp("layers")
    example = torch.rand(SHAPE, generator=torch.Generator().manual_seed(1))
    quantized = quantize_model(silu_net(), example, backend="onnxruntime")
    calibrate(quantized, [torch.rand(4, *SHAPE[1:], generator=torch.Generator().manual_seed(seed)) for seed in (2, 3)])
    return {"fp32": export_onnx(silu_net(), example, folder / "fp32.onnx"),
            "int8": export_onnx(quantized, example, folder / "int8.onnx", int8=True)}


def _convs(path: Path) -> set[str]:
    return {node.name for node in onnx.load(str(path)).graph.node if node.op_type == "Conv"}


def _check_layers(profile: LayerProfile, path: Path, conv_type: str) -> None:
    """Slowest first, shares adding up to 100%, every conv of the graph timed, and a positive time for each conv."""
    times = [layer.time_ms for layer in profile.layers]
    assert times == sorted(times, reverse=True) and min(times) >= 0
    assert sum(layer.percent for layer in profile.layers) == pytest.approx(100)
    convs = {layer.name: layer for layer in profile.layers if layer.type == conv_type}
    assert set(convs) == _convs(path)  # the runtime's renamed conv nodes trace back to the ONNX convs, one row each
    assert all(layer.time_ms > 0 for layer in convs.values())


@pytest.mark.parametrize("runtime,conv_type,device", [("onnxruntime", "Conv", "CPUExecutionProvider"), ("openvino", "Convolution", "CPU")])
def test_layers_cover_the_convs_and_fit_in_the_runs(models, runtime, conv_type, device):
    pytest.importorskip(runtime, reason=f"{runtime} is not installed")
    profile = profile_layers(models["fp32"], runtime=runtime, shape=SHAPE, threads=1, warmup=2, runs=5)
    assert (profile.runtime, profile.device, profile.threads, profile.runs) == (runtime, device, 1, 5) and profile.version
    _check_layers(profile, models["fp32"], conv_type)
    assert {layer.precision for layer in profile.layers if layer.type == conv_type} == {"f32"}
    assert 0 < profile.total_ms and profile.run_ms > 0
    # each run's layers fit in that run's wall time, measured around it: on this 0.6 ms net OpenVINO's rounded per-node
    # times add up to 0.64-1.04x of it, run by run (a sum of medians against a median of sums reached 1.23x under load);
    # a bookkeeping slip (runs added up, µs read as ms) would be 5x or 1000x off. How much more the runs take (the
    # runtime's overhead, and on a busy machine its threads waiting for a core) is not bounded.
    trace = load_runner(RUNTIMES[runtime].layer_profiler)(str(models["fp32"]), SHAPE, 1, 0, 2, 5)
    assert statistics.median(sum(run.values()) / wall for run, wall in zip(trace.runs, trace.wall_ms)) < 1.5
    assert LayerProfile.from_dict(profile.to_dict()) == profile


def test_int8_model_runs_integer_kernels_in_onnxruntime(models):
    profile = profile_layers(models["int8"], runtime="onnxruntime", shape=SHAPE, threads=1, warmup=2, runs=5)
    _check_layers(profile, models["int8"], "Conv")
    kernels = {layer.name: (layer.kernel, layer.precision) for layer in profile.layers if layer.type == "Conv"}
    # Q/DQ -> Conv -> Q fused into an integer kernel, the last conv too (its output is quantized, then dequantized)
    assert set(kernels.values()) == {("QLinearConv", "u8")}
    assert not any(layer.kernel.startswith("QLinear") for layer in profile_layers(models["fp32"], shape=SHAPE, threads=1, runs=2).layers)


def test_int8_model_runs_integer_kernels_in_openvino(models):
    pytest.importorskip("openvino", reason="openvino (the dev extra) is not installed")
    profile = profile_layers(models["int8"], runtime="openvino", shape=SHAPE, threads=1, warmup=2, runs=5)
    _check_layers(profile, models["int8"], "Convolution")
    convs = [layer for layer in profile.layers if layer.type == "Convolution"]
    assert {layer.precision for layer in convs} <= {"i8", "u8"} and all(layer.kernel.lower().endswith(("_i8", "_u8")) for layer in convs)


def test_runtime_nodes_trace_back_to_onnx_nodes(models):
    sources = {"/a/Conv": ("/a/Conv", "Conv"), "/a/Conv_output_0": ("/a/Conv", "Conv"), "/Mul_1": ("/Mul_1", "Mul"),
               "output0": ("/head/Conv", "Conv")}
    assert source_of("/a/Conv_output_0_nchwc", sources) == ("/a/Conv", "Conv")  # onnxruntime's NCHWc conv
    assert source_of("/a/Conv/WithoutBiases", sources) == ("/a/Conv", "Conv")  # OpenVINO's conv, its bias fused
    assert source_of("output0_nchwc", sources) == ("/head/Conv", "Conv")  # named after the node's output
    assert source_of("/Mul_1", sources) == ("/Mul_1", "Mul")
    assert source_of("/Mul_14", sources) is None  # another node, not /Mul_1's
    assert source_of("ReorderOutput_token_5", sources) is None  # a layout conversion the runtime added
    assert set(source_nodes(models["fp32"]).values()) >= {(name, "Conv") for name in _convs(models["fp32"])}


def test_bad_input_is_a_one_line_error(models, tmp_path, monkeypatch):
    with pytest.raises(EdgeCompressError, match="not found"):
        profile_layers(tmp_path / "nope.onnx")
    with pytest.raises(EdgeCompressError, match="unknown runtime 'tvm'"):
        profile_layers(models["fp32"], runtime="tvm")
    with pytest.raises(EdgeCompressError, match="runs >= 1"):
        profile_layers(models["fp32"], runs=0)
    ir = tmp_path / "model.xml"
    ir.write_text("<net/>")
    with pytest.raises(EdgeCompressError, match="onnxruntime cannot profile openvino-ir files; use runtime openvino"):
        profile_layers(ir)
    monkeypatch.setitem(RUNTIMES, "whole-only", Runtime("whole-only", "edgecompress.profile.runners:onnxruntime_runner", "onnxruntime"))
    with pytest.raises(EdgeCompressError, match="whole-only has no layer profiler registered.*onnxruntime or openvino"):
        profile_layers(models["fp32"], runtime="whole-only")
