"""The bundled detector (MobileNetV2 + YOLOv3 depthwise-separable head) prunes end to end."""

from __future__ import annotations

import time

import torch

from edgecompress.models import ZOO, build_model
from edgecompress.prune import apply_plan, plan_pruning
from edgecompress.stats import model_stats


def test_yolo_mbv2_prunes_at_half_ratio_and_keeps_its_prediction_maps() -> None:
    model = build_model("yolo-mbv2").eval()
    size = ZOO["yolo-mbv2"].image_size
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before_shapes = [y.shape for y in model(x)]
    before = model_stats(model, x)
    predict_channels = {name: model.get_submodule(name).out_channels for name in ("head8.predict", "head16.predict", "head32.predict")}

    start = time.perf_counter()
    plan = plan_pruning(model, x, ratio=0.5)
    apply_plan(model, plan)
    elapsed = time.perf_counter() - start

    with torch.no_grad():
        after_shapes = [y.shape for y in model(torch.randn(2, 3, size, size))]
    assert [s[1:] for s in after_shapes] == [s[1:] for s in before_shapes] and len(after_shapes) == 3
    assert {name: model.get_submodule(name).out_channels for name in predict_channels} == predict_channels
    after = model_stats(model, x)
    assert after.params < 0.6 * before.params and after.macs < 0.6 * before.macs
    assert elapsed < 30  # generous for a loaded 2-core CI machine; typically about a second
