"""This machine's CPU: onnxruntime runs the int8 model in its own Q/DQ layout (uint8 activations)."""

import psutil

from ..engine.target import Target
from .registry import register_target

register_target(Target(
    name="cpu", description="This machine's CPU through onnxruntime", kind="cpu", gpu_arch=None, jetpack=None,
    tensorrt=None, int8=True, fp16=False, dla_cores=0, memory_gb=round(psutil.virtual_memory().total / 2**30, 1),
    precision="int8", notes="Runs here: the engine stage writes an onnxruntime-optimised model.",
    qdq_backend="onnxruntime", builder="onnxruntime",
))
