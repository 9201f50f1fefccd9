"""Prediction functions: one callable per runtime, so a metric is measured the same way on every model.

A prediction function takes a batch of images ([B, 3, H, W] float tensor) and returns the model's
outputs (a tensor, or a list of tensors or numpy arrays, in the model's output order).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch import Tensor, nn

from ..errors import EdgeCompressError
from ..helpers import model_device

Predict = Callable[[Tensor], object]


def torch_predict(model: nn.Module) -> Predict:
    """Prediction function of a PyTorch module in eval mode, run on the module's device (outputs stay there)."""
    model.eval()
    device = model_device(model)
    return lambda images: model(images.to(device, non_blocking=device.type == "cuda"))


def onnx_predict(path: Path) -> Predict:
    """Prediction function of an ONNX model run by onnxruntime on the CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return lambda images: session.run(None, {input_name: images.numpy()})


def openvino_predict(path: Path) -> Predict:
    """Prediction function of an ONNX model compiled by OpenVINO for the CPU (f32 inference precision: int8 where
    the model has Q/DQ nodes, float elsewhere, never bf16)."""
    try:
        import openvino as ov
    except ImportError:
        raise EdgeCompressError("OpenVINO is not installed; pip install openvino to evaluate in it") from None
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda images: [compiled(images.numpy())[output] for output in compiled.outputs]
