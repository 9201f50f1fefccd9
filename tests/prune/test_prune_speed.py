"""Analysis, planning and surgery of a YOLOv8-size model (about 200 convs) take seconds, not minutes.

Timed in this process's CPU seconds, not wall seconds, so other work on a shared machine does not fail it.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from edgecompress.prune import apply_plan, plan_pruning
from edgecompress.stats import model_stats

from .prune_zoo import outputs
from .yolov8_like import YOLOv8Like


def test_yolov8_size_model_is_analysed_planned_and_cut_within_5_seconds() -> None:
    torch.manual_seed(0)
    model, x = YOLOv8Like().eval(), torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert sum(isinstance(module, nn.Conv2d) for module in model.modules()) >= 200
    before_shapes = [y.shape for y in outputs(model, x)]
    before = model_stats(model, x)

    start = time.process_time()
    plan = plan_pruning(model, x, target_macs=0.5, round_to=8)
    apply_plan(model, plan)
    elapsed = time.process_time() - start

    assert [y.shape for y in outputs(model, x)] == before_shapes
    assert model_stats(model, x).macs <= 0.5 * before.macs
    assert all(model.get_submodule(f"detect.{branch}.{level}.2").out_channels == width for branch, width in (("box", 64), ("cls", 80)) for level in range(3))
    assert elapsed < 5, f"analysis + planning + surgery took {elapsed:.1f} CPU seconds"
