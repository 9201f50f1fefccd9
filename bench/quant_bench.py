"""Int8 benchmark (issue #4): fp32 vs edgecompress PTQ and QAT vs onnxruntime's own quantize_static, side by side.

For the bundled detector and a ResNet-20, in one run: accuracy of fp32, PTQ-only and QAT (PyTorch
fake-quant and the int8 ONNX in onnxruntime), the peer (``onnxruntime.quantization.quantize_static``,
QDQ, per-channel int8 weights, uint8 activations, the same calibration images, on the fp32 ONNX),
ONNX file sizes, how many convs onnxruntime runs as QLinearConv, and onnxruntime CPU latency
(median; every model profiled in a fresh process, interleaved over rounds) at batch 1 and a large batch.
A PTQ row with entropy (KL) calibration shows the accuracy of that method; its graph is the PTQ
row's, so it is not timed.

Reproduce::

    make demo                                     # trains the detector: runs/yolo-mbv2-jetson-orin-nano/finetune/
    sudo apt-get install -y dataset-fashion-mnist # the ResNet's data (see /work/shared/DATA.md)
    .venv/bin/python bench/quant_bench.py         # ~10 minutes on 2 cores (25 when busy); prints the RESULTS.md tables
    .venv/bin/python bench/quant_bench.py --runtime onnxruntime --runtime openvino  # the same, timed in both CPU runtimes (~25 min)
    .venv/bin/python bench/quant_bench.py --calibration-sweep  # detector PTQ accuracy per calibration method and backend, entropy diagnosis (~5 min)
    .venv/bin/python bench/quant_bench.py --qat-study  # detector QAT recipes (learning rate, fixed or learned ranges) per backend (~9 min)
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from torch.utils.data import DataLoader, TensorDataset

from edgecompress.artifacts import load_model
from edgecompress.data.calib import calib_batches, load_calibration_images
from edgecompress.errors import EdgeCompressError
from edgecompress.export import export_onnx, openvino_conv_precisions, ort_optimized_int8_ops
from edgecompress.models import resolve_model
from edgecompress.run import DEFAULT_CALIB
from edgecompress.settings import BuildConfig
from edgecompress.profile import compare_models
from edgecompress.quant import BACKENDS, CALIBRATORS, EntropyCalibrator, MaxCalibrator, calibrate, learned_range_groups, quantize_model, quantizers
from edgecompress.tasks import get_task, onnx_predict, torch_predict
from edgecompress.train.loop import TrainConfig, fit

FASHION = Path("/usr/share/datasets/fashion-mnist")
DETECTOR_RUN = Path("runs/yolo-mbv2-jetson-orin-nano/finetune/model.pt")


@dataclass
class Case:
    """One model to benchmark: its trained fp32 weights, data, metric and the shapes to time."""

    name: str
    model: torch.nn.Module
    task: str
    metric: str
    train: DataLoader
    val: DataLoader
    calib: torch.Tensor
    qat_epochs: int
    qat_lr: float
    batch_shapes: tuple[tuple[int, ...], ...]


def detector_case() -> Case:
    if not DETECTOR_RUN.is_file():
        raise EdgeCompressError(f"{DETECTOR_RUN} not found; run `make demo` first (it trains the bundled detector)")
    from edgecompress.data.digits import make_digits_detection

    data_root = make_digits_detection(Path("runs/_data/digits-2000-400-128"), n_train=2000, n_val=400, image_size=128, seed=0)
    data = get_task("detect").load(data_root, 128, 32)
    calib = load_calibration_images(DEFAULT_CALIB, 128, limit=256)
    return Case("yolo-mbv2 (pruned, fine-tuned; digits detection, 128 px)", load_model(DETECTOR_RUN).eval(), "detect", "map50",
                data.train, data.val, calib, qat_epochs=BuildConfig.qat_epochs, qat_lr=BuildConfig.lr / 100, batch_shapes=((1, 3, 128, 128), (16, 3, 128, 128), (64, 3, 128, 128)))


def _idx(name: str) -> np.ndarray:
    with gzip.open(FASHION / name) as f:
        raw = f.read()
    return np.frombuffer(raw, np.uint8, offset=16 if "images" in name else 8)


def resnet_case(train_images: int, epochs: int) -> Case:
    if not FASHION.is_dir():
        raise EdgeCompressError(f"{FASHION} not found; install it with `apt-get install -y dataset-fashion-mnist`")

    def tensors(split: str, limit: int) -> TensorDataset:
        images = torch.from_numpy(_idx(f"{split}-images-idx3-ubyte.gz").reshape(-1, 1, 28, 28)[:limit].copy()).float() / 255
        labels = torch.from_numpy(_idx(f"{split}-labels-idx1-ubyte.gz")[:limit].astype(np.int64))
        return TensorDataset(torch.nn.functional.pad(images, (2, 2, 2, 2)).expand(-1, 3, -1, -1).contiguous(), labels)

    train_set, val_set = tensors("train", train_images), tensors("t10k", 2000)
    train = DataLoader(train_set, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    val = DataLoader(val_set, batch_size=256)
    torch.manual_seed(0)
    model = resolve_model("resnet20", num_classes=10)
    fit(model, train, get_task("classify").loss(model), TrainConfig(epochs, lr=0.05), description="resnet20 fp32")
    return Case(f"resnet20 (Fashion-MNIST, {train_images} train / 2000 test, 32 px)", model.eval(), "classify", "top1", train, val,
                train_set.tensors[0][:256], qat_epochs=1, qat_lr=5e-4, batch_shapes=((1, 3, 32, 32), (64, 3, 32, 32)))


class _Reader(CalibrationDataReader):
    """The calibration images, one batch of 32 at a time, for onnxruntime's quantize_static."""

    def __init__(self, images: torch.Tensor, input_name: str):
        self.batches = iter([{input_name: batch.numpy()} for batch in images.split(32)])

    def get_next(self):
        return next(self.batches, None)


def _conv_kernels(path: Path) -> str:
    convs = sum(node.op_type == "Conv" for node in onnx.load(str(path)).graph.node)
    return f"{ort_optimized_int8_ops(path).get('QLinearConv', 0)}/{convs}"


def run_case(case: Case, folder: Path, runs: int, rounds: int, method: str, runtimes: tuple[str, ...] = ("onnxruntime",)) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    task = get_task(case.task)
    example = case.calib[:1]
    evaluate_torch: Callable = lambda m: task.evaluate(torch_predict(m), case.model, case.val)[case.metric]
    evaluate_onnx: Callable = lambda p: task.evaluate(onnx_predict(p), case.model, case.val)[case.metric]
    rows: dict[str, dict] = {}
    paths = {"fp32": export_onnx(case.model, example, folder / "fp32.onnx")}
    rows["fp32"] = {"torch": evaluate_torch(case.model)}

    started = time.perf_counter()
    ptq = quantize_model(case.model, example, backend="onnxruntime")
    calibrate(ptq, calib_batches(case.calib, 32), method=method)
    paths["PTQ int8"] = export_onnx(ptq, example, folder / "ptq.onnx", int8=True)
    rows["PTQ int8"] = {"torch": evaluate_torch(ptq), "seconds": time.perf_counter() - started}

    started = time.perf_counter()
    qat = copy.deepcopy(ptq)
    torch.manual_seed(0)  # as the pipeline's stages do, so QAT rows repeat from run to run
    if case.train.generator is not None:
        case.train.generator.manual_seed(0)
    fit(qat, case.train, task.loss(qat), TrainConfig(case.qat_epochs, lr=case.qat_lr, warmup_steps=0), description="qat")
    qat.eval()
    paths["QAT int8"] = export_onnx(qat, example, folder / "qat.onnx", int8=True)
    rows["QAT int8"] = {"torch": evaluate_torch(qat), "seconds": time.perf_counter() - started}

    entropy = quantize_model(case.model, example, backend="onnxruntime")
    calibrate(entropy, calib_batches(case.calib, 32), method="entropy")
    untimed = {"PTQ int8, entropy calibration": export_onnx(entropy, example, folder / "ptq-entropy.onnx", int8=True)}
    rows["PTQ int8, entropy calibration"] = {"torch": evaluate_torch(entropy)}

    trt = quantize_model(case.model, example, backend="tensorrt")
    calibrate(trt, calib_batches(case.calib, 32), method=method)
    paths["PTQ int8, TensorRT layout"] = export_onnx(trt, example, folder / "ptq-tensorrt-layout.onnx", int8=True)
    rows["PTQ int8, TensorRT layout"] = {"torch": evaluate_torch(trt)}

    started = time.perf_counter()
    quantize_static(str(paths["fp32"]), str(folder / "peer.onnx"), _Reader(case.calib, "images"), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    paths["peer: ORT quantize_static"] = folder / "peer.onnx"
    rows["peer: ORT quantize_static"] = {"torch": float("nan"), "seconds": time.perf_counter() - started}

    for label, path in {**paths, **untimed}.items():
        rows[label].update(onnx=evaluate_onnx(path), mb=path.stat().st_size / 1e6, kernels=_conv_kernels(path))
        if "openvino" in runtimes:
            rows[label]["openvino_kernels"] = _openvino_int8_convs(path)
    for runtime in runtimes:
        for shape in case.batch_shapes:
            stats = compare_models(paths, shape, runs=runs if shape[0] == 1 else max(runs // 10, 10), rounds=rounds, runtime=runtime)
            for label, row in stats.items():
                rows[label][f"{runtime} b{shape[0]}_ms"] = row.median_ms
                rows[label][f"{runtime} b{shape[0]}_speedup"] = stats["fp32"].median_ms / row.median_ms
    return rows


def _openvino_int8_convs(path: Path) -> str:
    precisions = openvino_conv_precisions(path)
    return f"{precisions.get('u8', 0) + precisions.get('i8', 0)}/{sum(precisions.values())}"


def table(case: Case, rows: dict, runtimes: tuple[str, ...] = ("onnxruntime",)) -> str:
    timed = [f"{runtime} b{shape[0]}" for runtime in runtimes for shape in case.batch_shapes]
    openvino = "openvino" in runtimes
    head = (f"| {case.name} | {case.metric} torch | {case.metric} onnxruntime | ONNX MB | QLinearConv/Conv in ORT | "
            + ("int8/all convs in OpenVINO | " if openvino else "")
            + " | ".join(f"{column.replace(' b', ', batch ')} median ms | speed-up" for column in timed) + " |")
    lines = [head, "|" + "---|" * (5 + openvino + 2 * len(timed))]
    for label, row in rows.items():
        timing = " | ".join(f"{row[f'{c}_ms']:.3f} | {row[f'{c}_speedup']:.2f}x" if f"{c}_ms" in row else "- | -" for c in timed)
        torch_metric = "-" if np.isnan(row["torch"]) else f"{row['torch']:.4f}"
        kernels = f"{row['kernels']} | " + (f"{row['openvino_kernels']} | " if openvino else "")
        lines.append(f"| {label} | {torch_metric} | {row['onnx']:.4f} | {row['mb']:.2f} | {kernels}{timing} |")
    return "\n".join(lines)


def calibration_sweep(case: Case, folder: Path) -> str:
    """PTQ accuracy (PyTorch fake-quant and onnxruntime) for every calibration method and backend, as a table."""
    folder.mkdir(parents=True, exist_ok=True)
    task = get_task(case.task)
    example = case.calib[:1]
    lines = [f"| PTQ, {case.name} | " + " | ".join(f"{b}: {case.metric} torch | {b}: {case.metric} onnxruntime" for b in BACKENDS) + " |",
             "|" + "---|" * (1 + 2 * len(BACKENDS))]
    for method in CALIBRATORS:
        cells = []
        for backend in BACKENDS:
            model = quantize_model(case.model, example, backend=backend)
            calibrate(model, calib_batches(case.calib, 32), method=method)
            path = export_onnx(model, example, folder / f"{backend}-{method}.onnx", int8=True)
            cells += [task.evaluate(predict, case.model, case.val)[case.metric] for predict in (torch_predict(model), onnx_predict(path))]
        lines.append(f"| {method} | " + " | ".join(f"{cell:.4f}" for cell in cells) + " |")
    return "\n".join(lines)


def _entropy_ptq(case: Case, bins: int) -> torch.nn.Module:
    """PTQ (onnxruntime scheme) with entropy calibration on a ``bins``-bin histogram."""
    model = quantize_model(case.model, case.calib[:1], backend="onnxruntime").eval()
    for quantizer in quantizers(model).values():
        quantizer.begin_calibration(EntropyCalibrator(bins) if quantizer.axis is None else MaxCalibrator(quantizer.axis))
    with torch.no_grad():
        for batch in calib_batches(case.calib, 32):
            model(batch)
    for quantizer in quantizers(model).values():
        quantizer.end_calibration()
    return model


def entropy_diagnosis(case: Case) -> str:
    """Entropy PTQ with other histogram resolutions, and with the tensors KL clips hardest given the percentile range."""
    task = get_task(case.task)
    evaluate: Callable = lambda m: task.evaluate(torch_predict(m), case.model, case.val)[case.metric]
    models = {bins: _entropy_ptq(case, bins) for bins in (512, 2048, 8192)}  # KL's first candidate, bin 128: max/4, /16, /64
    lines = [f"entropy, {bins} bins: {case.metric} torch {evaluate(model):.4f}" for bins, model in models.items()]
    model = models[2048]  # the default resolution
    percentile = quantize_model(case.model, case.calib[:1], backend="onnxruntime")
    calibrate(percentile, calib_batches(case.calib, 32), method="percentile")
    reference = quantizers(percentile)
    hardest = [name for name, q in quantizers(model).items() if q.axis is None and float(q.amax) < 0.5 * float(reference[name].amax)]
    for name in hardest:
        quantizer = quantizers(model)[name]
        quantizer.zero_point = reference[name].zero_point
        quantizer.set_amax(reference[name].amax)
    lines.append(f"entropy, 2048 bins, the {len(hardest)} tensors with amax < half the percentile amax at the percentile range: "
                 f"{case.metric} torch {evaluate(model):.4f} ({', '.join(hardest)})")
    return "\n".join(lines)


@dataclass(frozen=True)
class QatRecipe:
    """One QAT variant: the weights' learning rate, the learned ranges' own rate (None: ranges stay fixed), the seed."""

    lr: float
    scale_lr: float | None = None
    seed: int = 0


QAT_RECIPES = {
    "fixed ranges, lr 1e-3": QatRecipe(1e-3),
    "fixed ranges, lr 1e-4": QatRecipe(1e-4),
    "fixed ranges, lr 1e-4, seed 1 (seed noise)": QatRecipe(1e-4, seed=1),
    "fixed ranges, lr 1e-5": QatRecipe(1e-5),
    "learned ranges (LSQ), range lr 1e-4, lr 1e-4": QatRecipe(1e-4, scale_lr=1e-4),
    "learned ranges (LSQ), range lr 1e-2, lr 1e-4": QatRecipe(1e-4, scale_lr=1e-2),
}


def _qat(ptq: torch.nn.Module, case: Case, recipe: QatRecipe) -> torch.nn.Module:
    """A copy of the calibrated ``ptq`` model trained with ``recipe``, torch and the training shuffle seeded alike."""
    model = copy.deepcopy(ptq)
    if recipe.scale_lr is not None:
        for quantizer in quantizers(model).values():
            if quantizer.axis is None:
                quantizer.learn_amax()
    torch.manual_seed(recipe.seed)
    case.train.generator.manual_seed(recipe.seed)
    config = TrainConfig(case.qat_epochs, lr=recipe.lr, warmup_steps=0)
    fit(model, case.train, get_task(case.task).loss(model), config, param_groups=learned_range_groups(model, recipe.scale_lr), description="qat")
    return model.eval()


def qat_study(case: Case, folder: Path) -> str:
    """PTQ (mse) and every QAT recipe from the same calibrated model, per backend: accuracy in PyTorch and onnxruntime, QAT time."""
    folder.mkdir(parents=True, exist_ok=True)
    task = get_task(case.task)
    example = case.calib[:1]
    lines = [f"| backend | {case.name}, QAT {case.qat_epochs} epochs | {case.metric} torch | {case.metric} onnxruntime | QAT seconds |",
             "|---|---|---|---|---|"]
    for backend in BACKENDS:
        ptq = quantize_model(case.model, example, backend=backend)
        calibrate(ptq, calib_batches(case.calib, 32), method="mse")
        variants = {"PTQ (mse)": None, **{f"QAT, {label}": recipe for label, recipe in QAT_RECIPES.items()}}
        for i, (label, recipe) in enumerate(variants.items()):
            started = time.perf_counter()
            model = ptq if recipe is None else _qat(ptq, case, recipe)
            seconds = "-" if recipe is None else f"{time.perf_counter() - started:.0f}"
            path = export_onnx(model, example, folder / f"{backend}-{i}.onnx", int8=True)
            scores = [task.evaluate(predict, case.model, case.val)[case.metric] for predict in (torch_predict(model), onnx_predict(path))]
            if recipe == QatRecipe(case.qat_lr):
                label += " (the pipeline's)"
            lines.append(f"| {backend} | {label} | {scores[0]:.4f} | {scores[1]:.4f} | {seconds} |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-quant"))
    parser.add_argument("--runs", type=int, default=300, help="timed runs per model and round at batch 1 (a tenth at the large batch)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calib-method", default="mse", help="PTQ and QAT calibrator (the pipeline default)")
    parser.add_argument("--resnet-train-images", type=int, default=6000)
    parser.add_argument("--resnet-epochs", type=int, default=3)
    parser.add_argument("--calibration-sweep", action="store_true", help="only the detector's PTQ accuracy per calibration method, and the entropy diagnosis")
    parser.add_argument("--qat-study", action="store_true", help="only the detector's PTQ and QAT accuracy per QAT recipe and backend")
    parser.add_argument("--runtime", action="append", choices=("onnxruntime", "openvino"),
                        help="CPU runtime to time the models in (repeatable; default onnxruntime)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.calibration_sweep:
        case = detector_case()
        print(calibration_sweep(case, args.out / "calibration"), "\n", entropy_diagnosis(case), sep="\n")
        return
    if args.qat_study:
        print("\n" + qat_study(detector_case(), args.out / "qat-study"))
        return
    runtimes = tuple(args.runtime or ("onnxruntime",))
    results = {}
    for build in (detector_case, lambda: resnet_case(args.resnet_train_images, args.resnet_epochs)):
        case = build()
        rows = run_case(case, args.out / case.task, args.runs, args.rounds, args.calib_method, runtimes)
        results[case.name] = rows
        print(table(case, rows, runtimes), "\n", flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
