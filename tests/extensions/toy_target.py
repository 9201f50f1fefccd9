"""A user's board: one module, one registration."""

from edgecompress.targets import Target, register_target

register_target(Target(
    name="jetson-toy", description="A hypothetical Jetson with an Ampere GPU and TensorRT 10.3", kind="jetson",
    gpu_arch="sm_87", jetpack="6.2", tensorrt="10.3", int8=True, fp16=True, dla_cores=1, memory_gb=2.0, precision="int8",
))
