"""Per-epoch validation, keeping the best weights (the starting ones included), the moving average of the weights,
and the per-epoch records: what fit ends with and resumes to, and the train.csv it is written to."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from edgecompress.errors import EdgeCompressError
from edgecompress.quant import calibrate, quantize_model
from edgecompress.train import TrainConfig, fit, write_train_csv
from edgecompress.train.ema import ema_decay
from edgecompress.train.history import CSV_COLUMNS
from edgecompress.train.loop import _lr_factor


def _data(seed: int, count: int = 64):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 3, 8, 8, generator=generator)
    return images, (images.mean(dim=(1, 2, 3)) > 0).long()


TRAIN, VAL = _data(0), _data(1)
LOADER = [(TRAIN[0][i : i + 16], TRAIN[1][i : i + 16]) for i in range(0, 64, 16)]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


def _accuracy(model: nn.Module) -> dict[str, float]:
    images, labels = VAL
    return {"accuracy": float((model(images).argmax(1) == labels).float().mean())}


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_qat_that_only_hurts_keeps_the_calibrated_model():
    """A trained model, int8-calibrated, then QAT at an absurd learning rate: every epoch measures worse, so fit ends
    with the calibrated (PTQ) weights, bit for bit."""
    model = _model()
    fit(model, LOADER, nn.functional.cross_entropy, TrainConfig(epochs=10, lr=2e-2, warmup_steps=2))
    int8 = quantize_model(model, TRAIN[0][:1])
    calibrate(int8, [TRAIN[0]])
    calibrated = _state(int8)
    history = fit(int8, LOADER, nn.functional.cross_entropy, TrainConfig(epochs=3, lr=5.0, warmup_steps=0), validate=_accuracy, keep_best="accuracy")
    ptq = history.start_metrics["accuracy"]
    assert ptq > 0.8 and all(record.metrics["accuracy"] < ptq for record in history.epochs)  # the construction: QAT only hurts
    assert history.kept_epoch == 0 and history.kept_metrics() == history.start_metrics
    assert _same(calibrated, _state(int8))
    assert _accuracy(int8.eval())["accuracy"] == ptq


def _scripted(scores: list[float], states: list[dict[str, torch.Tensor]]):
    """A validation that records the weights it measures and scores them by ``scores`` in order: the start, then each epoch."""

    def validate(module: nn.Module) -> dict[str, float]:
        states.append(_state(module))
        return {"score": scores[len(states) - 1], "other": 0.5}

    return validate


@pytest.mark.parametrize("scores, kept", [([0.2, 0.5, 0.9, 0.4], 2), ([0.2, 0.7, 0.7, 0.1], 1), ([0.6, 0.6, 0.3, 0.6], 0), ([0.1, 0.2, 0.3, 0.4], 3)])
def test_keep_best_ends_with_the_weights_of_the_best_epoch_and_a_tie_keeps_the_earlier(scores, kept):
    model, states = _model(), []
    history = fit(model, LOADER, nn.functional.cross_entropy, TrainConfig(epochs=3, lr=1e-2, warmup_steps=1), validate=_scripted(scores, states),
                  keep_best="score")
    assert history.kept_epoch == kept and history.kept_metrics()["score"] == max(scores)
    assert [record.metrics["score"] for record in history.epochs] == scores[1:] and history.start_metrics["score"] == scores[0]
    assert len(states) == 4 and not _same(states[0], states[3])  # it trained
    assert _same(_state(model), states[kept])


def test_validation_without_keep_best_ends_with_the_last_weights_and_bad_names_fail():
    model, states = _model(), []
    history = fit(model, LOADER, nn.functional.cross_entropy, TrainConfig(epochs=2, lr=1e-2), validate=_scripted([0.9, 0.1, 0.2], states))
    assert history.kept_epoch is None and _same(_state(model), states[-1])
    with pytest.raises(EdgeCompressError, match="keep_best='accuracy' is not among the metrics validate returns"):
        fit(_model(), LOADER, nn.functional.cross_entropy, TrainConfig(epochs=1), validate=_scripted([0.1, 0.2], []), keep_best="accuracy")
    with pytest.raises(EdgeCompressError, match="needs validate"):
        fit(_model(), LOADER, nn.functional.cross_entropy, TrainConfig(epochs=1), keep_best="accuracy")


def test_ema_equals_the_formula_step_by_step():
    """EMA_0 = W_0, EMA_n = d_n EMA_{n-1} + (1 - d_n) W_n with d_n = decay (1 - exp(-n / ramp)), for the parameters and
    BatchNorm's running statistics; the batch counter is copied."""
    decay, ramp = 0.9, 2.0
    model = _model()
    raw = [_state(model)]
    hook = register_optimizer_step_post_hook(lambda *_: raw.append(_state(model)))
    try:
        fit(model, LOADER, nn.functional.cross_entropy, TrainConfig(epochs=2, lr=5e-2, warmup_steps=1, ema=True, ema_decay=decay, ema_ramp=ramp))
    finally:
        hook.remove()
    assert len(raw) == 1 + 2 * len(LOADER)
    expected = {key: value.double() for key, value in raw[0].items()}
    for n, weights in enumerate(raw[1:], start=1):
        d = decay * (1 - math.exp(-n / ramp))
        assert d == pytest.approx(ema_decay(n, decay, ramp))
        expected = {key: d * expected[key] + (1 - d) * weights[key].double() if weights[key].is_floating_point() else weights[key]
                    for key in expected}
    final = model.state_dict()
    for key, value in expected.items():
        if value.is_floating_point():
            torch.testing.assert_close(final[key].double(), value, rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(final[key], value)
    assert not torch.allclose(final["0.weight"], raw[-1]["0.weight"], atol=1e-3)  # the average is not the last weights


class _Interrupt(Exception):
    pass


def _interrupting_loss(after_steps: int):
    """The cross-entropy, until it raises at the first step after ``after_steps``: a run killed between epochs."""
    steps = iter(range(10**6))

    def loss(logits, targets):
        if next(steps) == after_steps:
            raise _Interrupt
        return nn.functional.cross_entropy(logits, targets)

    return loss


@pytest.mark.parametrize("settings", [dict(ema=True, ema_decay=0.95, ema_ramp=3.0), dict(ema=True, keep_best=True), dict(keep_best=True)],
                         ids=["ema", "ema-and-best", "best"])
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, settings):
    settings = dict(settings)
    keep_best = "score" if settings.pop("keep_best", False) else None
    config = TrainConfig(epochs=3, lr=5e-2, warmup_steps=1, **settings)
    scores = [0.3, 0.8, 0.5, 0.6]  # epoch 1 is the best: the kept weights must survive the interruption

    def options(measured: list[float]) -> dict:
        return dict(keep_best=keep_best, validate=_scripted(measured, [])) if keep_best else {}

    uninterrupted = _model()
    history = fit(uninterrupted, LOADER, nn.functional.cross_entropy, config, **options(scores))
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(_Interrupt):
        fit(_model(), LOADER, _interrupting_loss(2 * len(LOADER)), config, checkpoint=checkpoint, **options(scores))
    assert len(torch.load(checkpoint, weights_only=True)["epochs"]) == 2
    resumed = _model()
    again = fit(resumed, LOADER, nn.functional.cross_entropy, config, checkpoint=checkpoint, **options(scores[3:]))  # only epoch 3 is left to measure
    assert again.resumed_from_epoch == 2 and again.kept_epoch == history.kept_epoch == (1 if keep_best else None)
    assert [record.loss for record in again.epochs] == [record.loss for record in history.epochs]
    assert _same(_state(uninterrupted), _state(resumed))


def test_train_csv_has_one_row_per_epoch_with_the_documented_columns(tmp_path):
    config = TrainConfig(epochs=3, lr=1e-2, warmup_steps=1)
    history = fit(_model(), LOADER, nn.functional.cross_entropy, config, validate=_accuracy)
    path = write_train_csv(history.rows(), tmp_path / "train.csv")
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == [*CSV_COLUMNS, "accuracy"] == ["epoch", "loss", "lr", "seconds", "accuracy"]
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    steps = len(LOADER)
    for epoch, row in enumerate(rows, start=1):
        assert float(row["lr"]) == pytest.approx(config.lr * _lr_factor(epoch * steps - 1, 3 * steps, config))  # the epoch's last step
        assert float(row["loss"]) == pytest.approx(history.epochs[epoch - 1].loss, abs=1e-5) and float(row["seconds"]) >= 0
        assert float(row["accuracy"]) == history.epochs[epoch - 1].metrics["accuracy"]
    plain = fit(_model(), LOADER, nn.functional.cross_entropy, config)  # no validation: no metric columns
    write_train_csv(plain.rows(), tmp_path / "plain.csv")
    assert (tmp_path / "plain.csv").read_text().splitlines()[0] == "epoch,loss,lr,seconds"
