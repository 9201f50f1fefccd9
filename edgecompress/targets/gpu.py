"""Desktop and data-centre GPUs: int8 and fp16 tensor cores, no DLA, the current TensorRT 10.

Every fact group cites the NVIDIA page it was checked against. Compute capabilities:
https://developer.nvidia.com/cuda-gpus and https://developer.nvidia.com/cuda-legacy-gpus .
Precision per compute capability (INT8 / FP16 / DLA columns of "Hardware and Precision"):
https://docs.nvidia.com/deeplearning/tensorrt/archives/tensorrt-825/support-matrix/index.html
(and the current https://docs.nvidia.com/deeplearning/tensorrt/support-matrix).
"""

from ..engine.target import Target
from .registry import register_target


def _gpu(**fields) -> Target:
    return Target(kind="gpu", jetpack=None, dla_cores=0, int8=True, fp16=True, precision="int8", **fields)


# Current TensorRT 10.x for desktop/data-centre GPUs: 10.16 is documented at
# https://docs.nvidia.com/deeplearning/tensorrt/10.16.1/api/tensorrt-8x-to-10x-trtexec.html .
# TensorRT 11 also exists (strongly typed only); pick it with dataclasses.replace(target, tensorrt="11.4").
_DESKTOP_TRT = "10.16"

for _board in (
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
):
    register_target(_board)
