"""This machine's CPU: onnxruntime runs the int8 model in its own Q/DQ layout (uint8 activations).

On an x86 CPU without VNNI, onnxruntime's integer conv kernels sum pairs of products in 16 bits and
saturate; the ``onnxruntime`` layout, which runs SiLU models' convs as QLinearConv, would then lose
accuracy there. Such a CPU gets the ``openvino`` layout instead (the same without the SiLU and split
rules: SiLU convs run in float in onnxruntime, as the Q/DQ graph says), trading speed for accuracy.
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
          + (" This CPU has no VNNI: SiLU convs stay float in onnxruntime (the openvino Q/DQ layout), "
             "as its int8 kernels would saturate." if SATURATES else ""),
    qdq_backend="openvino" if SATURATES else "onnxruntime", builder="onnxruntime",
))
