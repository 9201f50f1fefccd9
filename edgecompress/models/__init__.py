"""The model zoo and the loader for models a user brings (zoo name, python callable, saved module)."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..artifacts import load_model
from ..errors import EdgeCompressError
from .classifiers import MobileNetV2, ResNetCifar, VGGBN
from .detector import YoloMobileNetV2
from .yolov8 import YoloV8


@dataclass(frozen=True)
class ZooEntry:
    """A zoo model: its constructor, its task and the input size it was designed for."""

    build: Callable[..., nn.Module]
    task: str
    image_size: int
    summary: str


ZOO: dict[str, ZooEntry] = {
    "yolo-mbv2": ZooEntry(YoloMobileNetV2, "detect", 128, "YOLOv3 head on MobileNetV2, depthwise-separable (patent embodiment), width 0.5"),
    "resnet20": ZooEntry(lambda num_classes=10: ResNetCifar(20, num_classes), "classify", 32, "ResNet-20 for 32 px images"),
    "resnet56": ZooEntry(lambda num_classes=10: ResNetCifar(56, num_classes), "classify", 32, "ResNet-56 for 32 px images"),
    "vgg11-bn": ZooEntry(lambda num_classes=10: VGGBN(11, num_classes), "classify", 32, "VGG-11 with BatchNorm, width 0.5"),
    "mobilenetv2": ZooEntry(lambda num_classes=10: MobileNetV2(num_classes, width=0.5, stem_stride=1), "classify", 32, "MobileNetV2 width 0.5, stride-1 stem for 32 px"),
    # Anchor-free: the pipeline's detection loss and decoding are anchor-based, so these serve the pruning engine and benchmarks.
    "yolov8n": ZooEntry(lambda num_classes=80: YoloV8(num_classes, "n"), "detect-anchor-free", 640, "YOLOv8-n style: C2f, SPPF, PAN, decoupled anchor-free head"),
    "yolov8s": ZooEntry(lambda num_classes=80: YoloV8(num_classes, "s"), "detect-anchor-free", 640, "YOLOv8-s style: C2f, SPPF, PAN, decoupled anchor-free head"),
}


def build_model(name: str, num_classes: int = 10) -> nn.Module:
    """Build a zoo model by name with freshly initialised weights."""
    if name not in ZOO:
        raise EdgeCompressError(f"unknown zoo model {name!r}; choose one of {', '.join(ZOO)} or pass path/to/file.py:callable")
    return ZOO[name].build(num_classes=num_classes)


def _call_factory(factory: object, spec: str, num_classes: int) -> nn.Module:
    if not callable(factory):
        raise EdgeCompressError(f"{spec} is not callable; point --model at a function or class returning an nn.Module")
    try:
        model = factory(num_classes=num_classes)
    except TypeError:
        model = factory()
    if not isinstance(model, nn.Module):
        raise EdgeCompressError(f"{spec} returned a {type(model).__name__}, not an nn.Module")
    return model


def _factory_from_spec(spec: str) -> object:
    location, _, attribute = spec.rpartition(":")
    if location.endswith(".py"):
        path = Path(location)
        if not path.is_file():
            raise EdgeCompressError(f"model file not found: {path}; pass --model path/to/file.py:callable")
        module_spec = importlib.util.spec_from_file_location(f"edgecompress_user_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise EdgeCompressError(f"importing {path} failed ({type(exc).__name__}: {exc}); fix the file and retry") from None
    else:
        try:
            module = importlib.import_module(location)
        except ImportError as exc:
            raise EdgeCompressError(f"cannot import {location} ({exc}); pass package.module:callable on PYTHONPATH") from None
    if not hasattr(module, attribute):
        raise EdgeCompressError(f"{location} has no attribute {attribute!r}; check the name after ':' in --model")
    return getattr(module, attribute)


def load_weights(model: nn.Module, weights: str | Path) -> nn.Module:
    """Load a state dict (or a checkpoint holding one under 'model' / 'state_dict') into ``model``."""
    path = Path(weights)
    if not path.is_file():
        raise EdgeCompressError(f"weights file not found: {path}; pass --weights path/to/state_dict.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EdgeCompressError(f"cannot read weights {path} ({type(exc).__name__}); pass a state dict saved with torch.save(model.state_dict())") from None
    if isinstance(state, dict):
        state = state.get("model", state.get("state_dict", state))
    if not isinstance(state, dict):
        raise EdgeCompressError(f"{path} holds no state dict; pass one saved with torch.save(model.state_dict())")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise EdgeCompressError(f"weights {path} do not fit the model ({first}); pass weights saved from the same architecture") from None
    return model


def resolve_model(spec: str, *, num_classes: int = 10, weights: str | Path | None = None) -> nn.Module:
    """Turn ``--model`` into a module: a zoo name, ``file.py:callable``, ``package.module:callable`` or a saved module."""
    if spec in ZOO:
        model = build_model(spec, num_classes)
    elif ":" in spec and not Path(spec).is_file():
        model = _call_factory(_factory_from_spec(spec), spec, num_classes)
    elif Path(spec).suffix in {".pt", ".pth", ".pkl"} or Path(spec).is_file():
        model = load_model(spec)
    else:
        raise EdgeCompressError(
            f"cannot resolve --model {spec!r}; use a zoo name ({', '.join(ZOO)}), path/to/file.py:callable, package.module:callable or a torch.save(model) file"
        )
    return load_weights(model, weights) if weights is not None else model


__all__ = ["ZOO", "ZooEntry", "build_model", "resolve_model", "load_weights", "YoloMobileNetV2", "YoloV8", "ResNetCifar", "VGGBN", "MobileNetV2"]
