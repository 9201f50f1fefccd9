"""The YOLOv8-style zoo detector: output maps, size of the reference model, ONNX export, clear errors."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.fx
from torch import nn

from edgecompress import EdgeCompressError
from edgecompress.export import export_onnx
from edgecompress.graph import Role, analyze
from edgecompress.models import ZOO, YoloV8, resolve_model
from edgecompress.models.yolov8 import C2f
from edgecompress.prune import apply_plan, plan_pruning
from edgecompress.tasks import get_task


def _randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics and affine parameters, so numeric checks see channels that differ."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data = torch.rand(module.num_features, generator=generator) + 0.5
            module.bias.data = torch.randn(module.num_features, generator=generator) * 0.2
            module.running_mean = torch.randn(module.num_features, generator=generator) * 0.2
            module.running_var = torch.rand(module.num_features, generator=generator) + 0.5
    return model.eval()


@pytest.mark.parametrize("size", [64, 96])
def test_outputs_one_map_per_stride_and_traces(size):
    model = _randomised(resolve_model("yolov8n", num_classes=3))
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        out = model(x)
        traced = torch.fx.symbolic_trace(model)(x)
    assert [tuple(o.shape) for o in out] == [(2, 4 * 16 + 3, size // s, size // s) for s in model.strides]
    for a, b in zip(out, traced):
        torch.testing.assert_close(a, b)


def test_s_variant_has_the_size_of_yolov8s():
    model = resolve_model("yolov8s", num_classes=80)
    params = sum(p.numel() for p in model.parameters())
    # Ultralytics reports 11,166,560 parameters for YOLOv8s, 16 of them its fixed DFL conv, which decodes outside this model.
    assert params == 11_166_560 - 16
    assert ZOO["yolov8s"].image_size == 640
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 63


def test_onnx_export_matches_pytorch_in_onnxruntime(tmp_path):
    model = _randomised(YoloV8(num_classes=5, scale="n"), seed=1)
    path = export_onnx(model, torch.randn(1, 3, 64, 64), tmp_path / "yolov8n.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = [o.numpy() for o in model(x)]
    actual = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert len(actual) == 3
    for a, b in zip(actual, expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_pruning_silenced_channels_through_c2f_chunks_is_lossless():
    """Cut half the prunable channels after zeroing their BN gamma and beta (SiLU(0) = 0): outputs must not change."""
    model = _randomised(YoloV8(num_classes=3, scale="n"), seed=2)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    plan = plan_pruning(model, x, ratio=0.5)
    groups = {group.id: group for group in analyze(model, x).groups}
    with torch.no_grad():
        for group_plan in plan.groups:
            for member in groups[group_plan.group_id].members_with(Role.BN):
                bn = model.get_submodule(member.module)
                bn.weight[member.select(group_plan.removed)] = 0
                bn.bias[member.select(group_plan.removed)] = 0
        fresh = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
        expected = model(fresh)
        apply_plan(model, plan)
        pruned = model(fresh)
    assert plan.channels_removed > 0
    chunked_convs = {f"{name}.cv1.0" for name, module in model.named_modules() if isinstance(module, C2f)}
    assert chunked_convs & {cut.module for cut in plan.cuts if cut.dim == "out"}
    for want, got in zip(expected, pruned, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_prediction_layers_write_the_outputs():
    model = YoloV8(num_classes=4, scale="n")
    modules = dict(model.named_modules())
    widths = sorted({modules[name].out_channels for name in model.prediction_layers()})
    assert widths == [4, 4 * model.reg_max]


def test_unknown_scale_fails_clearly_and_the_detect_task_reads_it_with_the_anchor_free_head():
    with pytest.raises(EdgeCompressError, match="unknown YOLOv8 scale 'q'"):
        YoloV8(scale="q")
    assert type(get_task("detect").loss(YoloV8(num_classes=2, scale="n"))).__name__ == "AnchorFreeLoss"
