"""Tiny ONNX models for the engine tests: a float conv net and its Q/DQ (fake-quantized) twin."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

INPUT_SHAPE = (1, 3, 32, 32)


class TinyConvNet(nn.Module):
    """Conv-BN-ReLU twice and a 1x1 head: the layer pattern the pipeline prunes and quantizes."""

    def __init__(self, fake_quant: bool = False) -> None:
        super().__init__()
        self.fake_quant = fake_quant
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 4, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fake_quant:  # exported as QuantizeLinear/DequantizeLinear
            x = torch.fake_quantize_per_tensor_affine(x, 0.05, 0, -128, 127)
        return self.body(x)


def _export(model: nn.Module, path: Path) -> Path:
    torch.manual_seed(0)
    model.eval()
    torch.onnx.export(model, (torch.randn(INPUT_SHAPE),), str(path), input_names=["images"],
                      output_names=["out"], opset_version=17, dynamo=False)
    return path


@pytest.fixture(scope="session")
def float_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return _export(TinyConvNet(), tmp_path_factory.mktemp("onnx") / "tiny_fp32.onnx")


@pytest.fixture(scope="session")
def qdq_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return _export(TinyConvNet(fake_quant=True), tmp_path_factory.mktemp("onnx") / "tiny_qdq.onnx")


@pytest.fixture(scope="session")
def input_shape() -> tuple[int, ...]:
    return INPUT_SHAPE


class ResidualNet(nn.Module):
    """Conv-BN-SiLU stem, a residual block (conv-ReLU-conv + skip, ReLU) and a 1x1 head: the fusions TensorRT makes
    in a YOLO backbone (conv + PWN activation, conv + residual add)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.SiLU())
        self.conv1 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        return self.head(torch.relu(self.conv2(self.conv1(y)) + y))


@pytest.fixture(scope="session")
def residual_int8_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real int8 export (edgecompress's quantizer, TensorRT Q/DQ layout, calibrated) of :class:`ResidualNet`."""
    from edgecompress.export import export_onnx
    from edgecompress.quant import calibrate, quantize_model

    torch.manual_seed(0)
    x = torch.randn(INPUT_SHAPE)
    model = quantize_model(ResidualNet().eval(), x, backend="tensorrt")
    calibrate(model, [torch.randn(4, *INPUT_SHAPE[1:], generator=torch.Generator().manual_seed(1))], method="max")
    return export_onnx(model, x, tmp_path_factory.mktemp("onnx") / "residual_int8.onnx")


@pytest.fixture(scope="session")
def residual_float_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The float :class:`ResidualNet` at opset 13 (what JetPack 4's TensorRT 8.2 parses)."""
    from edgecompress.export import export_onnx

    torch.manual_seed(0)
    return export_onnx(ResidualNet().eval(), torch.randn(INPUT_SHAPE), tmp_path_factory.mktemp("onnx") / "residual_fp32.onnx", opset=13)
