"""Pruning engine vs Torch-Pruning on the same models and ratio: analysis and pruning time (medians of
repeats, variants interleaved), params and MACs after, and whether each pruned model still runs.

Torch-Pruning is not a dependency of edgecompress; it lives in its own venv (it imports only torch
and numpy at runtime; edgecompress's graph/prune/models/stats need no more, so it runs from PYTHONPATH):

    python3 -m venv bench/.venv-tp
    bench/.venv-tp/bin/pip install torch==2.13.0                 # first: the CPU build
    bench/.venv-tp/bin/pip install torch-pruning==1.6.1 --no-deps
    bench/.venv-tp/bin/pip install numpy
    PYTHONPATH=. bench/.venv-tp/bin/python bench/prune_bench.py --repeats 5

Columns: analysis = building the graph (edgecompress ``analyze``; the Torch-Pruning pruner's
constructor, which builds its DependencyGraph); end-to-end = what pruning costs a user, analysis
included (edgecompress ``analyze`` + ``plan_pruning(graph=)`` + ``apply_plan``, which checks the
result with a forward; Torch-Pruning constructor + ``step()``).

Models are fresh, with seeded random BN gammas; both tools' results are counted by ``model_stats``.
Torch-Pruning gets the output layers as ``ignored_layers``; edgecompress keeps channels reaching an
output by itself. ``yolov8s-split`` is yolov8s with C2f's chunk replaced by two convs (the rewrite
Torch-Pruning's YOLOv8 example does by hand); no other model is rewritten.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.metadata
import inspect
import platform
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the edgecompress and tests packages of this checkout

try:
    import torch_pruning as tp
except ImportError:
    sys.exit("torch_pruning is not installed here; run this script with bench/.venv-tp/bin/python (see the docstring)")

from edgecompress.graph import analyze  # noqa: E402
from edgecompress.helpers import evaluating, output_tensors  # noqa: E402
from edgecompress.models import ResNetCifar, build_model  # noqa: E402
from edgecompress.models.yolov8 import C2f, ConvBNSiLU  # noqa: E402
from edgecompress.prune import apply_plan, plan_pruning  # noqa: E402
from edgecompress.stats import ModelStats, model_stats  # noqa: E402
from tests.prune import prune_zoo  # noqa: E402  (the test zoo's coupling patterns)


def last_linear(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)][-1:]


def conv_rows(unit: ConvBNSiLU, rows: slice) -> ConvBNSiLU:
    """A ConvBNSiLU computing only output channels ``rows`` of ``unit`` (same weights and BN)."""
    conv, bn = unit[0], unit[1]
    part = ConvBNSiLU(conv.in_channels, rows.stop - rows.start, conv.kernel_size[0], conv.stride[0])
    part[0].weight.data = conv.weight.data[rows].clone()
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(part[1], name).data = getattr(bn, name).data[rows].clone()
    part[1].eps = bn.eps
    return part


class SplitC2f(nn.Module):
    """C2f with its first conv split in two, one per half, instead of ``chunk``: the rewrite that
    Torch-Pruning's YOLOv8 example does by hand (same function, same weights)."""

    def __init__(self, block: C2f):
        super().__init__()
        hidden = block.cv1[0].out_channels // 2
        self.cv0, self.cv1 = conv_rows(block.cv1, slice(0, hidden)), conv_rows(block.cv1, slice(hidden, 2 * hidden))
        self.cv2, self.m = block.cv2, block.m

    def forward(self, x: Tensor) -> Tensor:
        parts = [self.cv0(x), self.cv1(x)]
        for bottleneck in self.m:
            parts.append(bottleneck(parts[-1]))
        return self.cv2(torch.cat(parts, 1))


def without_chunk(model: nn.Module) -> nn.Module:
    """Replace every C2f of ``model`` by a :class:`SplitC2f`, in place."""
    for name, module in list(model.named_modules()):
        if isinstance(module, C2f):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, SplitC2f(module))
    return model


@dataclass(frozen=True)
class BenchModel:
    """A benchmark model: its constructor, input size and the layers writing its outputs."""

    build: Callable[[], nn.Module]
    size: int
    output_layers: Callable[[nn.Module], list[str]]


BENCH_ZOO: dict[str, BenchModel] = {
    "yolo-mbv2": BenchModel(lambda: build_model("yolo-mbv2"), 128, lambda m: [f"head{s}.predict" for s in m.strides]),
    "yolov8s": BenchModel(lambda: build_model("yolov8s", num_classes=80), 640, lambda m: m.prediction_layers()),
    "yolov8s-split": BenchModel(lambda: without_chunk(build_model("yolov8s", num_classes=80)), 640, lambda m: m.prediction_layers()),
    "resnet56": BenchModel(lambda: build_model("resnet56"), 32, last_linear),
    "resnet200": BenchModel(lambda: ResNetCifar(200), 32, last_linear),  # ~200 convs: the size bar
    "mobilenetv2": BenchModel(lambda: build_model("mobilenetv2"), 32, last_linear),
    "vgg11-bn": BenchModel(lambda: build_model("vgg11-bn"), 32, last_linear),
    "test-vgg-flatten": BenchModel(prune_zoo.VGGFlatten, 16, last_linear),
    "test-densenet": BenchModel(prune_zoo.DenseNet, 32, last_linear),
    "test-fpn": BenchModel(prune_zoo.FPN, 32, lambda m: ["out2", "out3", "out4"]),
    "test-detector": BenchModel(prune_zoo.TinyDetector, 32, lambda m: ["predict1", "predict2"]),
}


@dataclass(frozen=True)
class Goal:
    """Remove ``ratio`` of the prunable channels or, when set, the fraction ``macs_removed`` of the MACs."""

    ratio: float
    macs_removed: float | None = None


class NotApplicable(Exception):
    """The variant cannot aim at this goal."""


@dataclass(frozen=True)
class Outcome:
    analysis_s: float  # building the channel / dependency graph
    total_s: float  # what pruning costs a user end to end, analysis included


Variant = Callable[[nn.Module, Tensor, list[str], Goal], Outcome]  # prunes the model in place


def edgecompress_variant(criterion: str, per_layer: bool = False) -> Variant:
    """Time ``analyze``, then ``plan_pruning`` on that graph + ``apply_plan`` (which checks the pruned
    model with one forward); end-to-end counts all three."""

    def run(model: nn.Module, example: Tensor, output_layers: list[str], goal: Goal) -> Outcome:
        if goal.macs_removed is not None:
            if per_layer:
                raise NotApplicable("a MACs target sets one global ratio")
            target = {"target_macs": goal.macs_removed}
        else:
            target = {"ratio": {"": goal.ratio} if per_layer else goal.ratio}
        start = time.perf_counter()
        graph = analyze(model, example)
        analysed = time.perf_counter()
        apply_plan(model, plan_pruning(model, example, criterion=criterion, graph=graph, **target))
        return Outcome(analysed - start, time.perf_counter() - start)

    return run


def torch_pruning_variant(pruner: type, importance: Callable[[], object], global_pruning: bool) -> Variant:
    """Time the pruner's construction (it builds the dependency graph), then ``step()``; for a MACs
    target, step an iterative pruner (ratio up to 1.0 in 50 steps) until the MACs are low enough."""

    def run(model: nn.Module, example: Tensor, output_layers: list[str], goal: Goal) -> Outcome:
        modules = dict(model.named_modules())
        iterative = goal.macs_removed is not None
        target = model_stats(model, example).macs * (1 - goal.macs_removed) if iterative else 0
        start = time.perf_counter()
        instance = pruner(
            model, example, importance=importance(), global_pruning=global_pruning, ignored_layers=[modules[n] for n in output_layers],
            pruning_ratio=1.0 if iterative else goal.ratio, iterative_steps=50 if iterative else 1,
        )
        analysed = time.perf_counter()
        instance.step()
        while iterative and instance.current_step < instance.iterative_steps and model_stats(model, example).macs > target:
            instance.step()
        return Outcome(analysed - start, time.perf_counter() - start)

    return run


VARIANTS: dict[str, Variant] = {
    "edgecompress bn-gamma, global": edgecompress_variant("bn-gamma"),
    "edgecompress bn-gamma, per-layer": edgecompress_variant("bn-gamma", per_layer=True),
    "edgecompress l1, global": edgecompress_variant("l1"),
    "TP BNScalePruner, global": torch_pruning_variant(tp.pruner.BNScalePruner, tp.importance.BNScaleImportance, True),
    "TP BNScalePruner, per-layer": torch_pruning_variant(tp.pruner.BNScalePruner, tp.importance.BNScaleImportance, False),
    "TP MagnitudePruner L1, global": torch_pruning_variant(tp.pruner.MagnitudePruner, lambda: tp.importance.MagnitudeImportance(p=1), True),
    "TP MagnitudePruner L1, per-layer": torch_pruning_variant(tp.pruner.MagnitudePruner, lambda: tp.importance.MagnitudeImportance(p=1), False),
}


def randomise_gammas(model: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data = torch.rand(module.num_features, generator=generator) * 1.3 + 0.2
    return model.eval()


def output_shapes(model: nn.Module, x: Tensor) -> list[tuple[int, ...]]:
    with evaluating(model):
        return [tuple(t.shape) for t in output_tensors(model(x))]


def still_runs(model: nn.Module, x: Tensor, expected: list[tuple[int, ...]]) -> str:
    """'yes' when the pruned model runs on a fresh random input and returns the original shapes, finite."""
    try:
        with evaluating(model):
            outs = output_tensors(model(x))
    except Exception as exc:
        return f"no: {type(exc).__name__}"
    if [tuple(t.shape) for t in outs] != expected:
        return f"no: shapes {[tuple(t.shape) for t in outs]}"
    return "yes" if all(torch.isfinite(t).all() for t in outs) else "no: non-finite outputs"


def percent(after: int, before: int) -> str:
    return f"{after:,} ({100 * after / before:.0f}%)"


def bench_model(name: str, repeats: int, goal: Goal, seed: int) -> list[str]:
    spec = BENCH_ZOO[name]
    torch.manual_seed(seed)
    base = randomise_gammas(spec.build(), seed)
    example = torch.randn(1, 3, spec.size, spec.size, generator=torch.Generator().manual_seed(seed))
    check_input = torch.randn(2, 3, spec.size, spec.size, generator=torch.Generator().manual_seed(seed + 1))
    before = model_stats(base, example)
    expected = output_shapes(base, check_input)
    outcomes: dict[str, list[Outcome]] = defaultdict(list)
    after: dict[str, tuple[ModelStats, str]] = {}
    errors: dict[str, str] = {}
    for _ in range(repeats):
        for variant, run in VARIANTS.items():
            if variant in errors:
                continue
            model = copy.deepcopy(base)
            try:
                outcomes[variant].append(run(model, example, spec.output_layers(model), goal))
            except NotApplicable as exc:
                errors[variant] = f"n/a: {exc}"
                continue
            except Exception as exc:
                errors[variant] = f"failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"
                continue
            if variant not in after:
                after[variant] = (model_stats(model, example), still_runs(model, check_input, expected))
    convs = sum(isinstance(m, nn.Conv2d) for m in base.modules())
    label = f"{name} ({convs} convs, {spec.size} px, {before.params:,} params, {before.macs / 1e6:,.1f} M MACs)"
    rows = []
    for variant in VARIANTS:
        if variant in errors:
            rows.append(f"| {label} | {variant} | - | - | - | - | {errors[variant]} |")
        else:
            analysis = statistics.median(o.analysis_s for o in outcomes[variant])
            total = statistics.median(o.total_s for o in outcomes[variant])
            stats, runs = after[variant]
            rows.append(
                f"| {label} | {variant} | {analysis:.3f} | {total:.3f} | {percent(stats.params, before.params)} "
                f"| {percent(stats.macs, before.macs)} | {runs} |"
            )
        label = ""
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(BENCH_ZOO), choices=list(BENCH_ZOO))
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per variant (median reported)")
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of prunable channels to remove")
    parser.add_argument("--target-macs", type=float, default=None, metavar="FRACTION",
                        help="remove this fraction of the MACs instead, e.g. 0.5 halves them (edgecompress: plan_pruning(target_macs=))")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both tools (1: steadier timings on a shared CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.target_macs is not None and "target_macs" not in inspect.signature(plan_pruning).parameters:
        sys.exit("this edgecompress's plan_pruning has no target_macs argument; run without --target-macs")
    goal = Goal(args.ratio, args.target_macs)
    goal_text = f"target: remove {args.target_macs:.0%} of the MACs" if args.target_macs is not None else f"ratio {args.ratio}"
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, torch {torch.__version__}, "
          f"torch-pruning {importlib.metadata.version('torch-pruning')}, {torch.get_num_threads()} threads, {goal_text}, median of {args.repeats} repeats\n")
    print("| model | tool, criterion, scope | analysis s | end-to-end s | params after | MACs after | pruned model runs |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        for row in bench_model(name, args.repeats, goal, args.seed):
            print(row, flush=True)


if __name__ == "__main__":
    main()
