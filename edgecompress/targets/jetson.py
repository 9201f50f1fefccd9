"""Jetson modules: TensorRT from their JetPack, DLA cores on Xavier and the larger Orins.

Every fact group cites the NVIDIA page it was checked against. Compute capabilities:
https://developer.nvidia.com/cuda-gpus and https://developer.nvidia.com/cuda-legacy-gpus .
Precision per compute capability (INT8 / FP16 / DLA columns of "Hardware and Precision"):
https://docs.nvidia.com/deeplearning/tensorrt/archives/tensorrt-825/support-matrix/index.html
(and the current https://docs.nvidia.com/deeplearning/tensorrt/support-matrix).
"""

from ..engine.target import Target
from .registry import register_target


def _jetson(**fields) -> Target:
    return Target(kind="jetson", **fields)


for _board in (
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
):
    register_target(_board)
