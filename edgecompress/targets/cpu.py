"""This machine's CPU: onnxruntime runs the int8 model in its own Q/DQ layout (uint8 activations).

On an x86 CPU without VNNI, int8 kernels (onnxruntime's and OpenVINO's) sum pairs of products in 16
bits and saturate with full 8-bit weights, so the int8 model would compute something other than its
fake-quant model. Such a CPU gets 7-bit weights (codes in [-63, 63], stored as int8), the remedy
onnxruntime (``reduce_range``) and OpenVINO document: the convs still run as QLinearConv, and agree
with the fake-quant model (bench/int8_runtime_bench.py).
"""

import psutil

from ..engine.target import Target
from ..profile.cpu import int8_dot_products_saturate
from .registry import register_target

SATURATES = int8_dot_products_saturate()

register_target(Target(
    name="cpu", description="This machine's CPU through onnxruntime", kind="cpu", gpu_arch=None, jetpack=None,
    tensorrt=None, int8=True, fp16=False, dla_cores=0, memory_gb=round(psutil.virtual_memory().total / 2**30, 1),
    precision="int8",
    notes="Runs here: the engine stage writes an onnxruntime-optimised model."
          + (" This CPU has no VNNI: weights are quantized to 7 bits, as its int8 kernels saturate with 8-bit ones." if SATURATES else ""),
    qdq_backend="onnxruntime", weight_bits=7 if SATURATES else 8, builder="onnxruntime",
))
