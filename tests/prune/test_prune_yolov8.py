"""The zoo's YOLOv8 detector: a MACs target with TensorRT-friendly rounding, ONNX parity, layer pruning."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from edgecompress.export import export_onnx
from edgecompress.models import YoloV8
from edgecompress.prune import prune, prune_layers
from edgecompress.stats import model_stats


def test_yolov8n_halves_its_macs_with_channels_in_multiples_of_8_and_matches_in_onnxruntime(tmp_path) -> None:
    torch.manual_seed(0)
    model, x = YoloV8(num_classes=3, scale="n").eval(), torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    before = model_stats(model, x)
    prediction_widths = {name: model.get_submodule(name).out_channels for name in model.prediction_layers()}
    prune(model, x, target_macs=0.5, round_to=8)
    assert model_stats(model, x).macs <= 0.5 * before.macs
    assert {name: model.get_submodule(name).out_channels for name in prediction_widths} == prediction_widths
    convs = [m for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and name not in prediction_widths]
    assert all(conv.out_channels % 8 == 0 for conv in convs)

    path = export_onnx(model, x, tmp_path / "yolov8n-pruned.onnx")
    fresh = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = [y.numpy() for y in model(fresh)]
    for got, want in zip(session.run(None, {session.get_inputs()[0].name: fresh.numpy()}), expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)

    removed = prune_layers(model, x, n=2)
    assert len(removed) == 2 and all(isinstance(model.get_submodule(name), nn.Identity) for name in removed)
