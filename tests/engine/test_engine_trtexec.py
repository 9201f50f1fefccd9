"""trtexec commands per TensorRT major version."""

from __future__ import annotations

import dataclasses

import pytest

from edgecompress.engine import RECIPES, profile_command, trtexec_command
from edgecompress.targets import get_target
from edgecompress.errors import EdgeCompressError


def test_recipes_cover_tensorrt_8_10_11() -> None:
    assert sorted(RECIPES) == [8, 10, 11]


def test_nano_fp16_uses_tensorrt_8_workspace_syntax() -> None:
    command = trtexec_command(get_target("jetson-nano"), "model.onnx", "model.engine", precision="fp16")
    assert command == ["trtexec", "--onnx=model.onnx", "--saveEngine=model.engine", "--fp16", "--workspace=512"]
    built = trtexec_command(get_target("jetson-nano"), "m.onnx", "m.engine", precision="fp16", workspace_mib=256,
                            timing_cache="t.cache", layer_info="layers.json", build_only=True)
    assert built[4:] == ["--workspace=256", "--timingCacheFile=t.cache", "--profilingVerbosity=detailed",
                         "--exportLayerInfo=layers.json", "--buildOnly"]  # 8.x has no --skipInference


@pytest.mark.parametrize(("name", "mib"), [("jetson-nano", 512), ("jetson-orin-nano", 1024), ("jetson-orin-nx-16gb", 2048),
                                           ("jetson-agx-orin", 4096), ("h100", 4096)])
def test_default_workspace_is_an_eighth_of_the_board_memory(name: str, mib: int) -> None:
    target = get_target(name)
    assert target.workspace_mib == mib
    assert any(arg.endswith(f"workspace:{mib}") or arg == f"--workspace={mib}"
               for arg in trtexec_command(target, "m.onnx", "m.engine", precision=target.precision))


def test_nano_refuses_int8() -> None:
    with pytest.raises(EdgeCompressError, match="no fast int8.*--precision fp16"):
        trtexec_command(get_target("jetson-nano"), "m.onnx", "m.engine", precision="int8")


def test_orin_int8_from_qdq_with_mempool_and_dla() -> None:
    orin = get_target("jetson-agx-orin")
    command = trtexec_command(orin, "m.onnx", "m.engine", precision="int8", workspace_mib=2048, dla_core=1)
    assert command == [
        "trtexec", "--onnx=m.onnx", "--saveEngine=m.engine", "--int8", "--fp16",
        "--memPoolSize=workspace:2048", "--useDLACore=1", "--allowGPUFallback",
    ]
    assert not any(flag.startswith("--workspace") for flag in command)


def test_xavier_is_tensorrt_8_and_orin_nano_has_no_dla() -> None:
    xavier = trtexec_command(get_target("jetson-xavier-nx"), "m.onnx", "m.engine", precision="int8")
    assert "--workspace=1024" in xavier and "--int8" in xavier
    with pytest.raises(EdgeCompressError, match="0 DLA core.*jetson-orin-nx-8gb"):
        trtexec_command(get_target("jetson-orin-nano"), "m.onnx", "m.engine", precision="int8", dla_core=0)
    with pytest.raises(EdgeCompressError, match="1 DLA core"):
        trtexec_command(get_target("jetson-orin-nx-8gb"), "m.onnx", "m.engine", precision="int8", dla_core=1)


@pytest.mark.parametrize("name", ["jetson-agx-thor-trt11", "jetson-agx-orin-trt11"])
def test_tensorrt_11_jetsons_are_strongly_typed(name: str) -> None:
    target = get_target(name)
    command = trtexec_command(target, "m.onnx", "m.engine", precision="int8", build_only=True)
    assert target.strongly_typed and not {"--int8", "--fp16"} & set(command)
    assert "--skipInference" in command and f"--memPoolSize=workspace:{target.workspace_mib}" in command


def test_tensorrt_11_is_strongly_typed_without_precision_flags() -> None:
    h100_trt11 = dataclasses.replace(get_target("h100"), tensorrt="11.4")
    assert h100_trt11.strongly_typed
    int8 = trtexec_command(h100_trt11, "m.onnx", "m.engine", precision="int8")
    fp16 = trtexec_command(h100_trt11, "m.onnx", "m.engine", precision="fp16")
    for command in (int8, fp16):
        assert not {"--int8", "--fp16", "--best", "--stronglyTyped"} & set(command)
    assert "--onnx=m.onnx" in int8 and "--onnx=m_fp16.onnx" in fp16  # fp16 comes from the AutoCast ONNX


def test_cpu_has_no_trtexec_recipe() -> None:
    with pytest.raises(EdgeCompressError, match="no build recipe"):
        trtexec_command(get_target("cpu"), "m.onnx", "m.engine", precision="int8")


def test_profile_command_loads_engine_and_times_it() -> None:
    command = profile_command("m.engine", iterations=50, warmup_ms=200, avg_runs=5)
    assert command[:5] == ["trtexec", "--loadEngine=m.engine", "--iterations=50", "--warmUp=200", "--avgRuns=5"]
    assert {"--separateProfileRun", "--dumpProfile"} <= set(command)
    dla = profile_command("m.engine", target=get_target("jetson-agx-orin"), times="t.json", profile="p.json", dla_core=1)
    assert dla[-3:] == ["--useDLACore=1", "--exportTimes=t.json", "--exportProfile=p.json"]
    trt11 = profile_command("m.engine", target=get_target("jetson-agx-thor-trt11"))
    assert "--separateProfileRun" not in trt11  # a no-op from TensorRT 11: the profile run is always separate


def test_dynamic_batch_onnx_gets_a_pinned_optimisation_profile(tmp_path) -> None:
    import torch
    from torch import nn

    from edgecompress.engine.trtexec import static_shapes

    path = tmp_path / "dynamic.onnx"
    torch.onnx.export(nn.Conv2d(3, 4, 3).eval(), (torch.randn(2, 3, 16, 16),), str(path), input_names=["images"],
                      dynamic_axes={"images": {0: "batch"}}, dynamo=False)
    shapes = static_shapes(path)
    assert shapes == "images:1x3x16x16"
    command = trtexec_command(get_target("jetson-orin-nano"), path, "m.engine", precision="fp16", shapes=shapes)
    assert {"--minShapes=images:1x3x16x16", "--optShapes=images:1x3x16x16", "--maxShapes=images:1x3x16x16"} <= set(command)
    fixed = tmp_path / "fixed.onnx"
    torch.onnx.export(nn.Conv2d(3, 4, 3).eval(), (torch.randn(1, 3, 16, 16),), str(fixed), dynamo=False)
    assert static_shapes(fixed) is None
