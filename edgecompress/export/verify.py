"""Check an ONNX export against its PyTorch model on fresh random inputs with ONNX Runtime (CPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from ..errors import EdgeCompressError
from ..helpers import evaluating, model_device, output_tensors

DYNAMIC_BATCH = 2  # batch used when the ONNX batch dimension is symbolic, so batching is exercised too
MISMATCH_TOLERANCE = 1e-4  # relative to max |reference|: an output value beyond it counts as mismatched


@dataclass(frozen=True)
class VerifyReport:
    """Largest disagreement between ONNX Runtime and PyTorch over all outputs and trials."""

    max_abs_error: float
    max_rel_error: float  # abs error divided by the largest |reference| of the same output
    trials: int
    mismatched_fraction: float  # share of output values off by more than MISMATCH_TOLERANCE (relative)


def verify_onnx(model: nn.Module, onnx_path: str | os.PathLike, example_input_shape: Sequence[int], *, trials: int = 3, seed: int = 0,
                optimized: bool = True) -> VerifyReport:
    """Run ``model`` (eval, no_grad) and ONNX Runtime on ``trials`` torch.randn inputs and compare every output.

    ``optimized=False`` switches onnxruntime's graph optimisations off: it then computes exactly what the
    graph says (Q/DQ in float, no fused integer kernels), which checks the export itself rather than the
    CPU's int8 kernels (see :func:`edgecompress.profile.cpu.int8_dot_products_saturate`).
    """
    if not Path(onnx_path).is_file():
        raise EdgeCompressError(f"ONNX file not found: {onnx_path}; export the model first")
    options = ort.SessionOptions()
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    onnx_input = session.get_inputs()[0]
    shape = list(example_input_shape)
    if not isinstance(onnx_input.shape[0], int):
        shape[0] = DYNAMIC_BATCH
    generator = torch.Generator().manual_seed(seed)
    device = model_device(model)
    abs_error = rel_error = 0.0
    mismatched = total = 0
    with evaluating(model):
        for _ in range(trials):
            x = torch.randn(shape, generator=generator)
            expected = [t.detach().cpu().numpy() for t in output_tensors(model(x.to(device)))]
            actual = session.run(None, {onnx_input.name: x.numpy()})
            for want, got in _paired(expected, actual):
                errors, reference_max = np.abs(want - got), max(float(np.abs(want).max()), 1e-12)
                abs_error = max(abs_error, float(errors.max()))
                rel_error = max(rel_error, float(errors.max()) / reference_max)
                mismatched += int((errors > MISMATCH_TOLERANCE * reference_max).sum())
                total += errors.size
    return VerifyReport(max_abs_error=abs_error, max_rel_error=rel_error, trials=trials, mismatched_fraction=mismatched / max(total, 1))


def _paired(expected: list[np.ndarray], actual: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(expected) != len(actual):
        raise EdgeCompressError(f"the ONNX model has {len(actual)} outputs but PyTorch returns {len(expected)}; re-export from this model")
    for want, got in zip(expected, actual):
        if want.shape != got.shape:
            raise EdgeCompressError(f"ONNX output shape {got.shape} differs from PyTorch's {want.shape}; re-export from this model")
    return list(zip(expected, actual))
