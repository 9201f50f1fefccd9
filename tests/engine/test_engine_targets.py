"""Facts of the target registry that the pipeline relies on."""

from __future__ import annotations

import pytest

from edgecompress.profile.cpu import int8_dot_products_saturate

from edgecompress.targets import TARGETS, get_target, list_targets
from edgecompress.errors import EdgeCompressError


def test_nano_has_no_int8_so_defaults_to_fp16_and_skips_qat() -> None:
    nano = get_target("jetson-nano")
    assert (nano.gpu_arch, nano.tensorrt, nano.jetpack) == ("sm_53", "8.2", "4.6.x")
    assert not nano.int8 and nano.fp16 and nano.precision == "fp16"
    assert nano.dla_cores == 0 and nano.memory_gb == 4.0


@pytest.mark.parametrize(
    ("name", "arch", "trt", "dla"),
    [
        ("jetson-xavier-nx", "sm_72", "8.5", 2),
        ("jetson-agx-xavier", "sm_72", "8.5", 2),
        ("jetson-orin-nano", "sm_87", "10.3", 0),
        ("jetson-orin-nx-8gb", "sm_87", "10.3", 1),
        ("jetson-orin-nx-16gb", "sm_87", "10.3", 2),
        ("jetson-agx-orin", "sm_87", "10.3", 2),
        ("jetson-agx-thor", "sm_110", "10.13", 0),
        ("jetson-agx-orin-trt11", "sm_87", "11.4", 2),
        ("jetson-agx-thor-trt11", "sm_110", "11.4", 0),
    ],
)
def test_xavier_orin_and_thor_run_int8(name: str, arch: str, trt: str, dla: int) -> None:
    target = get_target(name)
    assert (target.gpu_arch, target.tensorrt, target.dla_cores) == (arch, trt, dla)
    assert target.int8 and target.precision == "int8" and target.kind == "jetson"


def test_desktop_gpus_and_cpu() -> None:
    arches = {name: TARGETS[name].gpu_arch for name in ("t4", "a100", "rtx-3090", "rtx-4090", "h100")}
    assert arches == {"t4": "sm_75", "a100": "sm_80", "rtx-3090": "sm_86", "rtx-4090": "sm_89", "h100": "sm_90"}
    assert all(TARGETS[name].tensorrt_major == 10 and TARGETS[name].kind == "gpu" for name in arches)
    cpu = get_target("cpu")
    assert cpu.kind == "cpu" and cpu.tensorrt is None and cpu.gpu_arch is None and cpu.memory_gb > 0


def test_every_target_is_consistent() -> None:
    targets = list_targets()
    assert [t.name for t in targets] == list(TARGETS)
    for target in targets:
        assert target.precision == ("int8" if target.int8 else "fp16")
        assert (target.gpu_arch is None) == (target.kind == "cpu")
        assert target.strongly_typed == target.name.endswith("-trt11")  # TensorRT 11 targets say so in their name
        assert target.jetpack is None or not target.strongly_typed or target.jetpack >= "7.2.2"


def test_unknown_target_lists_known_ones() -> None:
    with pytest.raises(EdgeCompressError, match="jetson-nano.*edgecompress targets"):
        get_target("jetson-nanoo")


def test_what_each_target_ships_and_how_it_is_built() -> None:
    from dataclasses import replace

    nano, orin, cpu = get_target("jetson-nano"), get_target("jetson-orin-nano"), get_target("cpu")
    assert nano.deployment(int8_ready=False) == ("fp16", "pruned")  # TensorRT 8.2 takes --fp16 on the float ONNX
    assert replace(nano, tensorrt="11.4").deployment(int8_ready=False) == ("fp16", "fp16")  # strongly typed: the fp16 ONNX
    assert orin.deployment(int8_ready=True) == ("int8", "int8") and orin.deployment(int8_ready=False) == ("fp16", "pruned")
    assert (nano.export_opset, orin.export_opset, cpu.export_opset) == (13, 17, 17)
    assert (orin.max_onnx_opset, cpu.max_onnx_opset) == (20, None)
    assert (cpu.qdq_backend, cpu.builder, orin.qdq_backend, orin.builder) == ("onnxruntime", "onnxruntime", "tensorrt", "tensorrt")
    # the cpu target's weights follow this CPU: without VNNI int8 kernels saturate with 8-bit weights, so they get 7
    assert (cpu.weight_bits, orin.weight_bits) == (7 if int8_dot_products_saturate() else 8, 8)


def test_aliases_resolve_in_every_command() -> None:
    from edgecompress.settings import BuildConfig

    assert get_target("orin-nano").name == "jetson-orin-nano" and get_target("4090").name == "rtx-4090"
    assert BuildConfig(target="orin-nano").resolved().target == "jetson-orin-nano"
    with pytest.raises(EdgeCompressError, match="ambiguous"):
        get_target("orin")
