"""Artifacts: durable atomic writes, and model files that load without running code from them.

Writes: a file lands under a temporary name, is flushed to disk (fsync) and renamed into place, and
the folder is fsynced; :func:`atomic_dir` and :func:`replace_dir` replace a whole folder that way.

Models: :func:`save_model` writes plain data, which ``torch.load(weights_only=True)`` reads: the
module tree (each module's class name, plain attributes, parameters and buffers), for a
``torch.fx.GraphModule`` its graph as a list of nodes, and the state dict. :func:`load_model`
rebuilds the model without running code from the file: a class comes only from torch.nn,
edgecompress or the classes the caller vouches for (:func:`register_model_class`, ``classes=``,
and those of models this process saved or built from a ``--model`` spec); a module is made without
calling its constructor, then given its attributes and tensors; a graph may call only allow-listed
torch, operator and math functions and public tensor methods, and torch.fx writes its code again
from the nodes (a pickled GraphModule instead carries Python source that unpickling executes). A
file that needs anything else (a whole pickled module, an Ultralytics checkpoint) loads only with
``trust=True``, which unpickles it as ``torch.load(weights_only=False)`` does.
"""

from __future__ import annotations

import builtins
import enum
import functools
import glob
import inspect
import json
import keyword
import math
import operator
import os
import pickle
import pickletools
import re
import shutil
import tempfile
import warnings
import zipfile
from collections import OrderedDict
from contextlib import contextmanager
from importlib import import_module
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.graph_module import _USER_PRESERVED_ATTRIBUTES_KEY

from .errors import EdgeCompressError

# ---------------------------------------------------------------------------------------------- durable writes


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Persist a folder's entries (renames into it); some systems cannot open folders (Windows), and need not."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; only if the block succeeds, flush it to disk and rename it onto ``path``.

    A crash at any point leaves ``path`` either as it was or complete, never half-written.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.stat().st_mode & 0o777 == 0o600:  # mkstemp's private mode; artifacts are ordinary files
            tmp.chmod(0o644)
        _fsync_file(tmp)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically and durably."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically and durably."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_marker(path: str | os.PathLike, text: str) -> Path:
    """Write a small text marker (a fingerprint) atomically and durably: a reader sees the old text or the new, whole."""
    return write_text(path, text)


def read_marker(path: str | os.PathLike) -> str | None:
    """A marker's text, or None when it is missing or unreadable (a reader then treats it as absent)."""
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _aside(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _settle_aside(path: Path) -> None:
    aside = _aside(path)
    if aside.exists() or aside.is_symlink():
        if path.exists() or path.is_symlink():
            _remove(aside)
        else:
            os.rename(aside, path)
            _fsync_dir(path.parent)


def recover_dir(path: str | os.PathLike) -> None:
    """Finish what a crash interrupted in :func:`replace_dir` / :func:`atomic_dir` on ``path``.

    A crash after the old folder was moved aside (``.NAME.old``) but before the new one was renamed in
    leaves ``path`` missing: the old folder is put back. A crash after the rename leaves both: the old
    one is deleted. Temporary folders of an interrupted :func:`atomic_dir` (``.NAME.new-*``) are deleted.
    One writer per ``path`` at a time.
    """
    path = Path(path)
    _settle_aside(path)
    for stale in glob.glob(os.path.join(glob.escape(str(path.parent)), glob.escape(f".{path.name}.new-") + "*")):
        _remove(Path(stale))


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            if not os.path.islink(os.path.join(folder, name)):
                _fsync_file(Path(folder, name))
        _fsync_dir(Path(folder))


def replace_dir(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Put folder ``source`` in place of ``path`` as a whole; ``source`` must be on the same file system.

    Steps: settle an interrupted earlier move (as :func:`recover_dir` does), fsync ``source``'s files, move the
    old ``path`` aside to ``.NAME.old``, rename ``source`` to ``path``, fsync the folders, delete the old.
    Readers see the old folder or the new one whole; after a crash the next call (or :func:`recover_dir`)
    restores the old folder if the new one never arrived.
    """
    source, final = Path(source), Path(path)
    _settle_aside(final)
    _fsync_tree(source)
    aside = _aside(final)
    moved_aside = final.exists() or final.is_symlink()
    if moved_aside:
        os.rename(final, aside)
    os.rename(source, final)
    _fsync_dir(final.parent)
    if source.parent != final.parent:
        _fsync_dir(source.parent)
    if moved_aside:
        _remove(aside)
    return final


@contextmanager
def writers_queued(path: str | os.PathLike) -> Iterator[None]:
    """Hold the lock of ``path``'s writers (the sibling file ``.NAME.lock``) for the block, waiting while another process holds it.

    For a folder several processes may make at once (builds sharing a runs dir make one bundled data set): inside the block
    a writer sees the folder as the previous writer left it, so it can reuse a finished one instead of replacing it while
    the other process reads it, and :func:`recover_dir` deletes only the leftovers of writers that died.
    """
    import fcntl

    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, also when the process dies
        yield


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; only if the block succeeds, it replaces ``path`` as a whole.

    On failure ``path`` is untouched and the temporary folder deleted; see :func:`replace_dir` for a crash.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.new-", dir=final.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp's private mode; artifacts are ordinary folders
        replace_dir(tmp, final)
    finally:
        if tmp.exists():
            _remove(tmp)


# ---------------------------------------------------------------------------------------------- reading torch files safely


class UnsafeFileError(EdgeCompressError):
    """A file only full unpickling can read: loading it would import and call ``needs`` (and whatever follows)."""

    def __init__(self, message: str, needs: str):
        super().__init__(message)
        self.needs = needs


def _problem(path: Path) -> str | None:
    """Why ``path`` cannot be a torch file, judged from its bytes alone (nothing is unpickled), or None."""
    with open(path, "rb") as file:
        head = file.read(64)
    if not head:
        return "it is empty (an interrupted write?)"
    if head.startswith(b"PK\x03\x04"):
        return None if zipfile.is_zipfile(path) else "it is truncated (its zip archive has no end)"
    if head.startswith(b"\x80"):  # a pickle: torch's legacy format, or a raw pickle
        return None
    return f"it is not a PyTorch file (it starts with {head[:16]!r})"


def _short(exc: BaseException) -> str:
    """The gist of a torch loading error: its first sentence, or the weights-only unpickler's own reason."""
    text = str(exc)
    reason = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    first = (reason.group(1) if reason else text).strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first.split('. ')[0]}".rstrip(": ")


def _needed_global(exc: BaseException, path: Path) -> str | None:
    """The Python object a pickle wanted imported: named by torch's refusal, else found by reading the opcodes."""
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    if found:
        return found.group(1) if "." in found.group(1) else f"builtins.{found.group(1)}"  # torch names builtins bare
    try:
        strings: list[str] = []
        with open(path, "rb") as file:
            for opcode, arg, _ in pickletools.genops(file):  # reads opcodes, runs nothing
                if opcode.name in ("GLOBAL", "INST"):
                    return str(arg).replace(" ", ".").replace("__builtin__.", "builtins.")
                if opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    return f"{strings[-2]}.{strings[-1]}".replace("__builtin__.", "builtins.")
                if isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # not a readable pickle: it is corrupt, and that is what the caller reports
        return None
    return None


def _check_readable(path: Path, what: str, fix: str) -> None:
    """A one-line error for a missing, empty or truncated file, before torch reads it."""
    if not path.is_file():
        raise EdgeCompressError(f"{what} not found: {path}; {fix}")
    problem = _problem(path)
    if problem:
        raise EdgeCompressError(f"cannot load {what} {path}: {problem}; {fix}")


def read_plain(path: str | os.PathLike, *, what: str = "file", fix: str = "pass a file written by torch.save") -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain data only, never code from the file.

    A missing, empty, truncated, foreign or corrupt file raises a one-line :class:`EdgeCompressError`
    ``"cannot load {what} {path}: {problem}; {fix}"``; a pickle that needs Python objects beyond plain data raises
    :class:`UnsafeFileError`, whose ``needs`` names the first one (the caller says what to do).
    """
    path = Path(path)
    _check_readable(path, what, fix)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        needs = _needed_global(exc, path)
        if needs:
            raise UnsafeFileError(f"cannot load {what} {path}: it is a Python pickle that would import and run {needs}", needs) from None
        raise EdgeCompressError(f"cannot load {what} {path}: it is corrupt ({_short(exc)}); {fix}") from None
    except Exception as exc:  # torch raises many types for corrupt files
        raise EdgeCompressError(f"cannot load {what} {path}: it is corrupt ({_short(exc)}); {fix}") from None


def read_trusted(path: Path, fix: str) -> Any:
    """``torch.load(weights_only=False)``: may run code from the file; only for files the user trusts (``--trust-model``)."""
    _check_readable(path, "model file", fix)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise EdgeCompressError(f"cannot load model file {path}: it is corrupt ({_short(exc)}); {fix}") from None


# ---------------------------------------------------------------------------------------------- what a model file may name

FORMAT = "edgecompress-model/1"
MODEL_CLASSES: dict[str, type] = {}
"""Classes :func:`load_model` rebuilds without ``trust=True`` beyond torch.nn's and edgecompress's, by ``module:qualname``."""

SAFE_FUNCTIONS: dict[str, Callable] = {}
"""Functions a saved graph may call beyond the built-in allow-list; fill it with :func:`register_safe_function`."""

_OPERATORS = ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs", "matmul", "getitem", "eq", "ne",
              "lt", "le", "gt", "ge", "and_", "or_", "xor", "invert", "not_", "lshift", "rshift", "iadd", "isub", "imul",
              "itruediv", "ifloordiv", "imod", "ipow", "imatmul", "iand", "ior", "ixor", "contains", "is_", "is_not", "index")
_BUILTINS = ("getattr", "len", "min", "max", "abs", "int", "float", "bool", "round", "isinstance")
# Never callable from a saved graph: raw memory and storage, uninitialised memory, unchecked sparse indices, files, hooks.
_DENIED = re.compile(r"^(from_file|from_numpy|frombuffer|set_|storage|untyped_storage|data_ptr|as_strided.*|resize_.*|"
                     r"empty.*|new_empty.*|sparse_.*|share_memory_|pin_memory|record_stream|register_.*hook|backward|"
                     r"apply_|map2?_|numpy|cudnn_.*|miopen_.*|mkldnn_.*|fbgemm_.*)$")


def register_model_class(cls: type) -> type:
    """Let :func:`load_model` rebuild modules of ``cls`` (an nn.Module or Enum class whose code you trust) without ``trust=True``.

    Usable as a class decorator. :func:`save_model` registers the classes of every model it saves, and
    :func:`edgecompress.models.resolve_model` those of a model built from ``file.py:callable``.
    """
    if not (isinstance(cls, type) and issubclass(cls, (nn.Module, enum.Enum))) or issubclass(cls, (fx.GraphModule, torch.jit.ScriptModule)):
        raise EdgeCompressError(f"register_model_class takes an nn.Module or Enum class (not a GraphModule), got {cls!r}")
    MODEL_CLASSES[_class_key(cls)] = cls
    return cls


def register_classes_of(model: nn.Module) -> None:
    """:func:`register_model_class` every class in ``model`` beyond torch.nn's and edgecompress's (GraphModules have none to register)."""
    for module in model.modules():
        cls = type(module)
        if not _is_builtin_class(cls.__module__) and not issubclass(cls, (fx.GraphModule, torch.jit.ScriptModule)):
            MODEL_CLASSES[_class_key(cls)] = cls


def register_safe_function(function: Callable) -> Callable:
    """Let saved graphs call ``function`` (e.g. one wrapped with ``torch.fx.wrap``); only for pure tensor functions."""
    SAFE_FUNCTIONS[f"{function.__module__}.{function.__qualname__}"] = function
    _function_table.cache_clear()
    return function


@functools.cache
def _function_table() -> tuple[dict[str, Callable], dict[int, str]]:
    """Allow-listed functions by name, and each one's name by id (the first name an object is found under)."""
    table: dict[str, Callable] = {f"operator.{name}": getattr(operator, name) for name in _OPERATORS}
    table.update({f"builtins.{name}": getattr(builtins, name) for name in _BUILTINS})
    table.update({f"math.{name}": fn for name, fn in vars(math).items() if callable(fn) and not name.startswith("_")})
    public = [name for name in dir(torch._C._VariableFunctions) if not name.startswith("_")] + list(torch.functional.__all__)
    table.update({f"torch.{name}": getattr(torch, name) for name in public if not _DENIED.match(name) and hasattr(torch, name)})
    table["torch._assert"] = torch._assert
    table.update({f"torch.nn.functional.{name}": fn for name, fn in vars(F).items()
                  if not name.startswith("_") and inspect.isfunction(fn) and fn.__module__ == "torch.nn.functional" or
                  not name.startswith("_") and inspect.isbuiltin(fn) and not _DENIED.match(name)})
    table.update(SAFE_FUNCTIONS)
    names: dict[int, str] = {}
    for name, fn in table.items():
        names.setdefault(id(fn), name)
    return table, names


@functools.cache
def _tensor_methods() -> frozenset[str]:
    return frozenset(name for name in dir(torch.Tensor) if not name.startswith("_") and not _DENIED.match(name))


def _class_key(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _is_builtin_class(module_name: str) -> bool:
    """torch.nn's layers and edgecompress's own classes: code this package runs anyway."""
    return module_name.startswith("torch.nn.modules.") or module_name == "edgecompress" or module_name.startswith("edgecompress.")


def _resolve_class(key: Any, classes: dict[str, type], trust: bool, path: Path) -> type:
    """The class a file names, from the allow-list (or any importable class when ``trust``); never a GraphModule or ScriptModule."""
    if not isinstance(key, str) or key.count(":") != 1:
        raise _bad(path, f"a class name {key!r} is malformed")
    found = classes.get(key) or MODEL_CLASSES.get(key)
    module_name, qualname = key.split(":")
    if found is None and (trust or _is_builtin_class(module_name)) and "<" not in qualname:
        try:
            found = import_module(module_name)  # torch.nn's or edgecompress's own modules, or any with trust
            for part in qualname.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError):
            found = None
        if found is not None and (not isinstance(found, type) or _class_key(found) != key):
            raise _bad(path, f"{key} is not a class defined under that name")  # no reaching other classes through aliases
    if found is None:
        fix = "it cannot be imported by that name" if trust else "it is not torch.nn's, edgecompress's or one this process trusts"
        raise EdgeCompressError(
            f"cannot load model file {path}: it names class {key.replace(':', '.')}, but {fix}; import it and pass classes=[...] "
            "(or register_model_class it; for the CLI: --model path/to/file.py:callable)"
            + ("" if trust else ", or pass --trust-model / trust=True if you trust the file")
        )
    if not (isinstance(found, type) and issubclass(found, (nn.Module, enum.Enum))) or issubclass(found, (fx.GraphModule, torch.jit.ScriptModule)):
        raise _bad(path, f"{key} is not an nn.Module or Enum class")
    return found


def _bad(path: Path, detail: str) -> EdgeCompressError:
    return EdgeCompressError(f"cannot load model file {path}: it is corrupt or forged ({detail}); write it again with edgecompress.save_model")


# ---------------------------------------------------------------------------------------------- the model format: encoding

_MODULE_INTERNALS = frozenset(vars(nn.Module()))
_GRAPH_MODULE_INTERNALS = frozenset(vars(fx.GraphModule(nn.Module(), fx.Graph())))
_HOOKS = tuple(name for name in _MODULE_INTERNALS if "hooks" in name)
_RAW = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.layout)
_PUBLIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _identifier(name: str) -> bool:
    """A name fx may write into code as is: a plain identifier, not a keyword, not dunder, not ``self`` (the module)."""
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) is not None and not keyword.iskeyword(name) and not name.startswith("__") and name != "self"


def _segment(name: str) -> bool:
    """One step of a module path: an identifier or a container index (``stem.0``)."""
    return name.isdigit() and name.isascii() or _identifier(name)


def _node_problem(op: Any, target: Any, args: Any, kwargs: Any) -> str | None:
    """Why safe loading refuses a graph node (a call_function's ``target`` is the function), or None: the one rule for saving and loading."""
    if op == "call_function":
        if id(target) not in _function_table()[1]:
            return f"calls {getattr(target, '__qualname__', target)}, which is not an allow-listed function"
        if target is getattr and not (len(args) == 2 and isinstance(args[1], str) and _PUBLIC_NAME.match(args[1])):
            return "reads a private or computed attribute"
    elif op == "call_method":
        if not (isinstance(target, str) and target in _tensor_methods()):
            return f"calls method {target!r}, which is not a public tensor method"
    elif op in ("get_attr", "call_module"):
        if not (isinstance(target, str) and all(_segment(part) for part in target.split("."))):
            return f"names attribute {target!r}"
    elif op == "placeholder":
        if not (isinstance(target, str) and _identifier(target.lstrip("*")) and len(target) - len(target.lstrip("*")) <= 2):
            return f"has an input named {target!r}"
    elif op != "output" or target != "output":
        return f"has an operation {op!r}"
    if not isinstance(args, tuple) or not isinstance(kwargs, dict) or not all(isinstance(k, str) and _identifier(k) for k in kwargs):
        return "has malformed arguments"
    return None


class _NotPlain(Exception):
    """Something the safe format cannot hold; :func:`save_model` then writes a whole pickle (trusted loading only)."""


class _Encoder:
    """Turns a module tree into plain data: a table of module records that point at each other by index."""

    def __init__(self) -> None:
        self.records: list[dict | None] = []
        self.index: dict[int, int] = {}
        self.classes: set[type] = set()

    def module(self, module: nn.Module, where: str) -> int:
        if id(module) in self.index:
            return self.index[id(module)]
        self.index[id(module)] = len(self.records)
        self.records.append(None)
        self.records[self.index[id(module)]] = self._record(module, where)
        return self.index[id(module)]

    def _record(self, module: nn.Module, where: str) -> dict:
        cls = type(module)
        is_graph = isinstance(module, fx.GraphModule)
        if is_graph and cls is not fx.GraphModule and cls.__bases__ != (fx.GraphModule,):
            raise _NotPlain(f"{where} is a {cls.__name__}, a GraphModule subclass")
        if not is_graph:
            self._class(cls, where)
        if any(getattr(module, name) for name in _HOOKS):
            raise _NotPlain(f"{where} has hooks")
        for name, value in [*module._parameters.items(), *module._buffers.items()]:
            if value is not None and type(value) not in (nn.Parameter, torch.Tensor):
                raise _NotPlain(f"{where}.{name} is a {type(value).__name__}")
        children = {name: None if child is None else self.module(child, f"{where}.{name}") for name, child in module._modules.items()}
        internals = _GRAPH_MODULE_INTERNALS if is_graph else _MODULE_INTERNALS
        state = vars(module) if is_graph else module.__getstate__()  # a class may leave out derived fields (an RNN's weak references)
        if not isinstance(state, dict):
            raise _NotPlain(f"{where}'s __getstate__ returns a {type(state).__name__}")
        record = {
            "class": None if is_graph else _class_key(cls),
            "training": module.training,
            "state": {name: self.value(value, f"{where}.{name}") for name, value in state.items() if name not in internals},
            "parameters": dict(module._parameters),
            "buffers": dict(module._buffers),
            "non_persistent": sorted(module._non_persistent_buffers_set),
            "children": children,
        }
        if is_graph:
            record["graph"] = self.graph(module.graph, where)
            record["preserved"] = self.value(module.meta.get(_USER_PRESERVED_ATTRIBUTES_KEY, {}), f"{where}.meta")
        return record

    def _class(self, cls: type, where: str) -> str:
        if not _is_builtin_class(cls.__module__):
            self.classes.add(cls)
        return _class_key(cls)

    def value(self, value: Any, where: str, nodes: dict[fx.Node, int] | None = None) -> Any:
        """A plain-data copy of ``value``: raw scalars, strings and tensors, and tagged tuples for everything else."""
        kind = type(value)
        if isinstance(value, enum.Enum):
            return ("enum", self._class(kind, where), self.value(value.value, where))
        if kind in _RAW or kind in (torch.Tensor, nn.Parameter):
            return value
        if kind.__module__ == "numpy" and getattr(value, "ndim", None) == 0:
            return self.value(value.item(), where)  # a numpy scalar: its Python number
        if isinstance(value, (int, float, complex, str, bytes)):
            return kind.__mro__[-2](value)  # a subclass of a plain type: its plain value
        if nodes is not None and kind is fx.Node:
            return ("node", nodes[value])
        if kind is torch.memory_format:
            return ("memory_format", str(value).removeprefix("torch."))
        if kind is torch.Size:
            return ("size", list(value))
        if kind in (list, fx.immutable_collections.immutable_list, tuple, set, frozenset):
            return (kind.__name__ if kind is not fx.immutable_collections.immutable_list else "list", [self.value(v, where, nodes) for v in value])
        if kind in (dict, OrderedDict, fx.immutable_collections.immutable_dict):
            return ("dict", [(self.value(k, where, nodes), self.value(v, where, nodes)) for k, v in value.items()])
        if kind is slice:
            return ("slice", [self.value(v, where, nodes) for v in (value.start, value.stop, value.step)])
        if value is Ellipsis:
            return ("ellipsis",)
        if isinstance(value, nn.Module):
            return ("module", self.module(value, where))
        if isinstance(value, type) and issubclass(value, nn.Module):
            return ("class", self._class(value, where))
        if callable(value) and id(value) in _function_table()[1]:
            return ("function", _function_table()[1][id(value)])
        raise _NotPlain(f"{where} is a {kind.__qualname__}")

    def graph(self, graph: fx.Graph, where: str) -> list:
        if type(graph._codegen) is not fx.graph.CodeGen:
            raise _NotPlain(f"{where}'s graph has its own code generator ({type(graph._codegen).__name__})")
        nodes: dict[fx.Node, int] = {}
        encoded = []
        for node in graph.nodes:
            problem = _node_problem(node.op, node.target, tuple(node.args), dict(node.kwargs))
            if problem:
                hint = " (edgecompress.artifacts.register_safe_function allows one)" if node.op == "call_function" else ""
                raise _NotPlain(f"{where}'s graph node {node.name} {problem}{hint}")
            target = _function_table()[1][id(node.target)] if node.op == "call_function" else node.target
            encoded.append((node.op, target, self.value(node.args, where, nodes), self.value(dict(node.kwargs), where, nodes)))
            nodes[node] = len(nodes)
        return encoded


# ---------------------------------------------------------------------------------------------- the model format: decoding


class _Decoder:
    """Rebuilds a module tree from its records; every value is checked, nothing from the file is called."""

    def __init__(self, data: dict, path: Path, classes: dict[str, type], trust: bool):
        self.path, self.classes, self.trust = path, classes, trust
        self.records = data.get("modules")
        if not isinstance(self.records, list) or not self.records or not all(isinstance(r, dict) for r in self.records):
            raise _bad(path, "no module records")
        self.modules = [self._shell(record) for record in self.records]

    def _shell(self, record: dict) -> nn.Module:
        """An empty module of the record's class; its constructor is not called."""
        if "graph" in record:
            return fx.GraphModule(nn.Module(), fx.Graph())
        cls = _resolve_class(record.get("class"), self.classes, self.trust, self.path)
        if not issubclass(cls, nn.Module):
            raise _bad(self.path, f"{record.get('class')} is not an nn.Module")
        module = object.__new__(cls)
        nn.Module.__init__(module)
        return module

    def build(self) -> nn.Module:
        for module, record in zip(self.modules, self.records):
            self._fill(module, record)
        self._check_acyclic()
        for module, record in zip(self.modules, self.records):
            if "graph" in record:
                graph = self._graph(record["graph"])
                try:
                    module.graph = graph  # fx writes the forward's code from the checked nodes
                    module.graph.lint()
                except Exception as exc:  # a forged graph fx cannot compile or whose targets are missing
                    raise _bad(self.path, f"its graph does not compile ({type(exc).__name__})") from None
        return self.modules[0]

    def _fill(self, module: nn.Module, record: dict) -> None:
        internals = _GRAPH_MODULE_INTERNALS if "graph" in record else _MODULE_INTERNALS
        attributes = {}
        for name, value in self._dict(record.get("state"), "state").items():
            value = self.value(value)
            # A plain value may shadow a method (Ultralytics layers keep their class path in `type`); nothing else may.
            shadows_method = callable(inspect.getattr_static(type(module), name, None)) and not isinstance(value, (str, int, float, bool))
            if name.startswith("__") or name in internals or shadows_method:
                raise _bad(self.path, f"attribute {name!r} may not be set")
            attributes[name] = value
        parameters = {self._name(name): param for name, param in self._dict(record.get("parameters"), "parameters").items()}
        buffers = {self._name(name): buffer for name, buffer in self._dict(record.get("buffers"), "buffers").items()}
        if any(p is not None and type(p) is not nn.Parameter for p in parameters.values()) or \
                any(b is not None and type(b) is not torch.Tensor for b in buffers.values()):
            raise _bad(self.path, "a parameter or buffer is not a plain tensor")
        non_persistent = record.get("non_persistent", [])
        if not isinstance(non_persistent, list) or not all(isinstance(n, str) for n in non_persistent) or not set(non_persistent) <= set(buffers):
            raise _bad(self.path, "non-persistent buffers are not buffers")
        children = {self._name(name): None if index is None else self._module(index)
                    for name, index in self._dict(record.get("children"), "children").items()}
        if set(attributes) & (set(parameters) | set(buffers) | set(children)):
            raise _bad(self.path, "an attribute hides a parameter, buffer or submodule")
        state = {**vars(module), **attributes, "_parameters": parameters, "_buffers": buffers, "_modules": children,
                 "_non_persistent_buffers_set": set(non_persistent), "training": bool(record.get("training", False))}
        try:
            module.__setstate__(state)  # nn.Module's sets the fields; a torch layer's own also restores derived ones (RNN weights)
        except Exception as exc:  # a forged state the class cannot take
            raise _bad(self.path, f"{type(module).__name__} rejects its state ({type(exc).__name__})") from None
        if "graph" in record:
            module.meta[_USER_PRESERVED_ATTRIBUTES_KEY] = self.value(record.get("preserved", ("dict", [])))

    def _dict(self, value: Any, what: str) -> dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _bad(self.path, f"{what} is not a dict of names")
        return value

    def _name(self, name: str) -> str:
        if not _segment(name):
            raise _bad(self.path, f"name {name!r} is not a plain identifier")
        return name

    def _module(self, index: Any) -> nn.Module:
        if type(index) is not int or not 0 <= index < len(self.modules):
            raise _bad(self.path, f"module index {index!r} out of range")
        return self.modules[index]

    def _check_acyclic(self) -> None:
        state: dict[int, int] = {}

        def visit(module: nn.Module) -> None:
            state[id(module)] = 1
            for child in module._modules.values():
                if child is not None and state.get(id(child)) == 1:
                    raise _bad(self.path, "a module contains itself")
                if child is not None and id(child) not in state:
                    visit(child)
            state[id(module)] = 2

        visit(self.modules[0])

    def value(self, value: Any, nodes: list[fx.Node] | None = None) -> Any:
        kind = type(value)
        if kind in _RAW or kind in (torch.Tensor, nn.Parameter):
            return value
        if kind is not tuple or not value or not isinstance(value[0], str):
            raise _bad(self.path, f"unexpected value of type {kind.__name__}")
        tag, *rest = value
        try:
            return self._tagged(tag, rest, nodes)
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise _bad(self.path, f"bad {tag} value ({type(exc).__name__})") from None

    def _tagged(self, tag: str, rest: list, nodes: list[fx.Node] | None) -> Any:
        items = (lambda: [self.value(v, nodes) for v in rest[0]])
        if tag in ("list", "tuple", "set", "frozenset"):
            return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[tag](items())
        if tag == "dict":
            return {self.value(k, nodes): self.value(v, nodes) for k, v in rest[0]}
        if tag == "size":
            return torch.Size([int(v) for v in rest[0]])
        if tag == "slice":
            return slice(*items())
        if tag == "ellipsis":
            return Ellipsis
        if tag == "memory_format":
            found = getattr(torch, rest[0])
            if type(found) is not torch.memory_format:
                raise ValueError(rest[0])
            return found
        if tag == "enum":
            cls = _resolve_class(rest[0], self.classes, self.trust, self.path)
            if not issubclass(cls, enum.Enum):
                raise TypeError(rest[0])
            return cls(self.value(rest[1]))
        if tag == "class":
            return _resolve_class(rest[0], self.classes, self.trust, self.path)
        if tag == "module":
            return self._module(rest[0])
        if tag == "function":
            return _function_table()[0][rest[0]]
        if tag == "node" and nodes is not None and type(rest[0]) is int and 0 <= rest[0] < len(nodes):
            return nodes[rest[0]]  # only nodes before this one: the graph stays in order
        raise ValueError(tag)

    def _graph(self, encoded: Any) -> fx.Graph:
        if not isinstance(encoded, list):
            raise _bad(self.path, "the graph is not a list of nodes")
        graph, nodes = fx.Graph(), []
        for item in encoded:
            if not (isinstance(item, tuple) and len(item) == 4):
                raise _bad(self.path, "a graph node is malformed")
            op, target, args, kwargs = item
            if op == "call_function":
                target = _function_table()[0].get(target, target) if isinstance(target, str) else None
            args, kwargs = self.value(args, nodes), self.value(kwargs, nodes)
            problem = _node_problem(op, target, args, kwargs)
            if problem:
                raise EdgeCompressError(f"cannot load model file {self.path}: its graph node {len(nodes)} {problem}; "
                                        "pass --trust-model / trust=True if you trust the file")
            nodes.append(graph.create_node(op, target, args, kwargs))  # fx names the node: no name comes from the file
        return graph


# ---------------------------------------------------------------------------------------------- saving and loading models


def _encode_model(model: nn.Module) -> tuple[dict, set[type]]:
    encoder = _Encoder()
    encoder.module(model, type(model).__name__)
    state = {key: value for key, value in model.state_dict().items() if type(value) is torch.Tensor}
    return {"format": FORMAT, "modules": encoder.records, "state_dict": state}, encoder.classes


def _save_whole_pickle(model: nn.Module, path: Path, reason: str) -> None:
    try:
        with atomic_path(path) as tmp:
            torch.save(model, tmp)
    except Exception as exc:  # pickle raises several types for lambdas, local classes, open files
        raise EdgeCompressError(f"cannot save {path}: {reason}, which edgecompress's safe model format cannot hold, "
                                f"and Python cannot pickle it either ({_short(exc)}); remove it from the model before saving") from None
    warnings.warn(f"{path}: {reason}, which edgecompress's safe model format cannot hold; saved as a whole pickle, "
                  "which loads only with trust=True (--trust-model)", stacklevel=3)


def save_model(model: nn.Module, path: str | os.PathLike) -> Path:
    """Save ``model`` whole (architecture and weights) as plain data that :func:`load_model` reads without running code.

    The file also holds ``state_dict``, so it serves as ``--weights`` for the same architecture. A model
    holding something the format cannot (a hook, a lambda, an unknown function in its graph) is saved as a
    whole pickle instead, with a warning: that file loads only with ``trust=True``.
    """
    try:
        data, classes = _encode_model(model)
    except _NotPlain as reason:
        _save_whole_pickle(model, Path(path), str(reason))
        return Path(path)
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    for cls in classes:  # this process runs their code already: let it load what it saved
        MODEL_CLASSES[_class_key(cls)] = cls
    return Path(path)


def _state_dict_like(data: Any) -> bool:
    if isinstance(data, dict) and isinstance(data.get("model", data.get("state_dict")), dict):
        data = data.get("model", data.get("state_dict"))
    return isinstance(data, dict) and bool(data) and all(isinstance(v, torch.Tensor) for v in data.values())


def load_model(path: str | os.PathLike, *, trust: bool = False, classes: Iterable[type] = ()) -> nn.Module:
    """Load a model written by :func:`save_model`, in any process, without running code from the file.

    ``classes`` are further module classes you vouch for (see :func:`register_model_class`). A file that
    needs more, such as a whole pickled module from ``torch.save(model)``, is refused with a one-line
    :class:`EdgeCompressError` unless ``trust=True``: then it is unpickled (which can run any code in it),
    and classes named in an edgecompress file are imported by name. Only trust files you made or checked.
    """
    path = Path(path)
    fix = "write it again, or pass a file written by edgecompress.save_model"
    known = {_class_key(cls): cls for cls in classes}
    if trust:
        data = read_trusted(path, fix)
    else:
        try:
            data = read_plain(path, what="model file", fix=fix)
        except UnsafeFileError as error:
            raise EdgeCompressError(f"{error}, so it was not loaded (files from edgecompress.save_model need no code); "
                                    "pass --trust-model (CLI) or trust=True (Python) only if you trust the file") from None
    if isinstance(data, nn.Module):
        return data
    if isinstance(data, dict) and data.get("format") == FORMAT:
        try:
            return _Decoder(data, path, known, trust).build()
        except RecursionError:
            raise _bad(path, "nested too deep") from None
    if isinstance(data, dict) and str(data.get("format", "")).startswith("edgecompress-model/"):
        raise EdgeCompressError(f"cannot load model file {path}: it is in {data['format']}, newer than this edgecompress reads ({FORMAT}); upgrade edgecompress")
    if _state_dict_like(data):
        raise EdgeCompressError(f"cannot load model file {path}: it holds a state dict (weights only), not a model; "
                                f"pass the architecture as --model NAME and this file as --weights {path}")
    kind = type(data).__name__
    raise EdgeCompressError(f"cannot load model file {path}: it holds {'an' if kind[0].lower() in 'aeiou' else 'a'} {kind}, not a model; {fix}")
