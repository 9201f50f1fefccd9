"""The ``edgecompress quantize`` command's job: read a model and data, quantize, write model.pt, model.onnx and a manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from .errors import EdgeCompressError
from .quant.api import calibrated_model, train_qat
from .quant.calibrators import CALIBRATORS
from .run import DEFAULT_CALIB
from .settings import check_settings, setting


def _tasks() -> list[str]:
    from .tasks import TASKS

    return list(TASKS)


def _calibrators() -> list[str]:
    return list(CALIBRATORS)


def _backends() -> list[str]:
    from .quant.placement import BACKENDS

    return list(BACKENDS)


@dataclass(frozen=True)
class QuantizeJob:
    """What ``edgecompress quantize`` does: the model and data to read, how to quantize, where to write."""

    model: str = setting(..., "Zoo name, path/to/file.py:callable, package.module:callable or a torch.save(model) file.", argument=True)
    data: str = setting(..., "Validation/training data: a YOLO data.yaml (detect) or an ImageFolder root with train/ and val/ (classify).")
    out: str = setting(..., "Folder for model.pt, model.onnx, manifest.json and sensitivity.json/.md.")
    task: str = setting("detect", "Which metric sensitivity and QAT use.", choices=_tasks)
    calib: str | None = setting(None, "Folder of calibration images. Default: the bundled calib_data/.")
    weights: str | None = setting(None, "State dict to load into MODEL.")
    image_size: int | None = setting(None, "Square input size; defaults to the zoo model's.", minimum=1)
    batch_size: int = setting(16, "Calibration and evaluation batch size.", minimum=1)
    calib_images: int = setting(256, "Calibration images used (spread over the folder).", minimum=1)
    limit: int | None = setting(None, "Use at most this many training images (validation: fewer); for quick runs.", minimum=1)
    method: str = setting("mse", "Activation calibrator (entropy is KL, and clips ReLU6 detectors hard).", choices=_calibrators)
    backend: str = setting("tensorrt", "Q/DQ layout: tensorrt (int8 symmetric) or onnxruntime (uint8 activations).", choices=_backends)
    sensitivity: bool = setting(False, "Measure each layer's accuracy drop and keep the worst layers in float.")
    max_drop: float = setting(0.01, "With --sensitivity: largest allowed metric drop of the int8 model (absolute, e.g. 0.01 mAP).", minimum=0)
    qat_epochs: int = setting(0, "Quantization-aware training epochs after calibration.", minimum=0)
    lr: float = setting(1e-4, "QAT learning rate.")
    skip: tuple[str, ...] = setting((), "Layers (module names) or placed quantizers (e.g. add_1_quantizer, from sensitivity.json) kept in float; repeatable.")


def run_quantize_job(job: QuantizeJob) -> dict[str, Path]:
    """Quantize a model file or zoo model for deployment; writes model.pt, model.onnx, manifest.json (and sensitivity.json/.md).

    Every file is written atomically; inputs are all checked (model, data, calibration images) before any work.
    """
    from .artifacts import save_model, write_json, write_text
    from .data.calib import calib_batches, load_calibration_images
    from .export import export_onnx
    from .models import ZOO, resolve_model
    from .tasks import get_task, torch_predict
    from .quant.sensitivity import analyze_sensitivity

    check_settings(job)
    task = get_task(job.task)
    image_size = job.image_size or (ZOO[job.model].image_size if job.model in ZOO else None)
    if image_size is None:
        raise EdgeCompressError(f"--image-size is needed for {job.model}; pass the input size the model was trained at")
    data = task.load(Path(job.data), image_size, job.batch_size, limit=job.limit)
    model = resolve_model(job.model, num_classes=data.num_classes, weights=job.weights).eval()
    images = load_calibration_images(Path(job.calib) if job.calib else DEFAULT_CALIB, image_size, limit=job.calib_images)
    example = images[:1]

    def evaluate(candidate: nn.Module) -> float:
        return task.evaluate(torch_predict(candidate), candidate, data.val)[task.primary_metric]

    outputs: dict[str, Path] = {}
    calib = calib_batches(images, job.batch_size)
    if job.sensitivity:
        quantized, report = analyze_sensitivity(model, calib, evaluate, max_drop=job.max_drop, method=job.method, skip=job.skip,
                                                backend=job.backend, example_input=example, metric_name=task.primary_metric)
        outputs["sensitivity_json"] = write_text(Path(job.out) / "sensitivity.json", report.to_json())
        outputs["sensitivity_md"] = write_text(Path(job.out) / "sensitivity.md", report.to_markdown())
        metrics = {"float": report.float_metric, "int8": report.int8_metric, "mixed": report.mixed_metric, "kept_float": report.skip}
    else:
        quantized = calibrated_model(model, calib, method=job.method, skip=job.skip, backend=job.backend, example_input=example)
        metrics = {"float": evaluate(model), "int8": evaluate(quantized)}
    if job.qat_epochs:
        train_qat(quantized, data.train, task.loss(quantized), epochs=job.qat_epochs, lr=job.lr)
        metrics["qat"] = evaluate(quantized)
    outputs["model"] = save_model(quantized.eval(), Path(job.out) / "model.pt")
    outputs["onnx"] = export_onnx(quantized, example, Path(job.out) / "model.onnx")
    manifest = {"settings": asdict(job), "image_size": image_size, "metric": task.primary_metric,
                "metrics": metrics, "calibration_images": int(images.shape[0]), "outputs": {k: p.name for k, p in outputs.items()}}
    outputs["manifest"] = write_json(Path(job.out) / "manifest.json", manifest)
    return outputs
