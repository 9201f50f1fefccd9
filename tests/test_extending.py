"""Extending edgecompress as docs/ARCHITECTURE.md shows: each extension is one module with one registration.

The toy modules live in ``tests/extensions/``; each test imports one, uses it through the public API
and the CLI as a user would, and the fixture takes the registration back afterwards.
"""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
from typer.testing import CliRunner

from edgecompress.prune import CRITERIA, plan_pruning, prune
from edgecompress.profile import RUNTIMES, compare_models
from edgecompress.targets import TARGETS
from edgecompress.tasks import TASKS

runner = CliRunner()


@pytest.fixture
def extension():
    """Import ``tests.extensions.<name>`` (which registers itself), then restore every registry."""
    saved = [(registry, dict(registry)) for registry in (CRITERIA, TARGETS, RUNTIMES, TASKS)]
    loaded = []

    def load(name: str):
        module = importlib.import_module(f"tests.extensions.{name}")
        loaded.append(module.__name__)
        return module

    yield load
    for registry, content in saved:
        registry.clear()
        registry.update(content)
    for name in loaded:
        sys.modules.pop(name, None)


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.Conv2d(16, 4, 1)).eval()


def test_a_criterion_is_one_module_and_one_registration(extension):
    extension("toy_criterion")
    model, x = _net(), torch.randn(1, 3, 8, 8)
    ours = plan_pruning(model, x, ratio=0.25, criterion="largest-l1-first").groups[0].removed
    l1 = plan_pruning(model, x, ratio=0.25, criterion="l1").groups[0].removed
    norms = model[0].weight.detach().abs().flatten(1).sum(1)
    assert set(ours) == set(norms.argsort(descending=True)[:4].tolist()) and set(ours).isdisjoint(l1)
    assert prune(model, x, ratio=0.25, criterion="largest-l1-first")[0].out_channels == 12
    assert "largest-l1-first" in runner.invoke(_app(), ["build", "--help"], terminal_width=200).output


def test_a_target_is_one_module_and_one_registration(extension, tmp_path):
    extension("toy_target")
    from edgecompress.engine import build_engine
    from edgecompress.export import export_onnx
    from edgecompress.settings import BuildConfig
    from edgecompress.targets import get_target

    target = get_target("toy")  # aliases work for registered boards too
    assert target.name == "jetson-toy" and target.export_opset == 17 and target.deployment(True) == ("int8", "int8")
    BuildConfig(target="jetson-toy").check()
    assert "jetson-toy" in runner.invoke(_app(), ["targets"], terminal_width=200).output
    onnx_path = export_onnx(_net(), torch.randn(1, 3, 8, 8), tmp_path / "model.onnx")
    result = build_engine(target, onnx_path, tmp_path / "engine", precision="fp16")
    assert result.kind == "bundle" and "--fp16" in result.command and (tmp_path / "engine" / "build_engine.sh").is_file()
    assert "--useDLACore=0" in build_engine(target, onnx_path, tmp_path / "dla", precision="fp16", dla_core=0).command


def test_a_profiling_runtime_is_one_module_and_one_registration(extension, tmp_path):
    extension("toy_runtime")
    from edgecompress.export import export_onnx
    from edgecompress.settings import BuildConfig

    onnx_path = export_onnx(_net(), torch.randn(1, 3, 8, 8), tmp_path / "model.onnx")
    stats = compare_models({"net": onnx_path}, (1, 3, 8, 8), warmup=1, runs=3, rounds=1, runtime="onnxruntime-unoptimised")
    assert stats["net"].runs == 3 and stats["net"].median_ms > 0  # timed in the worker process, which imported the module
    BuildConfig(profile_runtimes=("onnxruntime-unoptimised",)).check()


def test_a_task_is_one_module_and_one_registration(extension):
    extension("toy_task")
    from edgecompress.eval.predict import torch_predict
    from edgecompress.settings import BuildConfig
    from edgecompress.tasks import get_task

    task = get_task("brightness")
    data = task.load(None, 8, 8)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    assert task.evaluate(torch_predict(model), model, data.val)["neg_mae"] < 0
    BuildConfig(task="brightness", model="tiny.py:make", data="somewhere").check()
    with pytest.raises(Exception, match="no bundled dataset"):
        task.default_data(None, train_images=1, val_images=1, image_size=8, seed=0)


def _app():
    """The CLI app, rebuilt so its generated help lists what is registered now."""
    import edgecompress.cli

    return importlib.reload(edgecompress.cli).app
