"""Devices and mixed precision: --device resolves once (a GPU asked for without one is refused before any work),
AMP changes nothing on the CPU, checkpoints load on the CPU, and on a GPU fit matches the CPU."""

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from edgecompress.cli import app
from edgecompress.errors import EdgeCompressError
from edgecompress.train import resolve_device
from edgecompress.train.device import autocast_dtype, to_device
from edgecompress.train.loop import TrainConfig, fit

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; torch sees none on this machine")


def _problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    loader = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2))
    return model, loader, nn.functional.cross_entropy


def _trained(device, amp, **kwargs):
    model, loader, loss_fn = _problem()
    fit(model, loader, loss_fn, TrainConfig(epochs=3, lr=1e-2, warmup_steps=2), device=device, amp=amp, **kwargs)
    return model


def test_auto_is_the_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert autocast_dtype(torch.device("cpu")) is None  # AMP is never applied on the CPU


@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_refused_naming_the_fix(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(EdgeCompressError, match="--device cpu"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["gpu", "mps", "cuda:x", ""])
def test_unknown_device_is_refused(name):
    with pytest.raises(EdgeCompressError, match="auto, cpu, cuda or cuda:N"):
        resolve_device(name)


def test_cli_refuses_cuda_without_a_gpu_before_writing_a_run_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["build", "--quick", "--device", "cuda", "--runs-dir", str(runs)])
    assert result.exit_code == 2, result.output
    assert "--device cuda" in result.output and "--device cpu" in result.output
    assert not runs.exists()


def test_quantize_refuses_cuda_without_a_gpu_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["quantize", "yolo-mbv2", "--data", str(tmp_path / "data.yaml"), "--out", str(out), "--device", "cuda"])
    assert result.exit_code == 2, result.output
    assert "--device cuda" in result.output and not out.exists()


def test_amp_changes_nothing_on_the_cpu():
    plain, mixed = _trained("cpu", amp=False), _trained("cpu", amp=True)
    for (name, a), b in zip(plain.state_dict().items(), mixed.state_dict().values()):
        assert torch.equal(a, b), name


def test_detection_targets_move_as_tensors_or_lists():
    targets = [torch.zeros(2, 6), torch.ones(1, 6)]
    batch = to_device((torch.zeros(1, 3, 4, 4), targets), torch.device("cpu"))
    assert isinstance(batch, tuple) and isinstance(batch[1], list) and torch.equal(batch[1][1], targets[1])


def test_checkpoint_loads_on_the_cpu(tmp_path):
    checkpoint = tmp_path / "ckpt.pt"
    model = _trained("cpu", amp=False, checkpoint=checkpoint)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert all(tensor.device.type == "cpu" for tensor in state["model"].values())
    fresh, _, _ = _problem()
    fresh.load_state_dict(state["model"])
    for a, b in zip(fresh.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


@needs_cuda
def test_fit_on_cuda_matches_the_cpu_in_fp32():
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = False, False  # full fp32, as on the CPU
    cpu, gpu = _trained("cpu", amp=False), _trained("cuda", amp=False)
    assert next(gpu.parameters()).device.type == "cuda"
    for (name, a), b in zip(cpu.state_dict().items(), gpu.state_dict().values()):
        assert torch.allclose(a.float(), b.cpu().float(), rtol=1e-3, atol=1e-4), name


@needs_cuda
def test_amp_on_cuda_trains_and_its_checkpoint_loads_on_the_cpu(tmp_path):
    model, loader, loss_fn = _problem()
    checkpoint = tmp_path / "ckpt.pt"
    history = fit(model, loader, loss_fn, TrainConfig(epochs=8, lr=1e-2, warmup_steps=2), device="cuda", amp=True, checkpoint=checkpoint)
    assert history.epoch_losses[-1] < history.epoch_losses[0]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast casts activations, never the weights
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert all(tensor.device.type == "cpu" for tensor in state["model"].values())
