"""Distillation in fine-tuning and QAT (issue 13): the bundled detector ``yolo-mbv2`` on the digits detection set,
fine-tuned and quantization-aware trained with and without a teacher, at two pruning ratios, two seeds each.

What the build does with ``--distill`` is what each row does, with the same library calls: one baseline and one
sparse-trained model (L1 on the prunable BNs' gammas) are trained once and shared by every row; the sparse model
is pruned to each ``--ratios`` fraction of its prunable channels (bn-gamma, one global plan, the build's
``min_channels`` and ``round_to`` of 8); each pruned model is fine-tuned with the task loss alone ("plain") and with
the sparse model teaching it ("distilled"), from the same weights, on the same batches (same seed); each fine-tuned
model is then quantized for the CPU target (its layout and weight bits, BN folded, the prediction convs kept float, MSE-calibrated on the
bundled ``calib_data/``: the PTQ model) and trained ``--qat-epochs`` at lr/100 twice from that same PTQ model: plain
and with the float fine-tuned model teaching its int8 twin. So each (ratio, seed) gives four int8 results:
fine-tune plain or distilled x QAT plain or distilled; ``edgecompress build`` without and with ``--distill`` are
the plain/plain and distilled/distilled ones.

Augmentations (issue 13 asks for them on and off): at each ``--augment-ratios`` ratio (default 0.6, the build's), the
plain fine-tune is repeated from the same pruned model with each ``--augments`` training augmentation (default
``full``: the patent's random crop, perspective warp and mixup; the digits set forbids flips) instead of the build's
default ``light``, same seeds and epochs, then quantized (PTQ) as above; no QAT for these rows.

The question the note answers (issue 13): at the default prune ratio (0.6) does distillation close at least half of
the gap between the pruned-and-fine-tuned model and the unpruned one? The unpruned reference is the control: the
sparse model fine-tuned alike without pruning (same epochs, seeds and batches, then the same PTQ), since the baseline
has 16 fewer epochs of training than any fine-tuned model. "gap closed" = (distilled - plain) / (control - plain), per
metric, on the means over seeds (against the control's fine-tuned model for float rows, its PTQ model for int8 rows;
empty when the plain model is not below the control).

Metrics: mAP50 and mAP50-95 on the 400 validation images (COCO-style, the build's evaluation). Data (fixed, seed 0):
2000 train / 400 val images at 128 px, batch 32, as the build's defaults; epochs, lr and sparsity lambda as the
build's defaults too (20 baseline, 8 sparse, 8 fine-tune, 2 QAT; lr 0.01; lambda 1e-3). ``--quick``: 96 / 32 images,
1 epoch of everything, 32 calibration images: a smoke run of the code path, whose figures mean nothing.

Resumable: the baseline, the sparse model, each pruned and fine-tuned model and every finished QAT result are kept in
``--out`` and reused while the settings are the same (other settings start afresh); ``--ratios`` and ``--seeds``
only choose rows, so adding one computes only the new rows.

    OMP_NUM_THREADS=2 .venv/bin/python bench/train_bench.py                          # full run, about 2.5 h (see below)
    OMP_NUM_THREADS=1 .venv/bin/python bench/train_bench.py --quick --out /tmp/train-bench-smoke
    .venv/bin/python bench/train_bench.py --device cuda                              # on a GPU: minutes

Expected run time of the full run on the 2-core AMD EPYC at 1 thread under load, from criteria_bench's measurements
of the same model and data (yolo-mbv2: 58 s per training epoch, about 45 s once pruned, 10 s per evaluation) and this
bench's ``--quick`` run (a training step with a teacher costs about 1.3x one without; a QAT step about 1.4x a float
one): baseline 20 epochs about 20 min, sparse 8 epochs about 8 min; 8 fine-tunes of 8 epochs (4 plain about 6.5 min
each, 4 distilled about 8 min each) about 58 min; 16 QATs of 2 epochs (about 2.2 min plain, 2.9 min distilled) about
41 min; 8 calibrations and 36 evaluations about 12 min: about 2 h 20 min in all, less with 2 threads; the two
augmented fine-tunes (default) add about 16 min. The ``--quick``
run took 5 min 40 s at 1 thread under load (its evaluations of untrained models, with many boxes to match, dominate).
Measured on 2026-12-02 at 2 threads on that machine: baseline 12 min, sparse 5 min, each plain fine-tune about 3-4 min;
the whole run with the control rows about 1 h 15 min.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgecompress.artifacts import load_model, save_model, write_json  # noqa: E402
from edgecompress.data import calibration_paths, load_images, spread  # noqa: E402
from edgecompress.data.augment import AUGMENTATIONS  # noqa: E402
from edgecompress.data.calib import calib_batches  # noqa: E402
from edgecompress.data.digits import make_digits_detection  # noqa: E402
from edgecompress.models import ZOO, build_model  # noqa: E402
from edgecompress.profile.machine import cpu_model  # noqa: E402
from edgecompress.prune import prunable_batchnorms, prune  # noqa: E402
from edgecompress.quant import calibrate, default_float_layers, quantize_model  # noqa: E402
from edgecompress.run import DEFAULT_CALIB  # noqa: E402
from edgecompress.targets import get_target  # noqa: E402
from edgecompress.tasks import TaskData, get_task, torch_predict  # noqa: E402
from edgecompress.train import TrainConfig, distilling, fit, resolve_device  # noqa: E402

TASK = get_task("detect")
IMAGE_SIZE, BATCH_SIZE = 128, 32
FINETUNE_MODES = ("plain", "distilled")
CONTROL = 0.0  # the prune ratio of the control rows: none
METRICS = ("map50", "map50_95")


def seeded(data: TaskData, seed: int) -> TaskData:
    """Reset torch's and the training loader's seeds, so runs with and without a teacher see the same batches."""
    torch.manual_seed(seed)
    data.train.generator.manual_seed(seed)
    return data


def train(model: nn.Module, data: TaskData, config: TrainConfig, args: argparse.Namespace, seed: int, description: str,
          teacher: nn.Module | None = None, sparse=()) -> float:
    """Train ``model`` in place as the build's stages do (``teacher``: with its distillation term); wall seconds."""
    started = time.perf_counter()
    loader, device = seeded(data, seed).train, resolve_device(args.device)
    if teacher is None:
        fit(model, loader, TASK.loss(model), config, sparse_batchnorms=sparse, description=description, device=device)
    else:
        with distilling(model, teacher.to(device), TASK.loss(model), TASK.distillation_loss(model), weight=args.distill_weight) as loss_fn:
            fit(model, loader, loss_fn, config, description=description, device=device)
    return time.perf_counter() - started


def scores(model: nn.Module, data: TaskData, args: argparse.Namespace) -> dict[str, float]:
    model.to(resolve_device(args.device))
    return TASK.evaluate(torch_predict(model), model, data.val)


def cached_model(path: Path, make: Callable[[], nn.Module]) -> nn.Module:
    """The model saved at ``path``, or ``make()`` saved there."""
    if path.is_file():
        return load_model(path)
    model = make()
    save_model(model.cpu(), path)
    return model


class Bench:
    """The shared models and every finished result of one settings, kept in ``--out``."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.folder = args, args.out
        not_settings = ("ratios", "seeds", "augments", "augment_ratios", "out", "device")  # which rows, and where they run
        settings = {k: v for k, v in vars(args).items() if k not in not_settings}
        self.results_path = self.folder / "results.json"
        results = json.loads(self.results_path.read_text()) if self.results_path.is_file() else {}
        if results.get("settings") != settings:
            for stale in self.folder.glob("*.pt"):
                stale.unlink()
            results = {"settings": settings, "rows": {}, "seconds": {}}
        self.results = results
        self.folder.mkdir(parents=True, exist_ok=True)
        train_images, val_images = (96, 32) if args.quick else (2000, 400)
        root = make_digits_detection(self.folder / "data", n_train=train_images, n_val=val_images, image_size=IMAGE_SIZE, seed=0)
        self.root = root
        self.data = TASK.load(root, IMAGE_SIZE, BATCH_SIZE)  # the build's default augmentation, light
        self.loaded = {"light": self.data}
        self.results["dataset"] = f"digits detection, {train_images} train / {val_images} val images, {IMAGE_SIZE} px"
        self.example = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
        self.calibration = load_images(spread(calibration_paths(DEFAULT_CALIB), 32 if args.quick else 256), IMAGE_SIZE)

    def data_with(self, augment: str) -> TaskData:
        """The same images with another training augmentation (validation images are never augmented)."""
        if augment not in self.loaded:
            self.loaded[augment] = TASK.load(self.root, IMAGE_SIZE, BATCH_SIZE, augment=augment)
        return self.loaded[augment]

    def save(self) -> None:
        write_json(self.results_path, self.results)  # after every result: a stopped run resumes here

    def timed(self, key: str, seconds: float) -> None:
        self.results["seconds"][key] = round(seconds, 1)

    def baseline_and_sparse(self) -> tuple[nn.Module, nn.Module]:
        args = self.args

        def make_baseline() -> nn.Module:
            torch.manual_seed(0)
            model = build_model(args.model, num_classes=self.data.num_classes)
            TASK.prepare(model, self.data)
            self.timed("baseline training", train(model, self.data, TrainConfig(args.epochs, lr=args.lr), args, 0, "baseline"))
            return model.eval()

        def make_sparse() -> nn.Module:
            model = copy.deepcopy(baseline)
            batchnorms = [bn for _, bn in prunable_batchnorms(model, self.example)]
            config = TrainConfig(args.sparse_epochs, lr=args.lr, sparsity_lambda=args.sparsity_lambda)
            self.timed("sparse training", train(model, self.data, config, args, 0, "sparse", sparse=batchnorms))
            return model.eval()

        baseline = cached_model(self.folder / "baseline.pt", make_baseline)
        sparse = cached_model(self.folder / "sparse.pt", make_sparse)
        for name, model in (("baseline", baseline), ("sparse", sparse)):
            if name not in self.results:
                self.results[name] = scores(model, self.data, args)
                self.save()
        return baseline, sparse

    def pruned(self, sparse: nn.Module, ratio: float) -> nn.Module:
        def make() -> nn.Module:
            return prune(copy.deepcopy(sparse).cpu(), self.example, ratio=ratio, min_channels=8, round_to=8).eval()

        model = cached_model(self.folder / f"pruned-{ratio}.pt", make)
        if str(ratio) not in self.results.setdefault("pruned", {}):
            self.results["pruned"][str(ratio)] = scores(model, self.data, self.args)
            self.save()
        return model

    def fine_tuned(self, pruned: nn.Module, sparse: nn.Module, ratio: float, seed: int, mode: str) -> nn.Module:
        """``mode``: plain, distilled, or ``augment-NAME`` (plain with the NAME augmentation instead of light)."""
        key = f"{ratio}/{seed}/{mode}"
        data = self.data_with(mode.removeprefix("augment-")) if mode.startswith("augment-") else self.data

        def make() -> nn.Module:
            model = copy.deepcopy(pruned)
            config = TrainConfig(self.args.finetune_epochs, lr=self.args.lr)
            seconds = train(model, data, config, self.args, seed, f"finetune {key}", teacher=sparse if mode == "distilled" else None)
            self.results["rows"][key] = {"finetuned": scores(model, self.data, self.args), "finetune_s": round(seconds, 1), "qat": {}}
            self.save()
            return model.eval()

        path = self.folder / f"finetuned-{ratio}-{seed}-{mode}.pt"
        if key not in self.results["rows"]:
            path.unlink(missing_ok=True)
        return cached_model(path, make)

    def post_training_quantized(self, fine_tuned: nn.Module, row: dict) -> nn.Module:
        """The build's PTQ of ``fine_tuned`` (CPU target's layout, prediction convs float, mse), scored into ``row``."""
        float_model = fine_tuned.cpu().eval()
        target = get_target("cpu")
        ptq = quantize_model(float_model, self.example, float_layers=default_float_layers(float_model), backend=target.qdq_backend,
                             weight_bits=target.weight_bits)
        calibrate(ptq.to(resolve_device(self.args.device)), calib_batches(self.calibration, BATCH_SIZE), method="mse")
        row["ptq"] = scores(ptq, self.data, self.args)
        self.save()
        return ptq

    def control(self, sparse: nn.Module, seed: int) -> None:
        """The unpruned reference: ``sparse`` fine-tuned like the pruned models (no teacher), then PTQ'd."""
        fine_tuned = self.fine_tuned(sparse, sparse, CONTROL, seed, "plain")
        row = self.results["rows"][f"{CONTROL}/{seed}/plain"]
        if "ptq" not in row:
            self.post_training_quantized(fine_tuned, row)

    def quantization_aware(self, fine_tuned: nn.Module, ratio: float, seed: int, mode: str) -> None:
        """PTQ of the fine-tuned model once, then QAT from it plain and distilled; each result saved as it finishes."""
        row = self.results["rows"][f"{ratio}/{seed}/{mode}"]
        todo = [qat_mode for qat_mode in FINETUNE_MODES if qat_mode not in row["qat"]]
        if not todo:
            return
        float_model = fine_tuned.cpu().eval()
        ptq = self.post_training_quantized(float_model, row)
        for qat_mode in todo:
            model = copy.deepcopy(ptq)
            config = TrainConfig(self.args.qat_epochs, lr=self.args.lr / 100, warmup_steps=0)
            teacher = copy.deepcopy(float_model) if qat_mode == "distilled" else None
            seconds = train(model, self.data, config, self.args, seed, f"qat {ratio}/{seed}/{mode}/{qat_mode}", teacher=teacher)
            row["qat"][qat_mode] = {**scores(model, self.data, self.args), "qat_s": round(seconds, 1)}
            self.save()


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def gap_closed(reference: float, plain: float, distilled: float) -> str:
    return f"{(distilled - plain) / (reference - plain):.0%}" if reference > plain else ""


def tables(results: dict, args: argparse.Namespace) -> str:
    """Per ratio: fine-tuned and int8 metrics, mean over seeds (each seed's in brackets), and the gap closed."""
    base, sparse = results["baseline"], results["sparse"]
    controls = [results["rows"][f"{CONTROL}/{seed}/plain"] for seed in args.seeds]
    reference = {stage: {m: mean([row[stage][m] for row in controls]) for m in METRICS} for stage in ("finetuned", "ptq")}
    lines = [f"**{args.model}** on {results['dataset']}; baseline mAP50 {base['map50']:.4f} / mAP50-95 {base['map50_95']:.4f}, "
             f"sparse-trained (the fine-tune's teacher) {sparse['map50']:.4f} / {sparse['map50_95']:.4f}; seeds {args.seeds}; "
             f"distillation weight {args.distill_weight:g}", "",
             "Control, the sparse model fine-tuned alike without pruning (the unpruned reference of \"gap closed\"): "
             + ", ".join(f"{label} mAP50 {reference[stage]['map50']:.4f} / mAP50-95 {reference[stage]['map50_95']:.4f} "
                         f"(seeds: {', '.join(' / '.join(f'{row[stage][m]:.4f}' for m in METRICS) for row in controls)})"
                         for label, stage in (("fine-tuned", "finetuned"), ("int8 PTQ", "ptq"))), ""]
    for ratio in args.ratios:
        rows = {mode: [results["rows"][f"{ratio}/{seed}/{mode}"] for seed in args.seeds] for mode in FINETUNE_MODES}
        pruned = results["pruned"][str(ratio)]
        lines += [f"Prune ratio {ratio} (right after pruning: mAP50 {pruned['map50']:.4f} / mAP50-95 {pruned['map50_95']:.4f})", "",
                  "| model | mAP50 | mAP50-95 | mAP50 gap closed | mAP50-95 gap closed | train s (mean) |", "|---|---|---|---|---|---|"]

        def line(label: str, runs: list[dict], plain_runs: list[dict] | None, seconds: str, unpruned: dict) -> str:
            cells = [f"{mean([r[m] for r in runs]):.4f} ({', '.join(f'{r[m]:.4f}' for r in runs)})" for m in METRICS]
            closed = [gap_closed(unpruned[m], mean([r[m] for r in plain_runs]), mean([r[m] for r in runs])) if plain_runs else ""
                      for m in METRICS]
            return f"| {label} | {' | '.join(cells)} | {' | '.join(closed)} | {seconds} |"

        finetuned = {mode: [row["finetuned"] for row in rows[mode]] for mode in FINETUNE_MODES}
        for mode in FINETUNE_MODES:
            lines.append(line(f"fine-tuned, {mode}", finetuned[mode], finetuned["plain"] if mode == "distilled" else None,
                              f"{mean([row['finetune_s'] for row in rows[mode]]):.0f}", reference["finetuned"]))
        for mode in FINETUNE_MODES:
            lines.append(line(f"int8 PTQ of fine-tuned {mode}", [row["ptq"] for row in rows[mode]], None, "", reference["ptq"]))
            plain_qat = [row["qat"]["plain"] for row in rows[mode]]
            for qat_mode in FINETUNE_MODES:
                runs = [row["qat"][qat_mode] for row in rows[mode]]
                lines.append(line(f"int8 QAT {qat_mode}, of fine-tuned {mode}", runs, plain_qat if qat_mode == "distilled" else None,
                                  f"{mean([r['qat_s'] for r in runs]):.0f}", reference["ptq"]))
        lines.append("")
    lines.append("gap closed = (distilled - plain) / (control - plain) on the means over seeds (int8 rows: the control's PTQ); for a "
                 "QAT row, plain is the plain QAT of the same fine-tuned model. `build` without / with `--distill` = fine-tuned plain + QAT plain / fine-tuned distilled "
                 "+ QAT distilled.")
    return "\n".join(lines + augment_tables(results, args))


def augment_tables(results: dict, args: argparse.Namespace) -> list[str]:
    """Per ratio of ``--augment-ratios``: fine-tuned and PTQ metrics with each augmentation, mean over seeds."""
    lines = []
    for ratio in args.augment_ratios:
        lines += ["", f"Augmentation of the fine-tune at prune ratio {ratio} (no teacher; light = the plain rows above)", "",
                  "| augmentation | fine-tuned mAP50 | fine-tuned mAP50-95 | int8 PTQ mAP50 | int8 PTQ mAP50-95 | fine-tune s (mean) |",
                  "|---|---|---|---|---|---|"]
        for augment in ("light", *args.augments):
            rows = [results["rows"][f"{ratio}/{seed}/{'plain' if augment == 'light' else 'augment-' + augment}"] for seed in args.seeds]
            cells = [f"{mean([row[stage][m] for row in rows]):.4f} ({', '.join(f'{row[stage][m]:.4f}' for row in rows)})"
                     for stage in ("finetuned", "ptq") for m in METRICS]
            lines.append(f"| {augment} | {' | '.join(cells)} | {mean([row['finetune_s'] for row in rows]):.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolo-mbv2", choices=[name for name, entry in ZOO.items() if entry.task == "detect"])
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.4, 0.6],
                        help="fractions of the prunable channels removed (build default 0.6)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1],
                        help="seeds of the fine-tune and QAT (shuffles); the shared models use 0")
    parser.add_argument("--epochs", type=int, default=20, help="baseline training epochs")
    parser.add_argument("--sparse-epochs", type=int, default=8, help="sparse-training epochs, from the baseline")
    parser.add_argument("--finetune-epochs", type=int, default=8)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-2, help="peak learning rate (QAT: lr/100), the build's default")
    parser.add_argument("--sparsity-lambda", type=float, default=1e-3, help="L1 weight on BN gammas in sparse training (build default)")
    parser.add_argument("--distill-weight", type=float, default=1.0, help="weight of the distillation term (the build's --distill-weight)")
    parser.add_argument("--augments", nargs="*", default=["full"], choices=[name for name in AUGMENTATIONS if name != "light"],
                        help="augmentations the plain fine-tune is repeated with, besides the build's default light (full: the patent's)")
    parser.add_argument("--augment-ratios", nargs="*", type=float, default=[0.6], help="prune ratios of the augmentation rows")
    parser.add_argument("--device", default="cpu", help="where every model trains and is evaluated: cpu, cuda, cuda:N or auto")
    parser.add_argument("--quick", action="store_true", help="smoke run: few images, 1 epoch of everything")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/runs/train")
    args = parser.parse_args()
    if args.quick:
        args.epochs = args.sparse_epochs = args.finetune_epochs = args.qat_epochs = 1
    started = time.perf_counter()
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_model()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {resolve_device(args.device)}; "
          f"epochs: baseline {args.epochs}, sparse {args.sparse_epochs}, "
          f"fine-tune {args.finetune_epochs}, QAT {args.qat_epochs}; ratios {args.ratios}, seeds {args.seeds}\n", flush=True)
    if not set(args.augment_ratios) <= set(args.ratios):
        parser.error(f"--augment-ratios {args.augment_ratios} must be among --ratios {args.ratios}: their light rows are the plain ones")
    bench = Bench(args)
    _, sparse = bench.baseline_and_sparse()
    for seed in args.seeds:
        bench.control(sparse, seed)
    for ratio in args.ratios:
        pruned = bench.pruned(sparse, ratio)
        for seed, mode in itertools.product(args.seeds, FINETUNE_MODES):
            fine_tuned = bench.fine_tuned(pruned, sparse, ratio, seed, mode)
            bench.quantization_aware(fine_tuned, ratio, seed, mode)
        if ratio in args.augment_ratios:
            for seed, augment in itertools.product(args.seeds, args.augments):
                fine_tuned = bench.fine_tuned(pruned, sparse, ratio, seed, f"augment-{augment}")
                row = bench.results["rows"][f"{ratio}/{seed}/augment-{augment}"]
                if "ptq" not in row:
                    bench.post_training_quantized(fine_tuned, row)
    bench.timed("this invocation", time.perf_counter() - started)
    bench.save()
    print(tables(bench.results, args) + "\n")
    print("step timings: " + ", ".join(f"{step} {seconds:.0f} s" for step, seconds in bench.results["seconds"].items()))
    print(f"results in {bench.results_path}")


if __name__ == "__main__":
    main()
