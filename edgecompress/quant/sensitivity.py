"""Per-layer quantization sensitivity, and mixed precision that keeps the most sensitive layers in float.

The model is quantized and calibrated once; every measurement then only switches quantizers on or
off (:class:`~edgecompress.quant.quantizer.QuantMode`), so N layers cost N + 2 evaluations and no
re-calibration. Sensitivity of a layer = metric(float) - metric(only that layer int8). Mixed
precision starts from the fully int8 model and returns the worst layers to float, one at a time,
until the drop is within ``max_drop`` (or no quantized layer is left); their quantizers are then
kept float for good, and passing the report's ``skip`` to ``quantize_model`` rebuilds the same model.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

from torch import Tensor, nn

from ..errors import EdgeCompressError
from ..progress import console
from .api import calibrated_model
from .forward_loop import CalibrationData
from .quantize import quantizers
from .quantizer import QuantMode, TensorQuantizer

Evaluate = Callable[[nn.Module], float]


@dataclass(frozen=True)
class LayerSensitivity:
    """The metric with only ``layer`` quantized, and its drop from the float metric."""

    layer: str
    metric: float
    drop: float


@dataclass
class SensitivityReport:
    """Per-layer table (most sensitive first), the layers kept in float and the three model metrics."""

    float_metric: float
    int8_metric: float
    mixed_metric: float
    max_drop: float
    layers: list[LayerSensitivity] = field(default_factory=list)
    skip: list[str] = field(default_factory=list)
    metric_name: str = "metric"

    @property
    def within_budget(self) -> bool:
        return self.float_metric - self.mixed_metric <= self.max_drop

    def to_dict(self) -> dict:
        return {**asdict(self), "within_budget": self.within_budget}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_markdown(self) -> str:
        kept = ", ".join(f"`{name}`" for name in self.skip) or "none"
        lines = [
            f"# Quantization sensitivity ({self.metric_name})", "",
            "| model | " + self.metric_name + " | drop |", "| --- | ---: | ---: |",
            f"| float | {self.float_metric:.4f} | 0 |",
            f"| int8 (all layers) | {self.int8_metric:.4f} | {self.float_metric - self.int8_metric:.4f} |",
            f"| mixed ({len(self.skip)} layers float) | {self.mixed_metric:.4f} | {self.float_metric - self.mixed_metric:.4f} |", "",
            f"Budget: drop <= {self.max_drop:g}. Kept in float: {kept}.", "",
            "| layer | " + self.metric_name + " with only this layer int8 | drop |", "| --- | ---: | ---: |",
        ]
        lines += [f"| `{row.layer}` | {row.metric:.4f} | {row.drop:.4f} |" for row in self.layers]
        return "\n".join(lines) + "\n"


def layer_quantizers(model: nn.Module) -> dict[str, list[TensorQuantizer]]:
    """Quantizers grouped by the layer owning them (``conv.input_quantizer`` -> ``conv``), in model order.

    A quantizer placed on its own (an add or concat input, e.g. ``add_1_quantizer``) is its own group.
    """
    modules = dict(model.named_modules())
    groups: dict[str, list[TensorQuantizer]] = defaultdict(list)
    for name, quantizer in quantizers(model).items():
        owner = name.rpartition(".")[0]
        while owner and isinstance(modules[owner], (TensorQuantizer, nn.ModuleList, nn.ModuleDict)):
            owner = owner.rpartition(".")[0]
        groups[owner or name].append(quantizer)
    return dict(groups)


def _set_enabled(groups: dict[str, list[TensorQuantizer]], enabled: Iterable[str]) -> None:
    on = set(enabled)
    for layer, group in groups.items():
        for quantizer in group:
            quantizer.mode = QuantMode.QUANTIZING if layer in on else QuantMode.DISABLED


def analyze_sensitivity(
    model: nn.Module,
    calib_data: CalibrationData,
    evaluate: Evaluate,
    *,
    max_drop: float = 0.01,
    method: str = "mse",
    skip: Sequence[str] = (),
    backend: str = "tensorrt",
    example_input: Tensor | None = None,
    metric_name: str = "metric",
    float_layers: Sequence[str] | None = None,
    weight_bits: int = 8,
) -> tuple[nn.Module, SensitivityReport]:
    """Measure each layer's sensitivity with ``evaluate`` (higher is better) and choose the layers to keep in float.

    ``calib_data`` is what :func:`~edgecompress.quant.api.calibrated_model` takes: an iterable of
    batches, or a ``forward_loop(model)`` callable together with ``example_input``. Returns the
    calibrated model with those layers' quantizers disabled, and the report. ``skip`` and
    ``float_layers`` (None: the model's default float layers) are never measured nor quantized; ``weight_bits``
    is :func:`~edgecompress.quant.quantize_model`'s.
    """
    if max_drop < 0:
        raise EdgeCompressError(f"max_drop must be >= 0, got {max_drop}; pass e.g. 0.01 for one point of the metric")
    float_metric = float(evaluate(model))
    quantized = calibrated_model(model, calib_data, method=method, skip=skip, backend=backend, example_input=example_input,
                                 float_layers=float_layers, weight_bits=weight_bits)
    groups = {layer: group for layer, group in layer_quantizers(quantized).items() if not all(q.kept_float for q in group)}
    with _EvaluationProgress("sensitivity", len(groups) + 1) as step:
        int8_metric = float(evaluate(quantized))
        step()
        rows = []
        for layer in groups:
            _set_enabled(groups, [layer])
            metric = float(evaluate(quantized))
            rows.append(LayerSensitivity(layer, metric, float_metric - metric))
            step()
    rows.sort(key=lambda row: row.drop, reverse=True)
    kept_float, metric = _mixed_precision(quantized, groups, rows, evaluate, float_metric, int8_metric, max_drop)
    report = SensitivityReport(float_metric, int8_metric, metric, max_drop, rows, kept_float, metric_name)
    return quantized.eval(), report


def _mixed_precision(
    model: nn.Module, groups: dict[str, list[TensorQuantizer]], ranked: list[LayerSensitivity], evaluate: Evaluate,
    float_metric: float, int8_metric: float, max_drop: float,
) -> tuple[list[str], float]:
    """Return the worst layers to float one by one until the drop is within ``max_drop``."""
    kept_float: list[str] = []
    metric = int8_metric
    _set_enabled(groups, groups)
    for row in ranked:
        if float_metric - metric <= max_drop:
            break
        kept_float.append(row.layer)
        _set_enabled(groups, [layer for layer in groups if layer not in kept_float])
        metric = float(evaluate(model))
        console.print(f"  keep {row.layer} in float: {metric:.4f} (drop {float_metric - metric:.4f})", highlight=False)
    for layer in kept_float:
        for quantizer in groups[layer]:
            quantizer.keep_float()
    return kept_float, metric


class _EvaluationProgress:
    """A progress bar over evaluations (hidden with EDGECOMPRESS_QUIET=1); yields a callable that advances it."""

    def __init__(self, description: str, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn(f"[bold blue]{description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=console, disable=os.environ.get("EDGECOMPRESS_QUIET") == "1")
        self.task = self.progress.add_task(description, total=total)

    def __enter__(self) -> Callable[[], None]:
        self.progress.__enter__()
        return lambda: self.progress.advance(self.task)

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)
