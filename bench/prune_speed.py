"""Time graph analysis, planning and surgery of the pruning engine on zoo models (median of repeats).

    python bench/prune_speed.py
"""

from __future__ import annotations

import copy
import statistics
import time

import torch

from edgecompress.graph import analyze
from edgecompress.models import ZOO, ResNetCifar, build_model
from edgecompress.prune import apply_plan, plan_pruning
from edgecompress.stats import model_stats

MODELS = {
    "yolo-mbv2": (lambda: build_model("yolo-mbv2"), 128),
    "resnet56": (lambda: build_model("resnet56"), 32),
    "resnet110": (lambda: ResNetCifar(110), 32),
    "mobilenetv2": (lambda: build_model("mobilenetv2"), ZOO["mobilenetv2"].image_size),
}


def _median_s(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| model | convs | groups (prunable) | analysis s | plan s (incl. analysis) | surgery s | params before -> after | MACs before -> after |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (make, size) in MODELS.items():
        model, example = make().eval(), torch.randn(1, 3, size, size)
        graph = analyze(model, example)
        analysis = _median_s(lambda: analyze(model, example))
        plan_time = _median_s(lambda: plan_pruning(model, example, ratio=0.5))
        plan = plan_pruning(model, example, ratio=0.5)
        surgery = _median_s(lambda: apply_plan(copy.deepcopy(model), plan)) - _median_s(lambda: copy.deepcopy(model))
        before, after = model_stats(model, example), model_stats(apply_plan(copy.deepcopy(model), plan), example)
        convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
        print(f"| {name} | {convs} | {len(graph.groups)} ({len(graph.prunable_groups)}) | {analysis:.3f} | {plan_time:.3f} | {max(surgery, 0):.3f} "
              f"| {before.params:,} -> {after.params:,} | {before.macs / 1e6:.1f} M -> {after.macs / 1e6:.1f} M |")


if __name__ == "__main__":
    main()
