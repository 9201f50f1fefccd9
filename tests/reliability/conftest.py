"""Builds run as a user runs them: the CLI in a subprocess (refusals before any work: in this process), on a tiny
classifier and an ImageFolder of real digits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

TINY_MODEL = (
    "import torch.nn as nn\n"
    "def tiny(num_classes=10):\n"
    "    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),\n"
    "                         nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),\n"
    "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))\n"
)
ENV = {**os.environ, "EDGECOMPRESS_QUIET": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory) -> Path:
    """A model file and an ImageFolder (sklearn's real 8x8 digits, upscaled to 16 px) in a temporary folder."""
    return write_tiny_project(tmp_path_factory.mktemp("tiny"))


def write_tiny_project(root: Path) -> Path:
    """Write the tiny classifier's file and its ImageFolder into ``root``; returns ``root``."""
    from sklearn.datasets import load_digits

    (root / "tiny.py").write_text(TINY_MODEL)
    digits = load_digits()
    for split, indices in {"train": range(0, 120), "val": range(1500, 1540)}.items():
        for i in indices:
            folder = root / "data" / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[i] * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels).resize((16, 16), Image.BILINEAR).convert("RGB").save(folder / f"{i}.png")
    return root


def build_args(project: Path, runs: Path, *extra: str) -> list[str]:
    """``edgecompress build`` for the tiny classifier on the CPU target, a few seconds per stage."""
    return ["build", "--target", "cpu", "--task", "classify", "--model", f"{project / 'tiny.py'}:tiny", "--data", str(project / "data"),
            "--calib", str(project / "data" / "train"), "--image-size", "16", "--batch-size", "16", "--epochs", "2", "--sparse-epochs", "1",
            "--finetune-epochs", "1", "--qat-epochs", "1", "--calib-images", "32", "--profile-runs", "5", "--profile-rounds", "1",
            "--runs-dir", str(runs), *extra]


def edgecompress(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh process, as a user does."""
    return subprocess.run([sys.executable, "-m", "edgecompress.cli", *args], capture_output=True, text=True, env=ENV, timeout=600, **kwargs)


def refusal(*args: str) -> SimpleNamespace:
    """Run the CLI in this process (typer's runner: same code, exit status and stderr), for inputs refused
    before any work: a fresh process costs seconds of imports per case. Builds that train, are killed or
    race each other run in a subprocess."""
    from typer.testing import CliRunner

    from edgecompress import cli

    result = CliRunner().invoke(cli.app, list(args))
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgecompress.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def one_line_error(result) -> str:
    """The error a failed command printed: exactly one line, no traceback."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(errors) == 1, result.stderr
    return errors[0]
