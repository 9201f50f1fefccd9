"""Jetson modules: TensorRT from their JetPack, DLA cores on Xavier, Orin NX and AGX Orin (none on Thor).

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
    # second-generation DLAs; the Orin Nano has none, the Orin NX 8GB one and the Orin NX 16GB two (DL accelerator
    # row of the Jetson Orin NX Series data sheet DS-10712-001 and https://developer.nvidia.com/embedded/jetson-modules:
    # Orin NX 16GB 2x NVDLA v2, 100 TOPS; Orin NX 8GB 1x NVDLA v2, 70 TOPS).
    _jetson(
        name="jetson-orin-nano", description="Jetson Orin Nano 8GB (Ampere GPU, no DLA)",
        gpu_arch="sm_87", jetpack="6.2", tensorrt="10.3", int8=True, fp16=True, dla_cores=0, memory_gb=8.0,
        precision="int8", notes="No DLA on the Orin Nano: everything runs on the GPU.",
    ),
    _jetson(
        name="jetson-orin-nx-8gb", description="Jetson Orin NX 8GB (Ampere GPU, 1 DLA)",
        gpu_arch="sm_87", jetpack="6.2", tensorrt="10.3", int8=True, fp16=True, dla_cores=1, memory_gb=8.0,
        precision="int8", notes="One DLA v2 core; the bundle times the GPU-only and the DLA engine and says which to use.",
    ),
    _jetson(
        name="jetson-orin-nx-16gb", description="Jetson Orin NX 16GB (Ampere GPU, 2 DLA)",
        gpu_arch="sm_87", jetpack="6.2", tensorrt="10.3", int8=True, fp16=True, dla_cores=2, memory_gb=16.0,
        precision="int8", notes="Two DLA v2 cores; the bundle times the GPU-only and the DLA engine and says which to use.",
    ),
    _jetson(
        name="jetson-agx-orin", description="Jetson AGX Orin 64GB (Ampere GPU, 2 DLA)",
        gpu_arch="sm_87", jetpack="6.2", tensorrt="10.3", int8=True, fp16=True, dla_cores=2, memory_gb=64.0,
        precision="int8", notes="Two DLA v2 cores; build with --useDLACore=0 --allowGPUFallback to offload.",
    ),
    # Thor: Blackwell, compute capability 11.0 on https://developer.nvidia.com/cuda-gpus (Jetson T5000/T4000), written
    # sm_110 as CUDA 13 names it. JetPack 7.0 (Jetson Linux 38.2) is the Thor release and ships CUDA 13.0 and TensorRT
    # 10.13 (https://developer.nvidia.com/embedded/jetpack/downloads/archive-7.0). "Jetson Thor has no DLA"
    # (https://docs.nvidia.com/deeplearning/tensorrt/11.4.1/inference-library/work-with-dla.html). AGX Thor dev kit: 128GB.
    _jetson(
        name="jetson-agx-thor", description="Jetson AGX Thor 128GB (Blackwell GPU, no DLA)",
        gpu_arch="sm_110", jetpack="7.0", tensorrt="10.13", int8=True, fp16=True, dla_cores=0, memory_gb=128.0,
        precision="int8", notes="JetPack 7 with TensorRT 10.x; no DLA on Thor.",
    ),
    # TensorRT 11: "TensorRT 11.4.1 supports NVIDIA JetPack 7.2.2 or later on Jetson AGX Orin and Jetson Thor", and
    # restores DLA on AGX Orin only (JetPack 7.2.2+); Orin on JetPack 6.x stays on TensorRT 10.x
    # (https://docs.nvidia.com/deeplearning/tensorrt/11.4.1/api/migration/tensorrt-10x-to-11x-jetson.html).
    # The same boards get a "-trt11" twin: the board is what users know, the suffix says the software generation
    # (strongly typed: no --fp16/--int8, int8 from Q/DQ only, fp16 from an fp16 ONNX).
    _jetson(
        name="jetson-agx-orin-trt11", description="Jetson AGX Orin 64GB on JetPack 7.2.2+ with TensorRT 11.4 (2 DLA)",
        gpu_arch="sm_87", jetpack="7.2.2", tensorrt="11.4", int8=True, fp16=True, dla_cores=2, memory_gb=64.0,
        precision="int8", notes="TensorRT 11 is strongly typed: int8 from Q/DQ only, fp16 from an fp16 ONNX; DLA with GPU fallback.",
    ),
    _jetson(
        name="jetson-agx-thor-trt11", description="Jetson AGX Thor 128GB on JetPack 7.2.2+ with TensorRT 11.4 (no DLA)",
        gpu_arch="sm_110", jetpack="7.2.2", tensorrt="11.4", int8=True, fp16=True, dla_cores=0, memory_gb=128.0,
        precision="int8", notes="TensorRT 11 is strongly typed: int8 from Q/DQ only, fp16 from an fp16 ONNX.",
    ),
):
    register_target(_board)
