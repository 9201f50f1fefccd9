"""What each build stage produced, as small typed records; the report reads these, never raw manifest keys.

A stage's record is stored as its manifest's ``outputs``, ``reason`` and ``metrics`` and read back with
:meth:`StageOutcome.from_manifest`. ``scores`` (the task's metrics, e.g. ``map50``) sit at the top level
of ``metrics``, beside the record's other fields, so a manifest reads as a flat table. A training stage's
``epochs`` are its per-epoch rows (epoch, loss, lr, seconds and validation metrics where measured), as in its
``train.csv``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np


@dataclass
class StageOutcome:
    """Artifact file names (relative to the stage folder), or why the stage was skipped."""

    outputs: dict[str, str] = field(default_factory=dict)
    skipped: str = ""

    def metrics(self) -> dict[str, Any]:
        """The manifest's ``metrics``: the record's fields (None left out), with ``scores`` spread at the top."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("outputs", "skipped", "scores")}
        plain = {name: asdict(value) if hasattr(value, "__dataclass_fields__") else value for name, value in data.items() if value is not None}
        return {**getattr(self, "scores", {}), **plain}

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> StageOutcome:
        """The record a stage's manifest describes."""
        metrics = dict(manifest.get("metrics", {}))
        names = {f.name for f in fields(cls)}
        values = {name: metrics.pop(name) for name in list(metrics) if name in names}
        if "scores" in names:
            values["scores"] = {name: value for name, value in metrics.items() if isinstance(value, float)}
        return cls(outputs=dict(manifest.get("outputs", {})), skipped=manifest.get("reason", ""), **cls._typed(values))

    @classmethod
    def _typed(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Turn nested plain values back into their records (records with nested ones override this)."""
        return values


@dataclass
class ModelOutcome(StageOutcome):
    """A trained (or loaded) model: its task scores, size and training epochs."""

    scores: dict[str, float] = field(default_factory=dict)
    params: int = 0
    macs: int = 0
    epochs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class GammaHistogram:
    """Distribution of |gamma| over the prunable BatchNorm channels."""

    channels: int
    edges: list
    counts: list[int]
    median: float
    fraction_below_001: float

    @classmethod
    def of(cls, gammas: np.ndarray) -> GammaHistogram:
        edges = [0.0, 1e-3, 1e-2, 0.05, 0.1, 0.25, 0.5, 1.0, float("inf")]
        counts, _ = np.histogram(gammas, bins=edges)
        return cls(int(gammas.size), edges[:-1] + ["inf"], counts.tolist(), float(np.median(gammas)), float((gammas < 1e-2).mean()))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fraction_below_0.01"] = data.pop("fraction_below_001")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GammaHistogram:
        data = dict(data)
        return cls(fraction_below_001=data.pop("fraction_below_0.01"), **data)


@dataclass
class SparseOutcome(StageOutcome):
    """Sparse training: scores, and the BN-gamma distribution before and after."""

    scores: dict[str, float] = field(default_factory=dict)
    gamma_before: GammaHistogram | None = None
    gamma_after: GammaHistogram | None = None
    epochs: list[dict[str, Any]] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        return {**super().metrics(), "gamma_before": self.gamma_before.to_dict(), "gamma_after": self.gamma_after.to_dict()}

    @classmethod
    def _typed(cls, values: dict[str, Any]) -> dict[str, Any]:
        return {**values, **{key: GammaHistogram.from_dict(values[key]) for key in ("gamma_before", "gamma_after") if key in values}}


@dataclass
class PruneOutcome(StageOutcome):
    """The pruned model before fine-tuning: scores, size, the plan's summary and the residual blocks removed."""

    scores: dict[str, float] = field(default_factory=dict)
    params: int = 0
    macs: int = 0
    plan: dict[str, Any] = field(default_factory=dict)
    removed_blocks: list[str] = field(default_factory=list)
    latency: dict[str, Any] | None = None  # with --target-latency: the plan's predicted latency next to both models' measured


@dataclass
class QuantOutcome(StageOutcome):
    """The int8 model: scores after calibration (``ptq``) and of the weights kept, how it was quantized, and QAT's epochs,
    each measured; ``kept_epoch`` is the one whose weights were kept (0: the calibrated model, when no epoch beat it)."""

    scores: dict[str, float] = field(default_factory=dict)
    ptq: dict[str, float] = field(default_factory=dict)
    backend: str = ""
    weight_bits: int = 8  # 7 where the CPU's int8 kernels saturate with 8-bit weights (the cpu target without VNNI)
    calibration_images: int = 0
    calibration_source: str = ""  # where the calibration images came from, in words
    activation_ranges: dict[str, float] | None = None
    kept_float: list[str] | None = None  # set when a sensitivity analysis chose the layers kept in float
    float_by_default: list[str] = field(default_factory=list)  # the model's prediction layers, float unless --quantize-prediction-layers
    epochs: list[dict[str, Any]] = field(default_factory=list)
    kept_epoch: int | None = None

    def kept_note(self, metric: str) -> str:
        """Which weights QAT kept, by ``metric``: "kept epoch 2 of 3 (...)" or "kept the PTQ model: QAT lowered ..."; empty without QAT epochs."""
        if not self.epochs or self.kept_epoch is None:
            return ""
        last = self.epochs[-1][metric]
        if self.kept_epoch == 0:
            ptq = self.ptq[metric]
            if last < ptq:
                return f"kept the PTQ model: QAT lowered {metric} {ptq:.4f} -> {last:.4f} ({_epochs(len(self.epochs))})"
            return f"kept the PTQ model: no QAT epoch beat its {metric} {ptq:.4f}"
        kept = self.epochs[self.kept_epoch - 1][metric]
        return f"kept epoch {self.kept_epoch} of {len(self.epochs)}: {metric} {kept:.4f} (PTQ {self.ptq[metric]:.4f}, last epoch {last:.4f})"


def _epochs(count: int) -> str:
    return "1 epoch" if count == 1 else f"{count} epochs"


@dataclass
class ExportedModel:
    """One ONNX file: its largest difference from PyTorch, its scores in onnxruntime and, for int8, its Q/DQ summary."""

    max_abs_error: float
    max_rel_error: float
    onnx: dict[str, float]
    qdq: dict[str, Any] | None = None


@dataclass
class ExportOutcome(StageOutcome):
    """Every exported ONNX by label (``baseline``, ``pruned``, ``int8`` or ``fp16``) and the opset used."""

    models: dict[str, ExportedModel] = field(default_factory=dict)
    opset: int = 0

    def metrics(self) -> dict[str, Any]:
        models = {label: {k: v for k, v in asdict(model).items() if v is not None} for label, model in self.models.items()}
        return {**models, "opset": self.opset}

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> ExportOutcome:
        metrics = manifest.get("metrics", {})
        models = {label: ExportedModel(**value) for label, value in metrics.items() if isinstance(value, dict)}
        return cls(outputs=dict(manifest.get("outputs", {})), skipped=manifest.get("reason", ""), models=models, opset=metrics.get("opset", 0))


@dataclass
class EngineOutcome(StageOutcome):
    """What was built for the target: an engine, a bundle or an onnxruntime model, at which precision, with which command."""

    kind: str = ""
    precision: str = ""
    command: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class ReportOutcome(StageOutcome):
    """Latency statistics by runtime, then model label (see :class:`edgecompress.profile.LatencyStats`)."""

    latency: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
