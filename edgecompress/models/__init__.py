"""The model zoo and the loader for models a user brings (zoo name, python callable, saved model file)."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import fx, nn

from ..artifacts import UnsafeFileError, load_model, read_plain, register_classes_of
from ..errors import EdgeCompressError, describe
from .classifiers import MobileNetV2, ResNetCifar, VGGBN
from .detector import YoloMobileNetV2
from .ultralytics import UltralyticsDetector, is_ultralytics_checkpoint, load_ultralytics_checkpoint
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
    # Anchor-free (edgecompress.tasks.anchor_free): trained with a task-aligned assigner, DFL and CIoU; exported in Ultralytics' layout.
    "yolov8n": ZooEntry(lambda num_classes=80: YoloV8(num_classes, "n"), "detect", 640, "YOLOv8-n style: C2f, SPPF, PAN, decoupled anchor-free head"),
    "yolov8s": ZooEntry(lambda num_classes=80: YoloV8(num_classes, "s"), "detect", 640, "YOLOv8-s style: C2f, SPPF, PAN, decoupled anchor-free head"),
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
        try:
            model = factory(num_classes=num_classes)
        except TypeError:
            model = factory()
    except Exception as exc:  # the user's code: whatever it raises is theirs to fix
        raise EdgeCompressError(f"building the model with {spec} failed ({describe(exc)}); fix the model code and retry") from None
    if not isinstance(model, nn.Module):
        raise EdgeCompressError(f"{spec} returned a {type(model).__name__}, not an nn.Module")
    return model


_USER_FILES: dict[tuple[Path, int], object] = {}  # (file, mtime): module, so a file's classes are the same objects all run long


def _module_from_spec(spec: str) -> tuple[object, str]:
    """The module a ``file.py:callable`` or ``package.module:callable`` spec names (imported, i.e. run), and the callable's name."""
    location, _, attribute = spec.rpartition(":")
    if location.endswith(".py"):
        path = Path(location)
        if not path.is_file():
            raise EdgeCompressError(f"model file not found: {path}; pass --model path/to/file.py:callable")
        key = (path.resolve(), path.stat().st_mtime_ns)
        if key not in _USER_FILES:
            module_spec = importlib.util.spec_from_file_location(f"edgecompress_user_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            try:
                module_spec.loader.exec_module(module)
            except Exception as exc:
                raise EdgeCompressError(f"importing {path} failed ({type(exc).__name__}: {exc}); fix the file and retry") from None
            _USER_FILES[key] = module
        return _USER_FILES[key], attribute
    try:
        return importlib.import_module(location), attribute
    except ImportError as exc:
        raise EdgeCompressError(f"cannot import {location} ({exc}); pass package.module:callable on PYTHONPATH") from None


def _factory_from_spec(spec: str) -> object:
    module, attribute = _module_from_spec(spec)
    if not hasattr(module, attribute):
        raise EdgeCompressError(f"{spec.rpartition(':')[0]} has no attribute {attribute!r}; check the name after ':' in --model")
    return getattr(module, attribute)


def _is_code_spec(spec: str) -> bool:
    return spec not in ZOO and ":" in spec and not Path(spec).is_file()


def model_classes(spec: str) -> tuple[type[nn.Module], ...]:
    """The nn.Module classes of a ``--model`` spec's code (its module imported, as ``--model`` does), for ``load_model(classes=...)``.

    A stage that reloads a model built from ``file.py:callable`` in a fresh process passes these, so the
    file's classes load safely. A zoo name or a model file gives none (the zoo's classes are edgecompress's).
    """
    if not _is_code_spec(spec):
        return ()
    module, _ = _module_from_spec(spec)
    classes = [value for value in vars(module).values() if isinstance(value, type) and issubclass(value, nn.Module)]
    return tuple(cls for cls in classes if not issubclass(cls, fx.GraphModule))


def load_weights(model: nn.Module, weights: str | Path) -> nn.Module:
    """Load a state dict (or a checkpoint or edgecompress model file holding one under 'model' / 'state_dict') into ``model``.

    The file is read as plain data (``weights_only=True``): nothing in it runs.
    """
    path = Path(weights)
    fix = "pass a state dict saved with torch.save(model.state_dict())"
    try:
        state = read_plain(path, what="weights file", fix=fix)
    except UnsafeFileError as error:
        raise EdgeCompressError(f"{error}, not a state dict; {fix}") from None
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


def resolve_model(spec: str, *, num_classes: int = 10, weights: str | Path | None = None, trust: bool = False) -> nn.Module:
    """Turn ``--model`` into a module: a zoo name, ``file.py:callable``, ``package.module:callable`` or a saved model file.

    A model file is loaded safely (:func:`~edgecompress.artifacts.load_model`): one that needs code to
    load (``torch.save(model)``, an Ultralytics checkpoint) is refused unless ``trust`` (``--trust-model``);
    an Ultralytics detection checkpoint becomes an :class:`~edgecompress.models.ultralytics.UltralyticsDetector`.
    The classes of a model built from code are registered, so the files this run saves of it load again.
    """
    if spec in ZOO:
        model = build_model(spec, num_classes)
    elif _is_code_spec(spec):
        model = _call_factory(_factory_from_spec(spec), spec, num_classes)
        register_classes_of(model)  # the user asked to run this code: reloading its modules is no new trust
    elif Path(spec).suffix in {".pt", ".pth", ".pkl"} or Path(spec).is_file():
        model = load_ultralytics_checkpoint(spec, trust=trust) if is_ultralytics_checkpoint(spec) else load_model(spec, trust=trust)
    else:
        raise EdgeCompressError(
            f"cannot resolve --model {spec!r}; use a zoo name ({', '.join(ZOO)}), path/to/file.py:callable, package.module:callable or a model file"
        )
    return load_weights(model, weights) if weights is not None else model


__all__ = ["ZOO", "ZooEntry", "build_model", "resolve_model", "load_weights", "model_classes", "YoloMobileNetV2", "YoloV8", "ResNetCifar",
           "VGGBN", "MobileNetV2"]
