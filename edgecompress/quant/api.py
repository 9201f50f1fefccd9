"""``edgecompress.quantize``: fold BN, swap in int8 fake-quant layers, calibrate, then optionally QAT, in one call."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from torch import Tensor, nn

from ..errors import EdgeCompressError
from .calibrators import CALIBRATORS
from .quantize import calibrate, quantize_model

LossFn = Callable[[object, Tensor], Tensor]


def _images(batch: object) -> Tensor:
    """The image tensor of a batch: a tensor, or the first item of an (images, targets) tuple."""
    images = batch[0] if isinstance(batch, (tuple, list)) else batch
    if not isinstance(images, Tensor):
        raise EdgeCompressError(f"calibration batches must be tensors or (images, ...) tuples, got {type(images).__name__}; pass a DataLoader of images")
    return images


def calibrated_model(
    model: nn.Module, calib_loader: Iterable, *, method: str = "mse", skip: Sequence[str] = (), backend: str = "tensorrt",
    example_input: Tensor | None = None, percentile: float = 99.99,
) -> nn.Module:
    """A quantized copy of ``model`` (BN folded, layers swapped) calibrated on ``calib_loader``; ``model`` is untouched."""
    if method not in CALIBRATORS:
        raise EdgeCompressError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATORS)}")
    batches = iter(calib_loader)
    first = next(batches, None)
    if first is None:
        raise EdgeCompressError("the calibration loader is empty; pass a few hundred representative images")
    example = example_input if example_input is not None else _images(first)[:1]
    quantized = quantize_model(model, example, skip=tuple(skip), backend=backend)
    calibrate(quantized, itertools.chain([first], batches), method=method, percentile=percentile)
    return quantized


def train_qat(model: nn.Module, train_loader: Iterable, loss_fn: LossFn, *, epochs: int, lr: float = 1e-4, description: str = "qat") -> nn.Module:
    """Quantization-aware training of a calibrated model, in place, with the project's training loop (no warm-up)."""
    from ..train.loop import TrainConfig, fit

    fit(model, train_loader, loss_fn, TrainConfig(epochs, lr=lr, warmup_steps=0), description=description)
    return model


def quantize(
    model: nn.Module,
    calib_loader: Iterable,
    *,
    method: str = "mse",
    qat_epochs: int = 0,
    skip: Sequence[str] = (),
    backend: str = "tensorrt",
    train_loader: Iterable | None = None,
    loss_fn: LossFn | None = None,
    lr: float = 1e-4,
    example_input: Tensor | None = None,
) -> nn.Module:
    """An int8 fake-quantized copy of ``model``, ready for :func:`~edgecompress.export.export_onnx`.

    Folds BatchNorm, swaps every Conv2d/Linear not in ``skip`` for its quantized twin, calibrates
    activation ranges with ``method`` on ``calib_loader`` (tensors or (images, ...) batches), then
    runs ``qat_epochs`` of quantization-aware training on ``train_loader`` with ``loss_fn``.
    """
    if qat_epochs < 0:
        raise EdgeCompressError(f"qat_epochs must be >= 0, got {qat_epochs}")
    if qat_epochs and (train_loader is None or loss_fn is None):
        raise EdgeCompressError("qat_epochs > 0 needs train_loader and loss_fn; pass both, or qat_epochs=0 for calibration only")
    quantized = calibrated_model(model, calib_loader, method=method, skip=skip, backend=backend, example_input=example_input)
    if qat_epochs:
        train_qat(quantized, train_loader, loss_fn, epochs=qat_epochs, lr=lr)
    return quantized.eval()


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
    from ..artifacts import save_model, write_json, write_text
    from ..data.calib import calib_batches, load_calibration_images
    from ..export import export_onnx
    from ..models import ZOO, resolve_model
    from ..pipeline import DEFAULT_CALIB
    from ..tasks import get_task, torch_predict
    from .sensitivity import analyze_sensitivity

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
