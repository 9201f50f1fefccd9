"""Time graph analysis, planning (analysing again or reusing the analysis) and surgery of the pruning
engine on zoo models (medians of interleaved repeats).

    python bench/prune_speed.py [--threads 1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections import defaultdict
from typing import Callable

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


def _interleaved_medians(steps: dict[str, Callable[[], object]], repeats: int = 5) -> dict[str, float]:
    """Median seconds of every step; the steps take turns in each repeat, so drift on a shared CPU hits all alike."""
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier timings on a shared CPU)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per step (median reported)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats} interleaved repeats\n")
    print("| model | convs | groups (prunable) | analysis s | plan s (incl. analysis) | plan s (reused analysis) | surgery s | params before -> after | MACs before -> after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (make, size) in MODELS.items():
        model, example = make().eval(), torch.randn(1, 3, size, size)
        graph = analyze(model, example)
        plan = plan_pruning(model, example, ratio=0.5, graph=graph)
        seconds = _interleaved_medians({
            "analysis": lambda: analyze(model, example),
            "plan": lambda: plan_pruning(model, example, ratio=0.5),
            "reused": lambda: plan_pruning(model, example, ratio=0.5, graph=graph),
            "copy + surgery": lambda: apply_plan(copy.deepcopy(model), plan),
            "copy": lambda: copy.deepcopy(model),
        }, args.repeats)
        surgery = seconds["copy + surgery"] - seconds["copy"]
        before, after = model_stats(model, example), model_stats(apply_plan(copy.deepcopy(model), plan), example)
        convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
        print(f"| {name} | {convs} | {len(graph.groups)} ({len(graph.prunable_groups)}) | {seconds['analysis']:.3f} | {seconds['plan']:.3f} | {seconds['reused']:.3f} | {max(surgery, 0):.3f} "
              f"| {before.params:,} -> {after.params:,} | {before.macs / 1e6:.1f} M -> {after.macs / 1e6:.1f} M |")


if __name__ == "__main__":
    main()
