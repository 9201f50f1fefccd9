"""Safe artifact writing: every file lands under a temporary name, then is renamed into place."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from .errors import EdgeCompressError, describe


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.stat().st_mode & 0o777 == 0o600:  # mkstemp's private mode; artifacts are ordinary files
            tmp.chmod(0o644)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def save_model(model: nn.Module, path: str | os.PathLike) -> Path:
    """Save a whole module (architecture and weights), so a pruned model reloads without re-pruning."""
    with atomic_path(path) as tmp:
        torch.save(model, tmp)
    return Path(path)


def load_model(path: str | os.PathLike) -> nn.Module:
    """Load a module written by :func:`save_model` (or ``torch.save(model)``) in a fresh process."""
    path = Path(path)
    if not path.is_file():
        raise EdgeCompressError(f"model file not found: {path}; pass the path of a file written by torch.save(model)")
    try:
        model = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise EdgeCompressError(
            f"cannot load model from {path} ({describe(exc)}); "
            "pass a file written by torch.save(model) or edgecompress.save_model"
        ) from None
    if not isinstance(model, nn.Module):
        raise EdgeCompressError(
            f"{path} holds a {type(model).__name__}, not an nn.Module; for a state dict pass --model NAME --weights {path}"
        )
    return model
