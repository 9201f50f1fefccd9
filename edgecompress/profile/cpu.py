"""Facts about this machine's CPU that change what int8 models compute or cost here."""

from __future__ import annotations

import platform
from functools import lru_cache

VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (``/proc/cpuinfo``); empty where it does not."""
    try:
        with open("/proc/cpuinfo") as handle:
            line = next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        return frozenset()
    return frozenset(line.partition(":")[2].split())


def int8_dot_products_saturate() -> bool:
    """Whether 8-bit dot products here go through a 16-bit intermediate that saturates (x86-64 without VNNI).

    On such CPUs (AVX2 or AVX-512 without VNNI) onnxruntime's u8s8 kernels (VPMADDUBSW) and OpenVINO's
    int8 kernels can overflow when two products of large activations and weights add up past 32767, so
    an int8 model with full 8-bit weights computes visibly different outputs than its Q/DQ graph says.
    VNNI CPUs, ARM and GPUs are not affected. The known workaround is 7-bit weights (OpenVINO's
    "Saturation (overflow) issue workaround"; onnxruntime's quantization guide, reduce_range).
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    flags = cpu_flags()
    return bool(flags) and not flags & VNNI_FLAGS
