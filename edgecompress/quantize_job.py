"""The ``edgecompress quantize`` command's job: read a model and data, quantize, write model.pt, model.onnx and a manifest.

The output folder is replaced as a whole when every file is written (:func:`~edgecompress.artifacts.atomic_dir`),
so an interrupted job leaves the previous output, or none, never a mix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from .errors import EdgeCompressError
from .quant.api import calibrated_model, train_qat
from .run import DEFAULT_CALIB
from .settings import calibrator_names, check_settings, setting, task_names


def _backends() -> list[str]:
    from .quant.placement import BACKENDS

    return list(BACKENDS)


@dataclass(frozen=True)
class QuantizeJob:
    """What ``edgecompress quantize`` does: the model and data to read, how to quantize, where to write."""

    model: str = setting(..., "Zoo name, path/to/file.py:callable, package.module:callable or a model file (edgecompress.save_model).", argument=True)
    data: str = setting(..., "Validation/training data: a YOLO data.yaml (detect) or an ImageFolder root with train/ and val/ (classify).")
    out: str = setting(..., "Folder for model.pt, model.onnx, manifest.json and sensitivity.json/.md.")
    task: str = setting("detect", "Which metric sensitivity and QAT use.", choices=task_names)
    calib: str | None = setting(None, "Folder of calibration images. Default: an evenly spread sample of the --data training images.")
    weights: str | None = setting(None, "State dict to load into MODEL.")
    image_size: int | None = setting(None, "Square input size; defaults to the zoo model's.", minimum=1)
    batch_size: int = setting(16, "Calibration and evaluation batch size.", minimum=1)
    workers: int | None = setting(None, "Processes loading the evaluation and QAT batches (0: this process). Default: up to 8 on a GPU, "
                                        "up to 2 on the CPU (none with one CPU).", minimum=0)
    calib_images: int = setting(256, "Calibration images used (spread over the folder).", minimum=1)
    limit: int | None = setting(None, "Use at most this many training images (validation: fewer); for quick runs.", minimum=1)
    method: str = setting("mse", "Activation calibrator (entropy is KL, and clips ReLU6 detectors hard).", choices=calibrator_names)
    backend: str = setting("tensorrt", "Q/DQ layout: tensorrt (int8 symmetric), onnxruntime or openvino (uint8 activations).", choices=_backends)
    weight_bits: int | None = setting(None, "Bits of the int8 weights: 8, or 7 where int8 kernels saturate (x86 without VNNI). "
                                            "Default: 7 for the onnxruntime and openvino layouts on such a CPU, else 8.", minimum=2)
    sensitivity: bool = setting(False, "Measure each layer's accuracy drop and keep the worst layers in float.")
    max_drop: float = setting(0.01, "With --sensitivity: largest allowed metric drop of the int8 model (absolute, e.g. 0.01 mAP).", minimum=0)
    qat_epochs: int = setting(0, "Quantization-aware training epochs after calibration.", minimum=0)
    lr: float = setting(1e-4, "QAT learning rate.")
    skip: tuple[str, ...] = setting((), "Layers (module names) or placed quantizers (e.g. add_1_quantizer, from sensitivity.json) kept in float; repeatable.")
    quantize_prediction_layers: bool = setting(False, "Quantize a detector's final box/class convs too; by default they stay float.")
    trust_model: bool = setting(False, "Load a MODEL file that needs code to load (torch.save(model), an Ultralytics checkpoint): "
                                       "loading it can run anything in it, so only for files you trust.")
    device: str = setting("auto", "Where evaluation and QAT run: auto (a GPU when torch sees one, else the CPU), cpu, cuda or cuda:N. "
                                  "Calibration and export run on the CPU.")


OUTPUTS = frozenset({"model.pt", "model.onnx", "manifest.json", "sensitivity.json", "sensitivity.md"})


def check_out_folder(out: Path) -> None:
    """``--out`` is replaced as a whole, so it must be new, empty or an earlier quantize output with nothing else in it."""
    if out.exists() and not out.is_dir():
        raise EdgeCompressError(f"--out {out} is a file; pass a folder for the outputs")
    names = {entry.name for entry in out.iterdir()} if out.is_dir() else set()
    if names and ("manifest.json" not in names or not names <= OUTPUTS):
        others = sorted(names - OUTPUTS) or ["no manifest.json"]
        raise EdgeCompressError(f"--out {out} holds files quantize did not write ({', '.join(others[:3])}); "
                                "pass a new or empty folder: quantize replaces --out as a whole")


def job_weight_bits(job: QuantizeJob) -> int:
    """``--weight-bits``, or its default: 7 for a CPU runtime's layout on a CPU whose int8 kernels saturate, else 8."""
    from .profile.cpu import int8_dot_products_saturate

    if job.weight_bits is None:
        return 7 if job.backend != "tensorrt" and int8_dot_products_saturate() else 8
    if job.weight_bits > 8:
        raise EdgeCompressError(f"--weight-bits must be 2 to 8 (weights are stored as int8), got {job.weight_bits}; use 8, or 7 for x86 CPUs without VNNI")
    return job.weight_bits


def run_quantize_job(job: QuantizeJob) -> dict[str, Path]:
    """Quantize a model file or zoo model for deployment; writes model.pt, model.onnx, manifest.json (and sensitivity.json/.md).

    Inputs are all checked (output folder, model, data, calibration images) before any work; the output
    folder is replaced as a whole once every file is written. A model file loads safely unless ``trust_model``.
    """
    from .artifacts import atomic_dir, save_model, write_json, write_text
    from .data import image_paths, load_images, spread
    from .data.calib import calib_batches, load_calibration_images
    from .export import export_onnx
    from .models import ZOO, resolve_model
    from .tasks import get_task, torch_predict
    from .quant.sensitivity import analyze_sensitivity
    from .train.device import loader_workers, pin_memory, resolve_device

    check_settings(job)
    weight_bits = job_weight_bits(job)
    device = resolve_device(job.device)
    check_out_folder(Path(job.out))
    task = get_task(job.task)
    image_size = job.image_size or (ZOO[job.model].image_size if job.model in ZOO else None)
    if image_size is None:
        raise EdgeCompressError(f"--image-size is needed for {job.model}; pass the input size the model was trained at")
    data = task.load(Path(job.data), image_size, job.batch_size, limit=job.limit, workers=loader_workers(job.workers, device))
    pin_memory((data.train, data.val), device)
    model = resolve_model(job.model, num_classes=data.num_classes, weights=job.weights, trust=job.trust_model).eval()
    training = None if job.calib else image_paths(data.train.dataset)  # a user's own data, not the bundled digits
    if training:
        images = load_images(spread(training, job.calib_images), image_size)
    else:
        images = load_calibration_images(Path(job.calib) if job.calib else DEFAULT_CALIB, image_size, limit=job.calib_images)
    example = images[:1]

    def evaluate(candidate: nn.Module) -> float:  # on the candidate's device
        return task.evaluate(torch_predict(candidate), candidate, data.val)[task.primary_metric]

    calib = calib_batches(images, job.batch_size)
    float_layers = () if job.quantize_prediction_layers else None  # None: the model's default (a detector's prediction convs)
    report = None
    if job.sensitivity:
        quantized, report = analyze_sensitivity(model, calib, evaluate, max_drop=job.max_drop, method=job.method, skip=job.skip,
                                                float_layers=float_layers, backend=job.backend, example_input=example, metric_name=task.primary_metric,
                                                weight_bits=weight_bits)
        metrics = {"float": report.float_metric, "int8": report.int8_metric, "mixed": report.mixed_metric, "kept_float": report.skip}
    else:
        quantized = calibrated_model(model, calib, method=job.method, skip=job.skip, float_layers=float_layers, backend=job.backend, example_input=example,
                                     weight_bits=weight_bits)
        metrics = {"float": evaluate(model.to(device)), "int8": evaluate(quantized.to(device))}
    if job.qat_epochs:
        # every epoch is measured and the best weights kept, the calibrated ones included: QAT never makes int8 worse
        history = train_qat(quantized.to(device), data.train, task.loss(quantized), epochs=job.qat_epochs, lr=job.lr,
                            validate=lambda module: task.evaluate(torch_predict(module), module, data.val), keep_best=task.primary_metric)
        metrics.update(qat=history.kept_metrics()[task.primary_metric], qat_kept_epoch=history.kept_epoch,
                       qat_epochs=[row.metrics.get(task.primary_metric) for row in history.epochs])
    names: dict[str, str] = {}
    with atomic_dir(job.out) as folder:
        if report is not None:
            names["sensitivity_json"] = write_text(folder / "sensitivity.json", report.to_json()).name
            names["sensitivity_md"] = write_text(folder / "sensitivity.md", report.to_markdown()).name
        names["model"] = save_model(quantized.eval().cpu(), folder / "model.pt").name  # loads anywhere; exported on the CPU
        names["onnx"] = export_onnx(task.export_module(quantized), example, folder / "model.onnx").name  # the deployed layout
        manifest = {"settings": asdict(job), "weight_bits": weight_bits, "image_size": image_size, "metric": task.primary_metric,
                    "metrics": metrics, "calibration_images": int(images.shape[0]), "outputs": dict(names)}
        names["manifest"] = write_json(folder / "manifest.json", manifest).name
    return {label: Path(job.out) / name for label, name in names.items()}
