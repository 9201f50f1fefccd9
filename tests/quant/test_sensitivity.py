"""Sensitivity analysis ranks a layer whose input has an outlier channel first, and mixed precision keeps it float."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from torch import nn

from edgecompress.errors import EdgeCompressError
from edgecompress.export import export_onnx
from edgecompress.quant import QuantMode, calibrate, quantizers
from edgecompress.quant.api import calibrated_model
from edgecompress.quant.sensitivity import analyze_sensitivity, layer_quantizers


def _outlier_model() -> nn.Module:
    """conv0 writes ~500 into channel 0, which conv2 ignores: max-calibrated int8 wipes out conv2's other inputs."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        model[0].bias[0] = 500.0
        model[2].weight.mul_(10.0)
        model[2].weight[:, 0] = 0.0
    return model.eval()


class Fidelity:
    """Metric: 1 - relative squared error against the float model on a fixed validation batch; counts its calls."""

    def __init__(self, model: nn.Module):
        self.x = torch.rand(8, 3, 10, 10, generator=torch.Generator().manual_seed(123))
        with torch.no_grad():
            self.reference = model(self.x)
        self.calls = 0

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> float:
        self.calls += 1
        error = ((model.eval()(self.x) - self.reference) ** 2).mean() / (self.reference ** 2).mean()
        return float(1.0 - error)


def _calibration() -> list[torch.Tensor]:
    return [torch.rand(8, 3, 10, 10, generator=torch.Generator().manual_seed(i)) for i in range(2)]


def test_sensitive_layer_is_ranked_first_and_kept_float(tmp_path):
    model = _outlier_model()
    metric = Fidelity(model)
    mixed, report = analyze_sensitivity(model, _calibration(), metric, max_drop=0.01, method="max")
    assert [row.layer for row in report.layers][0] == "2"
    assert report.layers[0].drop > 0.1 > max(row.drop for row in report.layers[1:])
    assert report.float_metric == pytest.approx(1.0)
    assert report.float_metric - report.int8_metric > 0.1
    assert report.skip == ["2"] and report.within_budget
    assert metric.calls == 2 + len(report.layers) + len(report.skip)  # no re-quantization: one evaluation per measurement
    groups = layer_quantizers(mixed)
    assert all(q.mode == QuantMode.DISABLED for q in groups["2"])
    assert all(q.mode == QuantMode.QUANTIZING for name in ("0", "4") for q in groups[name])
    assert Fidelity(model)(mixed) == pytest.approx(report.mixed_metric)
    graph = onnx.load(export_onnx(mixed, torch.rand(1, 3, 10, 10), tmp_path / "mixed.onnx")).graph
    producer = {output: node.op_type for node in graph.node for output in node.output}
    convs = [[producer.get(name) == "DequantizeLinear" for name in node.input[:2]] for node in graph.node if node.op_type == "Conv"]
    assert sorted(convs) == [[False, False], [True, True], [True, True]]  # one float conv, the others quantized on input and weight


def test_generous_budget_keeps_everything_int8():
    model = _outlier_model()
    _, report = analyze_sensitivity(model, _calibration(), Fidelity(model), max_drop=10.0, method="max")
    assert report.skip == [] and report.mixed_metric == report.int8_metric


def test_report_serialises_to_json_and_markdown():
    model = _outlier_model()
    _, report = analyze_sensitivity(model, _calibration(), Fidelity(model), max_drop=0.01, method="max", metric_name="fidelity")
    data = json.loads(report.to_json())
    assert data["skip"] == ["2"] and data["within_budget"] is True
    assert {row["layer"] for row in data["layers"]} == {"0", "2", "4"}
    markdown = report.to_markdown()
    assert "| `2` |" in markdown and "Kept in float: `2`" in markdown and "fidelity" in markdown


def test_negative_budget_is_an_error():
    with pytest.raises(EdgeCompressError, match="max_drop"):
        analyze_sensitivity(_outlier_model(), _calibration(), lambda m: 0.0, max_drop=-0.1)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.body = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        return x + self.body(x)


def test_kept_float_names_of_placed_quantizers_are_valid_skip_names():
    """A report's skip list names quantizers placed on add inputs; re-quantizing with it rebuilds the mixed model."""
    torch.manual_seed(0)
    model = Residual().eval()
    mixed, report = analyze_sensitivity(model, _calibration(), Fidelity(model), max_drop=0.0, method="max")
    assert "relu_quantizer" in report.skip  # placed on the add's residual input, not a module of the model
    requantized = calibrated_model(model, _calibration(), method="max", skip=report.skip)
    x = torch.rand(2, 3, 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(requantized(x), mixed(x))
    only_add = calibrated_model(model, _calibration(), method="max", skip=["relu_quantizer"])
    found = quantizers(only_add)
    assert found["relu_quantizer"].mode == QuantMode.DISABLED
    assert all(q.mode == QuantMode.QUANTIZING for name, q in found.items() if name != "relu_quantizer")
    calibrate(only_add, _calibration(), method="max")  # recalibrating keeps it off
    assert found["relu_quantizer"].mode == QuantMode.DISABLED
