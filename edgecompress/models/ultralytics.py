"""Ultralytics checkpoints (``yolov8n.pt``, ``yolo11s.pt``, a user's ``best.pt``) as anchor-free detectors.

An Ultralytics checkpoint is a pickled dict whose ``'model'`` (or ``'ema'``) is a ``DetectionModel``
from ``ultralytics.nn.tasks``, usually in fp16, beside ``'train_args'`` and training records.
Unpickling it imports and runs Ultralytics code, so it loads only with ``trust=True``
(``--trust-model``) and only where the optional ``ultralytics`` package is installed
(``pip install 'edgecompress[ultralytics]'``). Nothing here imports ``ultralytics`` itself: the
unpickler does, for a file the user trusts. The Ultralytics modules are used as they are, none is
rewritten.

:class:`UltralyticsDetector` wraps the model in the anchor-free contract (``num_classes``,
``reg_max``, ``strides``; ``forward`` returns one raw map per stride, box DFL logits then class
logits): it routes the input through the model's layers by their ``f`` (inputs) and ``i`` (index)
attributes, as the model itself does, and stops before the ``Detect`` head's decoding, taking each
level's output from the head's box branch ``cv2[k]`` and class branch ``cv3[k]``. These names and
attributes are the same in every Ultralytics 8.x release; the head's own ``forward`` (whose
training-mode output changed from a list to a dict across releases) is never called. So the
wrapper's outputs are the head's training-mode outputs, while its BatchNorms follow the wrapper's
own train/eval mode. :func:`save_ultralytics_checkpoint` writes the (pruned) model back as a
checkpoint that ``ultralytics.YOLO`` loads.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import os
import pickletools
import zipfile
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from ..artifacts import UnsafeFileError, atomic_path, read_plain, read_trusted, register_classes_of
from ..errors import EdgeCompressError, describe
from ..graph import AnalysisContext, register_module_rule
from ..graph.registry import MODULE_RULES

EXTRA = "pip install 'edgecompress[ultralytics]'"
_FIX = "pass a checkpoint saved by Ultralytics (e.g. runs/detect/train/weights/best.pt)"
_SUPPORTED_MODEL, _SUPPORTED_HEAD = "DetectionModel", "Detect"

# ---------------------------------------------------------------------------------------------- recognising a checkpoint


def _pickle_stream(path: Path) -> Any:
    """The file object of the (first) pickle in ``path``: a torch zip's ``data.pkl``, or the file itself."""
    if zipfile.is_zipfile(path):
        archive = zipfile.ZipFile(path)
        name = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if name is None:
            archive.close()
            raise ValueError("no data.pkl in the archive")
        return archive.open(name)
    return open(path, "rb")


def _pickled_globals(stream: Any) -> Iterator[str]:
    """Every ``module.name`` a pickle would import, read from its opcodes (nothing is unpickled or run)."""
    memo: dict[int, str | None] = {}
    pushed: list[str | None] = []  # what the recent stack pushes were: their string, or None
    for opcode, arg, _ in pickletools.genops(stream):
        name = opcode.name
        if name in ("GLOBAL", "INST"):
            yield str(arg).replace(" ", ".")
        elif name == "STACK_GLOBAL" and len(pushed) >= 2 and None not in pushed[-2:]:
            yield f"{pushed[-2]}.{pushed[-1]}"
        if name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = pushed[-1] if pushed else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(int(arg)))
        elif name in ("FRAME", "PROTO"):
            continue
        else:
            pushed.append(arg if isinstance(arg, str) and "UNICODE" in name else None)
        del pushed[:-2]


def is_ultralytics_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a pickle that imports Ultralytics classes; judged from its opcodes, so it runs nothing."""
    path = Path(path)
    try:
        with _pickle_stream(path) as stream:
            return any(name.split(".")[0] == "ultralytics" for name in _pickled_globals(stream))
    except Exception:  # not a readable pickle: the ordinary loader says what is wrong with it
        return False


def ultralytics_problem() -> str | None:
    """Why ``ultralytics`` cannot be imported here (missing, or broken beside this torch), or None."""
    if importlib.util.find_spec("ultralytics") is None:
        return "the ultralytics package is not installed"
    try:
        importlib.import_module("ultralytics.nn.tasks")
    except Exception as exc:  # a torchvision built for another torch raises several types
        return f"importing ultralytics failed ({describe(exc)})"
    return None


# ---------------------------------------------------------------------------------------------- the wrapper

# Ultralytics blocks whose Python reshapes their channels into attention heads by literal counts
# (``view(B, num_heads, key_dim * 2 + head_dim, N)``): the pruner keeps their channels (a YOLO11 C2PSA's
# attention); nothing inside them could be cut anyway, as every conv there reads or writes those channels.
_HEAD_SPLITTING_BLOCKS = frozenset({"Attention", "AAttn"})


def _keeps_head_channels(ctx: AnalysisContext, node: Any) -> Any:
    """Channel rule of a head-splitting block (an fx leaf): the channels it reads and writes are kept."""
    reason = f"{node.target!r} ({type(ctx.module(node)).__name__}) splits its channels into attention heads"
    for arg in ctx.channel_inputs(node):
        ctx.block(ctx.channels(arg), reason)
    shape = ctx.shape(node)
    return ctx.new_atoms(shape[1], blocked=reason) if shape is not None and len(shape) >= 2 else None


def _register_head_splitting_blocks(model: nn.Module) -> None:
    for cls in {type(module) for module in model.modules()}:
        if cls.__name__ in _HEAD_SPLITTING_BLOCKS and cls.__module__.startswith("ultralytics.") and cls not in MODULE_RULES:
            register_module_rule(cls)(_keeps_head_channels)



def _last_conv(branch: nn.Module, prefix: str) -> str:
    convs = [name for name, module in branch.named_modules() if isinstance(module, nn.Conv2d)]
    return f"{prefix}.{convs[-1]}"


class UltralyticsDetector(nn.Module):
    """An Ultralytics ``DetectionModel`` (kept whole as ``self.model``) with the anchor-free detector contract.

    ``forward(x)`` returns ``[B, 4 * reg_max + num_classes, H/s, W/s]`` per stride ``s``: what the
    ``Detect`` head returns in training mode, with every layer in the wrapper's own mode (in eval mode
    the BatchNorms use their running statistics). ``checkpoint`` holds the checkpoint's other entries
    (``train_args``, ``date``, ``version``...) for :func:`save_ultralytics_checkpoint`.
    """

    def __init__(self, model: nn.Module, checkpoint: dict | None = None):
        super().__init__()
        head = model.model[-1]
        if type(model).__name__ != _SUPPORTED_MODEL or type(head).__name__ != _SUPPORTED_HEAD:
            raise EdgeCompressError(
                f"the Ultralytics model is a {type(model).__name__} with a {type(head).__name__} head; edgecompress takes "
                f"{_SUPPORTED_MODEL}s with a plain {_SUPPORTED_HEAD} head; pass a YOLOv8 or YOLO11 detection checkpoint"
            )
        if getattr(head, "end2end", False) or hasattr(head, "one2one_cv2"):
            raise EdgeCompressError("the Ultralytics model has an end-to-end (NMS-free, one-to-one) head, which edgecompress does not prune yet; "
                                    "pass a YOLOv8 or YOLO11 detection checkpoint")
        _register_head_splitting_blocks(model)
        self.model = model
        self.num_classes = int(head.nc)
        self.reg_max = int(head.reg_max)
        self.strides = tuple(int(s) for s in head.stride.tolist())
        self.class_names = tuple(str(n) for n in (model.names.values() if isinstance(getattr(model, "names", None), dict) else getattr(model, "names", ())))
        meta = {key: value for key, value in (checkpoint or {}).items() if key not in ("model", "ema", "optimizer")}
        self.checkpoint = meta
        imgsz = (meta.get("train_args") or {}).get("imgsz", 640)
        self.image_size = int(imgsz if isinstance(imgsz, int) else max(imgsz))
        # (module name, ratio) of blocks whose Python reads their hidden width `c` (C2f and C3k2 split cv1's output into two `c`s)
        self.width_ratios = {name: module.cv1.conv.out_channels // module.c for name, module in model.named_modules()
                             if _hidden_width_block(module) and module.cv1.conv.out_channels % module.c == 0}

    @property
    def head(self) -> nn.Module:
        return self.model.model[-1]

    def prediction_layers(self) -> list[str]:
        """Qualified names of the convs that write the output maps (box branch, then class branch, per level)."""
        head_name = f"model.model.{len(self.model.model) - 1}"
        return [_last_conv(branch[k], f"{head_name}.{which}.{k}") for which, branch in (("cv2", self.head.cv2), ("cv3", self.head.cv3))
                for k in range(len(self.strides))]

    def forward(self, x: Tensor) -> list[Tensor]:
        _register_head_splitting_blocks(self.model)  # here too for a wrapper load_model rebuilt (it skips __init__); pure Python
        layers = self.model.model
        saved = self.model.save
        outputs: list[Any] = []
        for layer in layers[:-1]:
            if layer.f != -1:
                x = outputs[layer.f] if isinstance(layer.f, int) else [x if j == -1 else outputs[j] for j in layer.f]
            x = layer(x)
            outputs.append(x if layer.i in saved else None)
        head = layers[-1]
        features = [x if j == -1 else outputs[j] for j in head.f]
        return [torch.cat([box(feature), cls(feature)], 1) for feature, box, cls in zip(features, head.cv2, head.cv3)]


def _hidden_width_block(module: nn.Module) -> bool:
    return isinstance(getattr(module, "c", None), int) and isinstance(getattr(getattr(module, "cv1", None), "conv", None), nn.Conv2d)


# ---------------------------------------------------------------------------------------------- loading


def load_ultralytics_checkpoint(path: str | os.PathLike, *, trust: bool = False) -> UltralyticsDetector:
    """Load an Ultralytics detection checkpoint as a trainable fp32 :class:`UltralyticsDetector` (in eval mode).

    Unpickling runs Ultralytics code: without ``trust`` the file is refused with a one-line
    :class:`EdgeCompressError` naming ``--trust-model`` (and the extra when ``ultralytics`` is missing);
    with it, the checkpoint is read by artifacts' trusted loader. The model's classes are then
    registered (:func:`~edgecompress.artifacts.register_classes_of`), so the stage models a build saves
    of it load again in this process.
    """
    path = Path(path)
    problem = ultralytics_problem()
    where = " in an environment whose torchvision matches its torch" if problem and "not installed" not in problem else ""
    if not trust:
        try:
            read_plain(path, what="model file", fix=_FIX)  # refuses at the first Ultralytics class, running nothing
        except UnsafeFileError as error:
            install = f", and install the extra{where}: {EXTRA} ({problem})" if problem else ""
            raise EdgeCompressError(f"{error}, so it was not loaded (an Ultralytics checkpoint runs Ultralytics code when unpickled); "
                                    f"pass --trust-model (CLI) or trust=True (Python) only if you trust the file{install}") from None
        raise EdgeCompressError(f"cannot load model file {path}: it is not an Ultralytics checkpoint; {_FIX}")
    if problem:
        raise EdgeCompressError(f"cannot load model file {path}: it is an Ultralytics checkpoint, and {problem}; install the extra{where}: {EXTRA}")
    data = read_trusted(path, _FIX)
    if isinstance(data, dict):
        model = data.get("ema") or data.get("model")
    else:
        model, data = data, {}
    if not isinstance(model, nn.Module):
        raise EdgeCompressError(f"cannot load model file {path}: it holds no Ultralytics model under 'model' or 'ema'; {_FIX}")
    if not type(model).__module__.startswith("ultralytics.nn.tasks"):
        raise EdgeCompressError(f"cannot load model file {path}: its model is a {type(model).__module__}.{type(model).__name__}, "
                                f"not an ultralytics.nn.tasks model; {_FIX}")
    fixed = set(map(id, model.model[-1].dfl.parameters())) if isinstance(getattr(model.model[-1], "dfl", None), nn.Module) else set()
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) not in fixed)  # saved with gradients off; the build trains all but the DFL's bins
    detector = UltralyticsDetector(model.float(), data).eval()
    register_classes_of(detector)  # the user trusted this code: reloading its modules is no new trust
    return detector


# ---------------------------------------------------------------------------------------------- writing back


def sync_ultralytics_attributes(detector: UltralyticsDetector) -> dict[str, dict[str, Any]]:
    """Bring the attributes Ultralytics' Python reads in line with the (pruned) layers; returns what changed, by module.

    Updated: the hidden width ``c`` of blocks that split ``cv1``'s output by it (C2f, C3k2, C2PSA and
    others whose ``cv1`` writes a multiple of ``c``: ``c = cv1 out_channels / ratio``, the ratio read when
    the checkpoint was loaded), and each layer's parameter count ``np`` (Ultralytics' model summary).
    Kept: everything pruning cannot change, because the graph analysis keeps the channels behind
    them: the head's ``nc``, ``reg_max``, ``no``, ``nl`` and ``stride`` (its final convs are
    outputs), Attention's ``num_heads``, ``key_dim`` and ``head_dim`` (read by reshapes with literal
    channel counts), ``f``, ``i``, ``names``, ``args``; and ``yaml``, the unpruned
    architecture: ``YOLO(path).train()`` rebuilds the model from it, so fine-tune a pruned model with
    edgecompress, not with Ultralytics' trainer. Convs and BatchNorms carry their own channel
    attributes (``in_channels``, ``out_channels``, ``groups``, ``num_features``), set by the surgery.
    """
    changed: dict[str, dict[str, Any]] = {}
    modules = dict(detector.model.named_modules())
    for name, ratio in detector.width_ratios.items():
        module = modules[name]
        width = module.cv1.conv.out_channels // ratio
        if width != module.c:
            changed.setdefault(name, {})["c"] = (module.c, width)
            module.c = width
    for layer in detector.model.model:
        count = sum(p.numel() for p in layer.parameters())
        if getattr(layer, "np", count) != count:
            changed.setdefault(f"model.{layer.i}", {})["np"] = (layer.np, count)
            layer.np = count
    return changed


def save_ultralytics_checkpoint(detector: UltralyticsDetector, path: str | os.PathLike, *, half: bool = True) -> Path:
    """Write ``detector``'s model (pruned or not) as an Ultralytics checkpoint: ``ultralytics.YOLO(path)`` loads it.

    The layout is that of a checkpoint Ultralytics strips after training: the original entries
    (``train_args``, ``date``, ``version``...), ``'model'`` in fp16 (``half=False`` keeps fp32),
    ``'ema'``, ``'optimizer'`` and ``'updates'`` None and ``'epoch'`` -1 (not resumable: the pruned
    layers no longer fit the optimizer state). Attributes are first brought in line with the layers by
    :func:`sync_ultralytics_attributes`; the pruned modules themselves are written as they are.
    """
    if not isinstance(detector, UltralyticsDetector):
        raise EdgeCompressError(f"save_ultralytics_checkpoint takes an UltralyticsDetector, got {type(detector).__name__}")
    sync_ultralytics_attributes(detector)
    model = copy.deepcopy(detector.model).eval()
    model = model.half() if half else model.float()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    checkpoint = dict(detector.checkpoint)
    checkpoint.update(model=model, ema=None, optimizer=None, updates=None, epoch=-1)
    checkpoint.setdefault("train_args", {})
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return Path(path)


__all__ = ["EXTRA", "UltralyticsDetector", "is_ultralytics_checkpoint", "load_ultralytics_checkpoint", "save_ultralytics_checkpoint",
           "sync_ultralytics_attributes", "ultralytics_problem"]
