"""What an engine builder and the ONNX lint need to know about a device: the :class:`Target` record.

The records of real boards live in the :mod:`edgecompress.targets` registry; this module holds the
record's shape and the facts that follow from a TensorRT version alone (highest ONNX opset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


Kind = Literal["jetson", "gpu", "cpu"]
Precision = Literal["int8", "fp16", "fp32"]

# Highest ONNX opset each TensorRT release parses (onnx-tensorrt operators.md). 10.0-10.14 are held
# to opset 20, a conservative bound; the 10.15 page documents opsets 9-24, the TensorRT 11 guide 25.
MAX_OPSET: tuple[tuple[tuple[int, int], int], ...] = (((8, 0), 13), ((8, 5), 17), ((10, 0), 20), ((10, 15), 24), ((11, 0), 25))
# The opset edgecompress exports at when the target's parser allows it.
EXPORT_OPSET = 17
# Builder workspace bounds (MiB) for Target.workspace_mib.
MIN_WORKSPACE_MIB, MAX_WORKSPACE_MIB = 256, 4096


def tensorrt_version(text: str) -> tuple[int, int]:
    """``"10.3"`` -> ``(10, 3)``."""
    major, _, minor = text.partition(".")
    return int(major), int(minor.split(".")[0] or 0)


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
    qdq_backend: str = "tensorrt"  # Q/DQ layout of its int8 model (edgecompress.quant.placement.BACKENDS)
    weight_bits: int = 8  # 7 where int8 kernels saturate with full 8-bit weights (x86 without VNNI)
    builder: str = "tensorrt"  # how its engine is made (edgecompress.engine.build.BUILDERS)

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
    def workspace_mib(self) -> int:
        """Default TensorRT builder workspace: an eighth of the board's memory as a power of two, 256 MiB to 4 GiB.

        A Jetson's CPU and GPU share its memory, and while the builder times tactics it also holds the parsed
        network, the weights and the engine being serialized, next to the OS (about 1-1.5 GB on JetPack).
        TensorRT 10/11 default the workspace pool to the whole device memory ("the default is the total global
        memory size of the device", IBuilderConfig::setMemoryPoolLimit), which on a 4-8 GB board lets tactic
        timing drive the system into the OOM killer; a tactic that needs more scratch than the limit is skipped
        with a warning, not an error, so a modest limit costs at most a slower tactic. 4 GB -> 512 MiB (Nano),
        8 GB -> 1 GiB (Orin Nano, Orin NX 8GB, Xavier NX), 16 GB -> 2 GiB, 32 GB and more -> 4 GiB.
        """
        eighth = max(1, int(self.memory_gb * 1024 / 8))
        return min(MAX_WORKSPACE_MIB, max(MIN_WORKSPACE_MIB, 1 << (eighth.bit_length() - 1)))

    @property
    def max_onnx_opset(self) -> int | None:
        """Highest ONNX opset the target's TensorRT parses; None for targets without TensorRT (onnxruntime)."""
        if not self.tensorrt:
            return None
        trt = tensorrt_version(self.tensorrt)
        return max((opset for version, opset in MAX_OPSET if version <= trt), default=13)

    @property
    def export_opset(self) -> int:
        """The opset its ONNX files are exported at: 17, or lower where its TensorRT parses less (13 on JetPack 4)."""
        return min(EXPORT_OPSET, self.max_onnx_opset or EXPORT_OPSET)

    def deployment(self, int8_ready: bool) -> tuple[Precision, str]:
        """What ships: the precision and the exported ONNX it is built from (``int8``, ``fp16`` or ``pruned``).

        With an int8 model ready it is the Q/DQ ONNX. Otherwise the target's best precision from the float
        ONNX, except that TensorRT 11 (strongly typed) builds fp16 only from an fp16 ONNX.
        """
        if int8_ready:
            return "int8", "int8"
        precision = self.precision if self.precision != "int8" else "fp16" if self.fp16 else "fp32"
        return precision, "fp16" if precision == "fp16" and self.strongly_typed else "pruned"
