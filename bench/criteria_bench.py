"""Pruning criteria compared on real images (issue 14): every registered criterion plus seed 002's
two-stage ``similarity``, at 40% and 60% fewer MACs, on ResNet-20 / Fashion-MNIST and on the bundled
detector ``yolo-mbv2`` / digits detection set.

Per model, one baseline and one sparse-trained model (L1 on the prunable BNs' gammas, as the build's
``sparse`` stage does) are trained once and shared; each criterion prunes a copy of the sparse model to
the MACs target, then every pruned model gets the same short fine-tune (same epochs, lr and seed).
Columns: MACs and params actually removed (``model_stats`` before/after), the criterion's wall time
(gradients on 8 training batches for ``taylor`` + planning, activation measurement included, + slicing;
for ``similarity`` the whole ``prune_by_similarity``), the task's primary metric (top-1 / mAP50)
right after pruning and after the fine-tune. ``activation`` and ``similarity`` calibrate on the first
``--calib-batches`` training batches; ``similarity``'s stage one cuts ``--gamma-ratio`` (0.1) of the
prunable channels by BN gamma, its stage two the rest of the target. Every criterion keeps at least
``--min-channels`` (4) channels per layer, with no rounding (the build's defaults are 8 and 8). Beside each table, the seeds' claims checked on each row: 000 (5/6 less memory, i.e.
>= 83.3% fewer params, at equal accuracy: fine-tuned within 0.5 points of the baseline) and 001 (> 40%
fewer FLOPs with the fine-tuned accuracy above the baseline's).

``--strategies [NAME ...]`` adds rows to each model's table: ``bn-gamma`` pruned by each pruning strategy
(``edgecompress.prune.STRATEGIES``; without names every one but ``global`` and ``similarity``, which the
``bn-gamma`` and ``similarity`` rows already are) at the same targets, with the same fine-tune. Their
"criterion s" is the strategy's wall time; ``iterative`` trains 1 epoch (lr and seed as the fine-tune)
after each of its first two passes, inside that time, so its rows get 2 epochs more training than the others.
The option is not part of the settings: a run with it reuses the baseline, the sparse model and every
finished row, and computes only the new rows.

Data (fixed, seed 0): Fashion-MNIST (Debian's ``dataset-fashion-mnist``: ``apt-get install -y
dataset-fashion-mnist``), class-balanced 6000 train / 2000 test images, at 32 px; digits detection, 2000
train / 400 val at 128 px. ``--quick``: 256/128 and 96/32 images, 1 epoch of everything: a smoke run.

Resumable: the baseline, the sparse model and every finished row are kept in ``--out/<model>/`` and
reused while the settings are the same (other settings start that folder afresh).

    OMP_NUM_THREADS=2 .venv/bin/python bench/criteria_bench.py                     # full run, about 55 min
    OMP_NUM_THREADS=1 .venv/bin/python bench/criteria_bench.py --quick --out bench/runs/criteria-smoke
    OMP_NUM_THREADS=2 .venv/bin/python bench/criteria_bench.py --strategies         # + 16 strategy rows, about 20-25 min more

Time estimate of the full run with the defaults (8 baseline + 3 sparse epochs, 18 rows of 1 fine-tune
epoch each), measured on this 2-core AMD EPYC at 1 thread under load (2026-12-01, one epoch of every
training on the full subsets): ResNet-20 53 s per training epoch (about 37 s once pruned), 6 s per
evaluation; yolo-mbv2 58 s per epoch (about 45 s pruned), 10 s per evaluation (38 evaluations per
model), criteria under 6 s each. ResNet-20 about 25 min + yolo-mbv2 about 31 min: about 55 min in all.
``--strategies`` (estimated from the same figures, not yet measured on the full subsets): 8 rows per model of
one fine-tune epoch and two evaluations, plus ``iterative``'s 2 epochs per target; strategies themselves take
under 20 s each (``greedy``: 20 analyses of yolo-mbv2, 15-18 s in the ``--quick`` smoke run).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import itertools
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgecompress.artifacts import load_model, save_model, write_json  # noqa: E402
from edgecompress.data.calib import calib_batches  # noqa: E402
from edgecompress.data.digits import make_digits_detection  # noqa: E402
from edgecompress.data.idx import make_fashion_mnist  # noqa: E402
from edgecompress.models import build_model  # noqa: E402
from edgecompress.prune import (  # noqa: E402
    CRITERIA,
    STRATEGIES,
    SimilarityStrategy,
    apply_plan,
    get_strategy,
    plan_pruning,
    prunable_batchnorms,
    prune,
    prune_by_similarity,
)
from edgecompress.stats import model_stats  # noqa: E402
from edgecompress.tasks import TaskData, get_task, torch_predict  # noqa: E402
from edgecompress.train.loop import TrainConfig, fit  # noqa: E402

SIMILARITY = "similarity"
STRATEGY_CRITERION = "bn-gamma"  # the criterion every strategy row prunes by
SAME_AS_A_CRITERION_ROW = ("global", SIMILARITY)  # bn-gamma/global is the bn-gamma row, bn-gamma/similarity the similarity row
DEFAULT_FINETUNE_EPOCHS = 1  # every row of the tables; a row with more is a row of its own (key suffix +ftN)
CLAIMS = ("Seeds' claims: 000 = 5/6 less memory (>= 83.3% fewer params) at equal accuracy (fine-tuned within 0.5 points of the "
          "baseline); 001 = > 40% fewer FLOPs with accuracy above the baseline. Columns 000 / 001 say whether each row meets them.")


@dataclass(frozen=True)
class Case:
    """A benchmark model's task, input size, batch size, dataset and its (train, val) image counts, full and ``--quick``."""

    task: str
    image_size: int
    batch_size: int
    dataset: str
    full: tuple[int, int]
    quick: tuple[int, int]
    make_data: Callable[[Path, int, int], Path]

    def sizes(self, quick: bool) -> tuple[int, int]:
        return self.quick if quick else self.full

    def describe(self, quick: bool) -> str:
        train_images, val_images = self.sizes(quick)
        return f"{self.dataset}, {train_images} train / {val_images} val images (class-balanced, seed 0), {self.image_size} px"


CASES: dict[str, Case] = {
    "resnet20": Case("classify", 32, 64, "Fashion-MNIST", (6000, 2000), (256, 128),
                     lambda root, n_train, n_val: make_fashion_mnist(root / f"fashion-{n_train}-{n_val}", n_train=n_train, n_val=n_val, seed=0)),
    "yolo-mbv2": Case("detect", 128, 32, "digits detection", (2000, 400), (96, 32),
                      lambda root, n_train, n_val: make_digits_detection(root / f"digits-{n_train}-{n_val}", n_train=n_train, n_val=n_val,
                                                                          image_size=128, seed=0)),
}


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere), and the core count."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} cores"


def seeded(data: TaskData, seed: int) -> TaskData:
    """Reset torch's and the training loader's seeds, so every training and measurement sees the same batches."""
    torch.manual_seed(seed)
    data.train.generator.manual_seed(seed)
    return data


def train(model: nn.Module, data: TaskData, epochs: int, args: argparse.Namespace, description: str, sparse=()) -> float:
    """Train ``model`` in place with the library's loop (``sparse``: BNs whose gammas get the L1 penalty); wall seconds."""
    started = time.perf_counter()
    config = TrainConfig(epochs, lr=args.lr, sparsity_lambda=args.sparsity_lambda if sparse else 0.0)
    fit(model, seeded(data, args.seed).train, get_task(CASES[args.model].task).loss(model), config, sparse_batchnorms=sparse, description=description)
    return time.perf_counter() - started


def score(model: nn.Module, task: str, data: TaskData) -> float:
    return get_task(task).evaluate(torch_predict(model), model, data.val)[get_task(task).primary_metric]


def calibration(data: TaskData, args: argparse.Namespace) -> list[torch.Tensor]:
    """The images of the first ``--calib-batches`` training batches (same seed every time)."""
    images = torch.cat([batch[0] for batch in itertools.islice(seeded(data, args.seed).train, args.calib_batches)])
    return list(calib_batches(images, CASES[args.model].batch_size))


def accumulate_gradients(model: nn.Module, data: TaskData, args: argparse.Namespace, batches: int = 8) -> None:
    """Sum the task loss's gradients over a few training batches, for ``taylor`` (as the build's prune stage does)."""
    loss_fn = get_task(CASES[args.model].task).loss(model)
    model.train().zero_grad(set_to_none=True)
    for images, targets in itertools.islice(seeded(data, args.seed).train, batches):
        loss_fn(model(images), targets).backward()


def prune_copy(sparse: nn.Module, criterion: str, target: float, data: TaskData, example: torch.Tensor,
               args: argparse.Namespace) -> tuple[nn.Module, float]:
    """A copy of ``sparse`` pruned by ``criterion`` to remove ``target`` of the MACs, and the criterion's wall seconds."""
    model = copy.deepcopy(sparse)
    batches = calibration(data, args) if criterion == SIMILARITY or CRITERIA[criterion].needs_data else None
    started = time.perf_counter()
    if criterion == SIMILARITY:
        prune_by_similarity(model, example, batches, gamma_ratio=args.gamma_ratio, target_macs=target, min_channels=args.min_channels)
    else:
        if CRITERIA[criterion].needs_gradients:
            accumulate_gradients(model, data, args)
        plan = plan_pruning(model, example, target_macs=target, criterion=criterion, min_channels=args.min_channels, data=batches)
        model = apply_plan(model, plan)
    seconds = time.perf_counter() - started
    model.zero_grad(set_to_none=True)
    return model.eval(), seconds


def prune_by_strategy(sparse: nn.Module, name: str, target: float, data: TaskData, example: torch.Tensor,
                      args: argparse.Namespace) -> tuple[nn.Module, float]:
    """A copy of ``sparse`` pruned by bn-gamma under strategy ``name`` to remove ``target`` of the MACs, and the
    strategy's wall seconds (for ``iterative``, its training between passes included)."""
    model = copy.deepcopy(sparse)
    strategy = SimilarityStrategy(gamma_ratio=args.gamma_ratio) if name == SIMILARITY else get_strategy(name)
    batches = calibration(data, args) if strategy.needs_data else None
    started = time.perf_counter()
    prune(model, example, target_macs=target, criterion=STRATEGY_CRITERION, strategy=strategy, min_channels=args.min_channels, data=batches,
          train=lambda pruned, epochs: train(pruned, data, epochs, args, f"{name} pass"))
    return model.eval(), time.perf_counter() - started


def cached_model(path: Path, make: Callable[[], nn.Module]) -> nn.Module:
    """The model saved at ``path``, or ``make()`` saved there."""
    if path.is_file():
        return load_model(path)
    model = make()
    save_model(model, path)
    return model


def row_key(criterion: str, target: float, finetune_epochs: int = DEFAULT_FINETUNE_EPOCHS) -> str:
    return f"{criterion}@{target}" + (f"+ft{finetune_epochs}" if finetune_epochs != DEFAULT_FINETUNE_EPOCHS else "")


def strategy_key(strategy: str, target: float, finetune_epochs: int = DEFAULT_FINETUNE_EPOCHS) -> str:
    return row_key(f"{STRATEGY_CRITERION}/{strategy}", target, finetune_epochs)


def row_specs(args: argparse.Namespace) -> list[tuple[str, str, str | None, float]]:
    """Every row of one model in table order, as (key, criterion, strategy or None, target): the criteria's, then the strategies'."""
    epochs = args.finetune_epochs
    return ([(row_key(criterion, target, epochs), criterion, None, target) for criterion, target in itertools.product(args.criteria, args.targets)]
            + [(strategy_key(strategy, target, epochs), STRATEGY_CRITERION, strategy, target)
               for strategy, target in itertools.product(args.strategies, args.targets)])


def bench_model(args: argparse.Namespace) -> dict:
    """Baseline, sparse model and every (criterion or strategy, target) row of one model; cached in ``--out/<model>``."""
    case = CASES[args.model]
    folder = args.out / args.model
    # which rows to show, not how the shared baseline and sparse models are made (rows record their fine-tune epochs)
    not_settings = ("models", "criteria", "strategies", "targets", "out", "finetune_epochs")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in not_settings}
    results_path = folder / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    if {k: v for k, v in results.get("settings", {}).items() if k not in not_settings} != settings:
        for stale in ("baseline.pt", "sparse.pt"):
            (folder / stale).unlink(missing_ok=True)
        results = {"settings": settings, "rows": {}}
    folder.mkdir(parents=True, exist_ok=True)
    data = get_task(case.task).load(case.make_data(args.out / "data", *case.sizes(args.quick)), case.image_size, case.batch_size)
    example = torch.randn(1, 3, case.image_size, case.image_size, generator=torch.Generator().manual_seed(args.seed))
    steps: dict[str, float] = results.setdefault("step_seconds", {})

    def make_baseline() -> nn.Module:
        torch.manual_seed(args.seed)
        model = build_model(args.model, num_classes=data.num_classes)
        get_task(case.task).prepare(model, data)
        steps["baseline training"] = train(model, data, args.epochs, args, "baseline")
        return model.eval()

    def make_sparse() -> nn.Module:
        model = copy.deepcopy(baseline)
        batchnorms = [bn for _, bn in prunable_batchnorms(model, example)]
        steps["sparse training"] = train(model, data, args.sparse_epochs, args, "sparse", sparse=batchnorms)
        return model.eval()

    baseline = cached_model(folder / "baseline.pt", make_baseline)
    sparse = cached_model(folder / "sparse.pt", make_sparse)
    before = model_stats(baseline, example)
    results.update(model=args.model, dataset=case.describe(args.quick), params=before.params, macs=before.macs,
                   baseline=score(baseline, case.task, data), sparse=score(sparse, case.task, data))
    for key, criterion, strategy, target in row_specs(args):
        if key in results["rows"]:
            continue
        print(f"[{args.model}] {criterion}{f' by the {strategy} strategy' if strategy else ''}, {target:.0%} fewer MACs", flush=True)
        if strategy:
            pruned, seconds = prune_by_strategy(sparse, strategy, target, data, example, args)
        else:
            pruned, seconds = prune_copy(sparse, criterion, target, data, example, args)
        after = model_stats(pruned, example)
        row = {"criterion": criterion, "target_macs": target, "criterion_s": seconds, "pruned": score(pruned, case.task, data),
               "macs_removed": 1 - after.macs / before.macs, "params_removed": 1 - after.params / before.params}
        if strategy:
            row["strategy"] = strategy
        row["finetune_epochs"], row["finetune_s"] = args.finetune_epochs, train(pruned, data, args.finetune_epochs, args, f"finetune {key}")
        row["finetuned"] = score(pruned.eval(), case.task, data)
        results["rows"][key] = row
        write_json(results_path, results)  # after every row: a stopped run resumes here
    write_json(results_path, results)
    return results


def table(results: dict, task: str, keys: list[str]) -> str:
    """One Markdown table of a model's rows ``keys``, with the seeds' claims checked on every row."""
    metric, base = get_task(task).primary_metric, results["baseline"]
    lines = [f"**{results['model']}** on {results['dataset']}: {results['params']:,} params, {results['macs'] / 1e6:.1f} M MACs; "
             f"baseline {metric} {base:.4f}, sparse-trained {results['sparse']:.4f}", "", CLAIMS, "",
             f"| criterion | target fewer MACs | MACs removed | params removed | criterion s | {metric} pruned | {metric} fine-tuned | 000 | 001 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in (results["rows"][key] for key in keys):
        claim_000 = row["params_removed"] >= 5 / 6 and row["finetuned"] >= base - 0.005
        claim_001 = row["macs_removed"] > 0.4 and row["finetuned"] > base
        label = f"{row['criterion']}, {row['strategy']} strategy" if "strategy" in row else row["criterion"]
        if row.get("finetune_epochs", DEFAULT_FINETUNE_EPOCHS) != DEFAULT_FINETUNE_EPOCHS:
            label += f", {row['finetune_epochs']} fine-tune epochs"
        lines.append(f"| {label} | {row['target_macs']:.0%} | {row['macs_removed']:.1%} | {row['params_removed']:.1%} | "
                     f"{row['criterion_s']:.2f} | {row['pruned']:.4f} | {row['finetuned']:.4f} | {'yes' if claim_000 else 'no'} | "
                     f"{'yes' if claim_001 else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--criteria", nargs="+", default=[*CRITERIA, SIMILARITY], choices=[*CRITERIA, SIMILARITY])
    parser.add_argument("--strategies", nargs="*", choices=list(STRATEGIES),
                        help="also prune by bn-gamma under these strategies (no names: every one but global and similarity, "
                             "which the bn-gamma and similarity rows already are); rows are added, finished ones reused")
    parser.add_argument("--targets", nargs="+", type=float, default=[0.4, 0.6], help="fractions of the MACs removed")
    parser.add_argument("--epochs", type=int, default=8, help="baseline training epochs")
    parser.add_argument("--sparse-epochs", type=int, default=3, help="sparse-training epochs, from the baseline")
    parser.add_argument("--finetune-epochs", type=int, default=DEFAULT_FINETUNE_EPOCHS,
                        help="fine-tuning epochs after pruning (the same for every row of a run; other counts are rows of their own, "
                             "e.g. a control with the training the dynamic and iterative strategies do while pruning)")
    parser.add_argument("--lr", type=float, default=1e-2, help="peak learning rate of every training (the build's default)")
    parser.add_argument("--sparsity-lambda", type=float, default=1e-3, help="L1 weight on BN gammas in sparse training (the build's default)")
    parser.add_argument("--gamma-ratio", type=float, default=0.1, help="similarity: fraction of prunable channels cut by BN gamma in stage one")
    parser.add_argument("--min-channels", type=int, default=4, help="channels every layer keeps at least (all criteria)")
    parser.add_argument("--calib-batches", type=int, default=4, help="training batches that calibrate activation and similarity")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: few images, 1 epoch of every training")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/runs/criteria")
    args = parser.parse_args()
    if args.strategies is None:
        args.strategies = []
    elif not args.strategies:
        args.strategies = [name for name in STRATEGIES if name not in SAME_AS_A_CRITERION_ROW]
    if args.quick:
        args.epochs = args.sparse_epochs = args.finetune_epochs = 1
    started = time.perf_counter()
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_model()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; epochs: baseline {args.epochs}, sparse {args.sparse_epochs}, fine-tune {args.finetune_epochs}; "
          f"lr {args.lr}, sparsity lambda {args.sparsity_lambda}, min channels {args.min_channels}, seed {args.seed}\n", flush=True)
    everything = {"cpu": cpu_model(), "torch": torch.__version__, "models": {}}
    for name in args.models:
        args.model = name
        model_started = time.perf_counter()
        everything["models"][name] = bench_model(args)
        everything["models"][name]["seconds"] = time.perf_counter() - model_started
    for name, results in everything["models"].items():
        print(table(results, CASES[name].task, [key for key, *_ in row_specs(args)]) + "\n")
        steps = {**results["step_seconds"], "whole model (this invocation)": results["seconds"]}
        print("step timings: " + ", ".join(f"{step} {seconds:.0f} s" for step, seconds in steps.items()) + "\n")
    write_json(args.out / "results.json", everything)
    print(f"total {time.perf_counter() - started:.0f} s; results in {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
