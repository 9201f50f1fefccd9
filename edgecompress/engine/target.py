"""Deployment targets: what each device's GPU and TensorRT can do, so the pipeline picks a precision that builds.

Every fact group cites the NVIDIA page it was checked against. Compute capabilities:
https://developer.nvidia.com/cuda-gpus and https://developer.nvidia.com/cuda-legacy-gpus .
Precision per compute capability (INT8 / FP16 / DLA columns of "Hardware and Precision"):
https://docs.nvidia.com/deeplearning/tensorrt/archives/tensorrt-825/support-matrix/index.html
(and the current https://docs.nvidia.com/deeplearning/tensorrt/support-matrix).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import psutil

from ..errors import EdgeCompressError

Kind = Literal["jetson", "gpu", "cpu"]
Precision = Literal["int8", "fp16", "fp32"]


@dataclass(frozen=True)
class Target:
    """One device class a model can be deployed to."""

    name: str
    description: str
    kind: Kind
    gpu_arch: str | None  # "sm_87"; None for the CPU
    jetpack: str | None
    tensorrt: str | None  # TensorRT version the device ships or we recommend; None for the CPU
    int8: bool  # fast int8 kernels (a Q/DQ network builds and runs in int8)
    fp16: bool
    dla_cores: int
    memory_gb: float
    precision: Precision  # best default precision
    notes: str = ""

    @property
    def tensorrt_major(self) -> int | None:
        """Major TensorRT version (8, 10, 11), the key of the build-recipe registry."""
        return int(self.tensorrt.split(".")[0]) if self.tensorrt else None

    @property
    def strongly_typed(self) -> bool:
        """TensorRT 11 builds only strongly typed networks: no --fp16/--int8; int8 from Q/DQ, fp16 from an fp16 ONNX.

        https://docs.nvidia.com/deeplearning/tensorrt/11.4.1/api/migration/tensorrt-10x-to-11x-trtexec.html
        """
        return (self.tensorrt_major or 0) >= 11

    @property
    def qat_useful(self) -> bool:
        """Whether int8 QAT pays off here; on a no-int8 GPU a Q/DQ network does not build, so QAT is skipped."""
        return self.int8


def _jetson(**fields) -> Target:
    return Target(kind="jetson", **fields)


def _gpu(**fields) -> Target:
    return Target(kind="gpu", jetpack=None, dla_cores=0, int8=True, fp16=True, precision="int8", **fields)


# Current TensorRT 10.x for desktop/data-centre GPUs: 10.16 is documented at
# https://docs.nvidia.com/deeplearning/tensorrt/10.16.1/api/tensorrt-8x-to-10x-trtexec.html .
# TensorRT 11 also exists (strongly typed only); pick it with dataclasses.replace(target, tensorrt="11.4").
_DESKTOP_TRT = "10.16"

_TARGETS: tuple[Target, ...] = (
    # Jetson Nano: Maxwell sm_5.3 (cuda-legacy-gpus); JetPack 4.6.1 ships TensorRT 8.2
    # (https://developer.nvidia.com/jetpack-sdk-461); newer JetPacks do not support the Nano.
    # Support matrix: 5.3 has FP16 but no INT8 and no DLA.
    _jetson(
        name="jetson-nano", description="Jetson Nano 4GB (Maxwell GPU)", gpu_arch="sm_53",
        jetpack="4.6.x", tensorrt="8.2", int8=False, fp16=True, dla_cores=0, memory_gb=4.0, precision="fp16",
        notes="No fast int8: QAT is skipped and the fp16 ONNX is shipped (a Q/DQ network fails to build here).",
    ),
    # Jetson TX2: Pascal sm_6.2 (cuda-legacy-gpus); JetPack 4.6.x / TensorRT 8.2 as the Nano.
    # No INT8 (DP4A) on 6.2, FP16 yes, no DLA.
    _jetson(
        name="jetson-tx2", description="Jetson TX2 8GB (Pascal GPU)", gpu_arch="sm_62",
        jetpack="4.6.x", tensorrt="8.2", int8=False, fp16=True, dla_cores=0, memory_gb=8.0, precision="fp16",
        notes="No fast int8: QAT is skipped and the fp16 ONNX is shipped.",
    ),
    # Xavier: Volta sm_7.2 (cuda-legacy-gpus: Jetson AGX Xavier, Jetson Xavier NX). JetPack 5.1 packages
    # CUDA 11.4 and TensorRT 8.5.2 and supports both (https://developer.nvidia.com/embedded/jetpack-sdk-51).
    # Support matrix row 7.2: INT8, FP16, INT8/FP16 tensor cores, DLA; Xavier SoCs have up to two
    # first-generation DLAs (https://github.com/NVIDIA/Deep-Learning-Accelerator-SW).
    _jetson(
        name="jetson-xavier-nx", description="Jetson Xavier NX 8GB (Volta GPU, 2 DLA)",
        gpu_arch="sm_72", jetpack="5.1.x", tensorrt="8.5", int8=True, fp16=True, dla_cores=2, memory_gb=8.0,
        precision="int8", notes="DLA cores run int8/fp16 layers; unsupported layers fall back to the GPU.",
    ),
    _jetson(
        name="jetson-agx-xavier", description="Jetson AGX Xavier 32GB (Volta GPU, 2 DLA)",
        gpu_arch="sm_72", jetpack="5.1.x", tensorrt="8.5", int8=True, fp16=True, dla_cores=2, memory_gb=32.0,
        precision="int8", notes="DLA cores run int8/fp16 layers; unsupported layers fall back to the GPU.",
    ),
    # Orin: Ampere sm_8.7 (cuda-gpus: Jetson AGX Orin, Orin NX, Orin Nano). JetPack 6.1/6.2 ship CUDA 12.6 and
    # TensorRT 10.3 (https://docs.nvidia.com/jetson/jetpack/release-notes/index.html). Orin SoCs have up to two
    # second-generation DLAs; the Orin Nano has none. TensorRT 11 on Orin needs JetPack 7.2.2+ and DLA only on
    # AGX Orin (https://docs.nvidia.com/deeplearning/tensorrt/11.4.1/api/migration/tensorrt-10x-to-11x-jetson.html).
    _jetson(
        name="jetson-orin-nano", description="Jetson Orin Nano 8GB (Ampere GPU, no DLA)",
        gpu_arch="sm_87", jetpack="6.2", tensorrt="10.3", int8=True, fp16=True, dla_cores=0, memory_gb=8.0,
        precision="int8", notes="No DLA on the Orin Nano: everything runs on the GPU.",
    ),
    _jetson(
        name="jetson-agx-orin", description="Jetson AGX Orin 64GB (Ampere GPU, 2 DLA)",
        gpu_arch="sm_87", jetpack="6.2", tensorrt="10.3", int8=True, fp16=True, dla_cores=2, memory_gb=64.0,
        precision="int8", notes="Two DLA v2 cores; build with --useDLACore=0 --allowGPUFallback to offload.",
    ),
    # Desktop / data-centre GPUs (cuda-gpus / support matrix): T4 sm_7.5, A100 sm_8.0, RTX 3090 sm_8.6,
    # RTX 4090 sm_8.9, H100 sm_9.0; all have INT8 and FP16 tensor cores and no DLA.
    _gpu(name="t4", description="NVIDIA T4 16GB (Turing)", gpu_arch="sm_75", tensorrt=_DESKTOP_TRT, memory_gb=16.0),
    _gpu(name="a100", description="NVIDIA A100 80GB (Ampere)", gpu_arch="sm_80", tensorrt=_DESKTOP_TRT, memory_gb=80.0),
    _gpu(name="rtx-3090", description="GeForce RTX 3090 24GB (Ampere)", gpu_arch="sm_86", tensorrt=_DESKTOP_TRT,
         memory_gb=24.0),
    _gpu(name="rtx-4090", description="GeForce RTX 4090 24GB (Ada)", gpu_arch="sm_89", tensorrt=_DESKTOP_TRT,
         memory_gb=24.0),
    _gpu(name="h100", description="NVIDIA H100 80GB (Hopper)", gpu_arch="sm_90", tensorrt=_DESKTOP_TRT,
         memory_gb=80.0),
    # The machine we run on: onnxruntime's CPU provider executes QDQ int8 models.
    Target(
        name="cpu", description="This machine's CPU through onnxruntime", kind="cpu", gpu_arch=None, jetpack=None,
        tensorrt=None, int8=True, fp16=False, dla_cores=0, memory_gb=round(psutil.virtual_memory().total / 2**30, 1),
        precision="int8", notes="Runs here: the engine stage writes an onnxruntime-optimised model.",
    ),
)

TARGETS: dict[str, Target] = {target.name: target for target in _TARGETS}


def get_target(name: str) -> Target:
    """Look a target up by name; an unknown name is a user error that lists the known ones."""
    try:
        return TARGETS[name]
    except KeyError:
        known = ", ".join(TARGETS)
        raise EdgeCompressError(
            f"unknown target {name!r}; choose one of: {known} (run `edgecompress targets` for details)"
        ) from None


def list_targets() -> list[Target]:
    """All targets, Jetsons first (smallest to largest), then GPUs, then the CPU."""
    return list(_TARGETS)
