"""The ``edgecompress quantize`` command's job: read a model and data, quantize, write model.pt, model.onnx and a manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from .errors import EdgeCompressError
from .quant.api import calibrated_model, train_qat
from .quant.calibrators import CALIBRATORS
from .run import DEFAULT_CALIB


@dataclass(frozen=True)
class QuantizeJob:
    """What ``edgecompress quantize`` does: the model and data to read, how to quantize, where to write."""

    model: str
    data: Path
    out: Path
    task: str = "detect"
    calib: Path | None = None
    weights: Path | None = None
    image_size: int | None = None
    batch_size: int = 16
    calib_images: int = 256
    limit: int | None = None
    method: str = "mse"
    backend: str = "tensorrt"
    sensitivity: bool = False
    max_drop: float = 0.01
    qat_epochs: int = 0
    lr: float = 1e-4
    skip: tuple[str, ...] = ()


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

    task = get_task(job.task)
    image_size = job.image_size or (ZOO[job.model].image_size if job.model in ZOO else None)
    if image_size is None:
        raise EdgeCompressError(f"--image-size is needed for {job.model}; pass the input size the model was trained at")
    for option, value, lowest in (("max-drop", job.max_drop, 0), ("qat-epochs", job.qat_epochs, 0), ("batch-size", job.batch_size, 1), ("calib-images", job.calib_images, 1)):
        if value < lowest:
            raise EdgeCompressError(f"--{option} must be >= {lowest}, got {value}")
    if job.method not in CALIBRATORS:
        raise EdgeCompressError(f"unknown --method {job.method!r}; choose one of {', '.join(CALIBRATORS)}")
    data = task.load(job.data, image_size, job.batch_size, limit=job.limit)
    model = resolve_model(job.model, num_classes=data.num_classes, weights=job.weights).eval()
    images = load_calibration_images(job.calib or DEFAULT_CALIB, image_size, limit=job.calib_images)
    example = images[:1]

    def evaluate(candidate: nn.Module) -> float:
        return task.evaluate(torch_predict(candidate), candidate, data.val)[task.primary_metric]

    outputs: dict[str, Path] = {}
    calib = calib_batches(images, job.batch_size)
    if job.sensitivity:
        quantized, report = analyze_sensitivity(model, calib, evaluate, max_drop=job.max_drop, method=job.method, skip=job.skip,
                                                backend=job.backend, example_input=example, metric_name=task.primary_metric)
        outputs["sensitivity_json"] = write_text(job.out / "sensitivity.json", report.to_json())
        outputs["sensitivity_md"] = write_text(job.out / "sensitivity.md", report.to_markdown())
        metrics = {"float": report.float_metric, "int8": report.int8_metric, "mixed": report.mixed_metric, "kept_float": report.skip}
    else:
        quantized = calibrated_model(model, calib, method=job.method, skip=job.skip, backend=job.backend, example_input=example)
        metrics = {"float": evaluate(model), "int8": evaluate(quantized)}
    if job.qat_epochs:
        train_qat(quantized, data.train, task.loss(quantized), epochs=job.qat_epochs, lr=job.lr)
        metrics["qat"] = evaluate(quantized)
    outputs["model"] = save_model(quantized.eval(), job.out / "model.pt")
    outputs["onnx"] = export_onnx(quantized, example, job.out / "model.onnx")
    manifest = {"settings": asdict(job), "image_size": image_size, "metric": task.primary_metric,
                "metrics": metrics, "calibration_images": int(images.shape[0]), "outputs": {k: p.name for k, p in outputs.items()}}
    outputs["manifest"] = write_json(job.out / "manifest.json", manifest)
    return outputs
