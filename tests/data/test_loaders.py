"""Loader workers (--workers): the same seed gives the same training batches, augmentations included, and the same
trained weights, with and without worker processes, over several epochs and across stages (persistent workers
read the epoch and the reseeding the build sets); the training's own random state is untouched; the default
follows the device."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from edgecompress.data import make_digits_detection
from edgecompress.run import Run
from edgecompress.settings import BuildConfig
from edgecompress.tasks import get_task, torch_predict
from edgecompress.train import distributed
from edgecompress.train.device import loader_workers
from edgecompress.train.loop import TrainConfig, fit

SIZE = 64


def _stages(run: Run) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """The training batches of two epochs of one stage, then of the first epoch of the next one, as the build draws them."""
    epochs = []
    for epochs_in_stage in (2, 1):
        run.reseed()  # what the pipeline does before every stage
        for epoch in range(epochs_in_stage):
            distributed.set_epoch(run.data.train, epoch)  # what the training loop does before every epoch
            epochs.append(list(run.data.train))
    return epochs


def _same(first, second) -> bool:
    return len(first) == len(second) and all(torch.equal(a, b) and torch.equal(x, y) for (a, x), (b, y) in zip(first, second))


def test_the_same_seed_gives_the_same_fully_augmented_batches_with_0_and_2_workers(tmp_path):
    data = make_digits_detection(tmp_path / "digits", n_train=12, n_val=4, image_size=SIZE)
    drawn = {}
    for workers in (0, 2):
        run = Run(BuildConfig(data=str(data), image_size=SIZE, batch_size=4, augment="full", seed=3, workers=workers,
                              runs_dir=str(tmp_path / "runs")).resolved())
        assert run.data.train.num_workers == run.data.val.num_workers == workers
        assert run.data.train.persistent_workers == (workers > 0)
        drawn[workers] = _stages(run)
        assert torch.equal(torch.get_rng_state(), torch.Generator().manual_seed(3).get_state())  # as the reseed left it: loading never draws from it
    without, with_workers = drawn[0], drawn[2]
    assert all(_same(a, b) for a, b in zip(without, with_workers))
    assert not _same(without[0], without[1])  # the second epoch shuffles and augments afresh...
    assert _same(with_workers[0], with_workers[2])  # ...and the next stage starts from the first epoch again, in the kept workers too


def _image_folder(root, count: int = 12) -> str:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for label in ("dark", "light"):
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                level = 40 if label == "dark" else 200
                pixels = np.clip(rng.normal(level, 30, (12, 12, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / label / f"{i}.png")
    return str(root)


def _classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


def test_a_classifier_trains_to_the_same_weights_with_0_and_2_workers(tmp_path):
    task, data = get_task("classify"), _image_folder(tmp_path / "folder")
    weights = {}
    for workers in (0, 2):
        loaders = task.load(data, 8, batch_size=6, augment="light", seed=1, workers=workers)
        model = _classifier()
        fit(model, loaders.train, task.loss(model), TrainConfig(epochs=2, lr=1e-2, warmup_steps=1),
            validate=lambda module: task.evaluate(torch_predict(module), module, loaders.val))
        weights[workers] = model.state_dict()
    assert all(torch.equal(weights[0][key], weights[2][key]) for key in weights[0])
    assert not torch.equal(weights[0]["0.weight"], _classifier().state_dict()["0.weight"])  # it trained


def test_by_default_a_few_workers_per_process_on_a_gpu_and_fewer_on_the_cpu(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(32)))  # a 32-core machine
    assert (loader_workers(None, gpu), loader_workers(None, cpu), loader_workers(3, cpu), loader_workers(0, gpu)) == (8, 2, 3, 0)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # torchrun's 8 processes share the cores
    assert (loader_workers(None, gpu), loader_workers(None, cpu)) == (4, 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")  # one core each: the batches are loaded by the training process on the CPU
    assert (loader_workers(None, gpu), loader_workers(None, cpu)) == (1, 0)
