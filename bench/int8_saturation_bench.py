"""How far onnxruntime's fused int8 kernels stray from the Q/DQ graph on this CPU, with 8-bit and 7-bit weights.

    python bench/int8_saturation_bench.py

On x86 CPUs without VNNI the u8s8 dot product (VPMADDUBSW) adds two 8-bit products into a saturating
16-bit lane; with full-range weights and activations the sum overflows. For each small model of the
export tests and the bundled detector (random BN statistics, fixed seeds), each Q/DQ layout and each
weight width, the table gives the largest error relative to the largest |output| of onnxruntime against the
fake-quant PyTorch model, with graph optimisations off (the graph's own arithmetic) and on (fused
integer kernels), and of the fused kernels against the unfused graph (what saturation alone costs). 7-bit weights: the weight quantizers' ranges doubled after calibration,
so every int8 weight lies in [-64, 64].
"""

from __future__ import annotations

import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.export's models, run from the repo root

from edgecompress.export import export_onnx, verify_onnx  # noqa: E402
from edgecompress.models import YoloMobileNetV2  # noqa: E402
from edgecompress.profile.cpu import cpu_flags, int8_dot_products_saturate  # noqa: E402
from edgecompress.quant import calibrate, quantize_model, quantizers  # noqa: E402
from tests.export.export_models import MODELS, randomise_batchnorm  # noqa: E402


def _cpu() -> str:
    with open("/proc/cpuinfo") as handle:
        name = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), platform.processor())
    vnni = sorted(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"}) or ["no VNNI"]
    return f"{name}, {'avx512f' if 'avx512f' in cpu_flags() else 'avx2'}, {', '.join(vnni)}"


def _fused_vs_unfused(path: Path, size: int) -> float:
    """Largest difference between onnxruntime with and without graph optimisations, relative to the largest |output|."""
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(12)).numpy()
    outputs = []
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {session.get_inputs()[0].name: images}))
    return max(float(np.abs(a - b).max() / np.abs(a).max()) for a, b in zip(*outputs))


def _errors(model: torch.nn.Module, size: int, backend: str, weight_bits: int, folder: Path) -> tuple[float, float, float]:
    example = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(10))
    quantized = quantize_model(model, example, backend=backend)
    calibrate(quantized, [torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(11)) for _ in range(3)])
    if weight_bits == 7:
        for quantizer in quantizers(quantized).values():
            if quantizer.axis is not None:
                quantizer.amax.mul_(2)
    path = export_onnx(quantized, example, folder / f"{backend}-{weight_bits}.onnx", int8=True)
    shape = (1, 3, size, size)
    return (verify_onnx(quantized, path, shape, trials=2, optimized=False).max_rel_error,
            verify_onnx(quantized, path, shape, trials=2).max_rel_error, _fused_vs_unfused(path, size))


def main() -> None:
    torch.manual_seed(0)
    models = {name: (randomise_batchnorm(build()), size) for name, (build, size) in MODELS.items()}
    models["yolo-mbv2 w0.25"] = (randomise_batchnorm(YoloMobileNetV2(num_classes=2, width=0.25, image_size=64)), 64)
    print(f"CPU: {_cpu()}; int8 dot products saturate: {int8_dot_products_saturate()}\n")
    print("| model | layout | weights | unfused vs torch | fused vs torch | fused vs unfused |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, size) in models.items():
            for backend in ("tensorrt", "onnxruntime"):
                for bits in (8, 7):
                    unfused, fused, kernels = _errors(model, size, backend, bits, Path(tmp))
                    print(f"| {name} | {backend} | {bits}-bit | {unfused:.2%} | {fused:.2%} | {kernels:.2%} |")


if __name__ == "__main__":
    main()
