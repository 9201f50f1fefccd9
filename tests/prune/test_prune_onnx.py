"""Every pruned zoo model exports to ONNX, runs in onnxruntime and matches PyTorch."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgecompress.export import export_onnx
from edgecompress.prune import prune

from .prune_zoo import ZOO, build, example_input, outputs


@pytest.mark.parametrize("name", sorted(ZOO))
def test_pruned_model_exports_and_matches_in_onnxruntime(name: str, tmp_path) -> None:
    model, x = build(name), example_input(name)
    prune(model, x, ratio=0.5)
    path = export_onnx(model, x, tmp_path / f"{name}.onnx")
    fresh = torch.randn(3, *x.shape[1:], generator=torch.Generator().manual_seed(5))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: fresh.numpy()})
    for want, have in zip(outputs(model, fresh), got, strict=True):
        np.testing.assert_allclose(have, want.numpy(), atol=1e-4, rtol=1e-4)
