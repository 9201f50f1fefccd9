"""Stage outcomes: each record survives the trip through its manifest, and the manifest reads as a flat table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgecompress.outcomes import (EngineOutcome, ExportedModel, ExportOutcome, GammaHistogram, ModelOutcome, PruneOutcome,
                                   QuantOutcome, ReportOutcome, SparseOutcome)


def _manifest(outcome) -> dict:
    """What pipeline.run_stage writes, through JSON as on disk."""
    return json.loads(json.dumps({"outputs": outcome.outputs, "reason": outcome.skipped, "metrics": outcome.metrics()}))


def _gammas() -> np.ndarray:
    return np.abs(np.random.default_rng(0).normal(0, 0.3, 200))


EPOCHS = [{"epoch": 1, "loss": 1.5, "lr": 0.01, "seconds": 3.2}, {"epoch": 2, "loss": 0.9, "lr": 0.0002, "seconds": 3.1}]
OUTCOMES = [
    ModelOutcome(outputs={"model": "model.pt"}, scores={"map50": 0.91, "map50_95": 0.52}, params=1200, macs=34000, epochs=EPOCHS),
    SparseOutcome(outputs={"model": "model.pt", "gamma_plot": "g.png"}, scores={"top1": 0.8}, gamma_before=GammaHistogram.of(_gammas()),
                  gamma_after=GammaHistogram.of(_gammas() * 0.01), epochs=EPOCHS[:1]),
    PruneOutcome(outputs={"model": "model.pt"}, scores={"top1": 0.5}, params=600, macs=17000,
                 plan={"channels_removed": 10, "channels_total": 40, "target_macs": None}, removed_blocks=["layer1.0"]),
    QuantOutcome(outputs={"model": "model.pt"}, scores={"top1": 0.79}, ptq={"top1": 0.78}, backend="tensorrt", calibration_images=32,
                 activation_ranges={"conv": 2.5}, epochs=[{**EPOCHS[0], "top1": 0.77}], kept_epoch=0),
    QuantOutcome(outputs={"model": "model.pt"}, scores={"top1": 0.79}, ptq={"top1": 0.78}, backend="onnxruntime", calibration_images=32,
                 kept_float=["head.0", "add_1_quantizer"]),
    QuantOutcome(skipped="jetson-nano has no int8 support"),
    ExportOutcome(outputs={"baseline": "baseline.onnx", "int8": "int8.onnx"}, opset=17, models={
        "baseline": ExportedModel(1e-6, 2e-6, {"top1": 0.8}), "int8": ExportedModel(1e-3, 2e-3, {"top1": 0.79}, {"conv": 3})}),
    EngineOutcome(outputs={"model": "m.onnx"}, kind="bundle", precision="int8", command=["trtexec", "--onnx=model.onnx"], notes=["why"]),
    ReportOutcome(outputs={"report_md": "report.md"}, latency={"onnxruntime": {"int8": {"median_ms": 1.0}}}),
]


@pytest.mark.parametrize("outcome", OUTCOMES, ids=lambda o: type(o).__name__)
def test_outcome_round_trips_through_its_manifest(outcome):
    assert type(outcome).from_manifest(_manifest(outcome)) == outcome


def test_scores_sit_at_the_top_of_metrics_beside_the_fields():
    metrics = OUTCOMES[0].metrics()
    assert metrics == {"map50": 0.91, "map50_95": 0.52, "params": 1200, "macs": 34000, "epochs": EPOCHS}
    sparse = OUTCOMES[1].metrics()
    assert sparse["gamma_after"]["fraction_below_0.01"] > sparse["gamma_before"]["fraction_below_0.01"]
    assert "kept_float" not in OUTCOMES[3].metrics() and "activation_ranges" not in OUTCOMES[4].metrics()


def test_gamma_histogram_counts_every_channel():
    gammas = _gammas()
    histogram = GammaHistogram.of(gammas)
    assert sum(histogram.counts) == histogram.channels == gammas.size
    assert histogram.fraction_below_001 == pytest.approx(float((gammas < 0.01).mean()))
