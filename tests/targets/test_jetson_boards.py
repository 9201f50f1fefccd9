"""The Jetson boards added for issue 12: Orin NX (8GB: 1 DLA, 16GB: 2 DLA), AGX Thor (JetPack 7, sm_110, no DLA) and
the TensorRT 11 boards (JetPack 7.2.2+), their aliases, and `edgecompress targets` listing them."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from edgecompress.errors import EdgeCompressError
from edgecompress.targets import get_target, list_targets


@pytest.mark.parametrize(("name", "dla", "memory", "workspace"), [
    ("jetson-orin-nx-8gb", 1, 8.0, 1024), ("jetson-orin-nx-16gb", 2, 16.0, 2048)])
def test_orin_nx_modules(name: str, dla: int, memory: float, workspace: int) -> None:
    board = get_target(name)
    assert (board.gpu_arch, board.jetpack, board.tensorrt, board.dla_cores) == ("sm_87", "6.2", "10.3", dla)
    assert (board.memory_gb, board.workspace_mib, board.precision) == (memory, workspace, "int8")


def test_agx_thor_is_blackwell_compute_capability_11_without_dla() -> None:
    thor = get_target("jetson-agx-thor")
    assert (thor.gpu_arch, thor.jetpack, thor.tensorrt_major, thor.dla_cores) == ("sm_110", "7.0", 10, 0)
    assert not thor.strongly_typed and thor.max_onnx_opset == 20 and thor.export_opset == 17


@pytest.mark.parametrize(("name", "arch", "dla"), [("jetson-agx-orin-trt11", "sm_87", 2), ("jetson-agx-thor-trt11", "sm_110", 0)])
def test_tensorrt_11_boards_need_jetpack_7_2_2(name: str, arch: str, dla: int) -> None:
    board = get_target(name)
    assert (board.gpu_arch, board.jetpack, board.tensorrt, board.dla_cores) == (arch, "7.2.2", "11.4", dla)
    assert board.strongly_typed and board.max_onnx_opset == 25
    assert board.deployment(int8_ready=False) == ("fp16", "fp16")  # fp16 only from an fp16 ONNX


def test_an_unprefixed_full_name_wins_over_longer_names_containing_it() -> None:
    assert get_target("agx-orin").name == "jetson-agx-orin"  # not jetson-agx-orin-trt11
    assert get_target("agx-thor").name == "jetson-agx-thor"
    assert get_target("thor-trt11").name == "jetson-agx-thor-trt11"
    with pytest.raises(EdgeCompressError, match="ambiguous: jetson-orin-nx-8gb, jetson-orin-nx-16gb"):
        get_target("orin-nx")
    with pytest.raises(EdgeCompressError, match="ambiguous: jetson-agx-thor, jetson-agx-thor-trt11"):
        get_target("thor")


def test_boards_are_listed_smallest_to_largest_within_each_generation() -> None:
    names = [t.name for t in list_targets()]
    assert names.index("jetson-orin-nano") < names.index("jetson-orin-nx-8gb") < names.index("jetson-orin-nx-16gb") < names.index("jetson-agx-orin")
    assert names.index("jetson-agx-orin") < names.index("jetson-agx-thor") < names.index("jetson-agx-orin-trt11")


def test_targets_command_lists_the_new_boards() -> None:
    from edgecompress.cli import app

    result = CliRunner().invoke(app, ["targets"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in ("jetson-orin-nx-8gb", "jetson-orin-nx-16gb", "jetson-agx-thor", "jetson-agx-orin-trt11", "jetson-agx-thor-trt11", "sm_110"):
        assert name in result.output
