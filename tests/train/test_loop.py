"""The training loop: loss goes down, sparsity shrinks gammas, parameter groups keep their settings, checkpoints resume."""

import pytest
import torch
from torch import nn

from edgecompress.errors import EdgeCompressError
from edgecompress.train.loop import TrainConfig, _optimizer, bn_l1, fit


def _problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    loader = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2))
    return model, loader, nn.functional.cross_entropy


def test_loss_decreases():
    torch.manual_seed(0)
    model, loader, loss_fn = _problem()
    history = fit(model, loader, loss_fn, TrainConfig(epochs=8, lr=1e-2, warmup_steps=2))
    assert history.epoch_losses[-1] < history.epoch_losses[0]
    assert not model.training


def test_sparsity_penalty_shrinks_gammas():
    torch.manual_seed(0)
    plain, loader, loss_fn = _problem()
    sparse = _problem()[0]
    sparse.load_state_dict(plain.state_dict())
    fit(plain, loader, loss_fn, TrainConfig(epochs=16, lr=1e-2, warmup_steps=2))
    fit(sparse, loader, loss_fn, TrainConfig(epochs=16, lr=1e-2, warmup_steps=2, sparsity_lambda=0.05), sparse_batchnorms=[sparse[1]])
    assert bn_l1([sparse[1]]) < 0.8 * bn_l1([plain[1]])



def test_checkpoint_resumes_where_training_stopped(tmp_path):
    torch.manual_seed(0)
    model, loader, loss_fn = _problem()
    checkpoint = tmp_path / "ckpt.pt"
    fit(model, loader, loss_fn, TrainConfig(epochs=2, lr=1e-2), checkpoint=checkpoint)
    again, _, _ = _problem()
    history = fit(again, loader, loss_fn, TrainConfig(epochs=3, lr=1e-2), checkpoint=checkpoint)
    assert history.resumed_from_epoch == 2 and len(history.epoch_losses) == 3


def test_param_groups_get_their_own_lr_and_no_weight_decay():
    torch.manual_seed(0)
    model, loader, loss_fn = _problem()
    scale = nn.Parameter(torch.ones(()))  # a parameter of the model with its own learning rate
    model.register_parameter("scale", scale)
    config = TrainConfig(epochs=1, lr=1e-3, warmup_steps=0)
    optimizer = _optimizer(model, config, [{"params": scale, "lr": 0.5}])
    groups = optimizer.param_groups
    assert [group["lr"] for group in groups] == [1e-3, 1e-3, 0.5] and groups[2]["weight_decay"] == 0.0
    assert all(p is not scale for group in groups[:2] for p in group["params"])  # only in its own group
    assert sum(len(group["params"]) for group in groups) == len(list(model.parameters()))
    plain = _optimizer(model, config)
    assert len(plain.param_groups) == 2 and any(p is scale for p in plain.param_groups[1]["params"])
    with pytest.raises(EdgeCompressError, match="'params'"):
        _optimizer(model, config, [{"lr": 0.5}])
    loss_with_scale = lambda logits, targets: loss_fn(logits * model.scale, targets)  # noqa: E731
    fit(model, loader, loss_with_scale, config, param_groups=[{"params": [scale], "lr": 0.5}])
    assert abs(float(scale.detach()) - 1.0) > 0.1  # moved by its own, larger learning rate
