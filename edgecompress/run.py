"""One build's context: its settings, folder, task, target, data and the outcomes of its finished stages,
and the check of every input the build reads, made once before the first stage."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data import calibration_paths, check_images, image_paths, load_images, spread
from .errors import EdgeCompressError, describe
from .outcomes import StageOutcome
from .progress import console
from .settings import BuildConfig, check_training_memory
from .targets import get_target
from .tasks import get_task
from .train.device import loader_workers, resolve_device
from .train.distributed import set_epoch, shuffle_generator

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CALIB = PACKAGE_ROOT / "calib_data"
MIN_CALIBRATION_IMAGES = 32  # fewer give noisy activation ranges: a warning, not an error


class Run:
    """A build in progress: stages read the settings, the loaders and what earlier stages wrote."""

    def __init__(self, config: BuildConfig):
        self.config = config
        self.dir = Path(config.runs_dir) / str(config.name)
        self.task = get_task(config.task)
        self.target = get_target(config.target)
        self.manifests: dict[str, dict[str, Any]] = {}
        self.outcomes: dict[str, StageOutcome] = {}
        self._data = None
        self._calibration: tuple[list[Path], str] | None = None

    @property
    def data(self):
        """The task's loaders, built on first use (by :meth:`preflight`, which checks them before any stage).

        A quick build on a user's dataset reads only its first ``train_images`` images; ``--workers`` processes
        (by default as many as suit ``--device``, see :func:`~edgecompress.train.device.loader_workers`) load them.
        """
        if self._data is None:
            config = self.config
            limit = config.train_images if config.quick and config.data else None
            workers = loader_workers(config.workers, resolve_device(config.device))
            self._data = self.task.load(self.data_path(), config.image_size, config.batch_size, limit=limit, augment=config.augment,
                                        seed=config.seed, workers=workers)
        return self._data

    def reseed(self) -> None:
        """Seed torch and the training shuffle and start the augmentations at epoch 0, so a stage gives the same result whether
        or not earlier stages were reused."""
        torch.manual_seed(self.config.seed)
        if self._data is not None:
            set_epoch(self._data.train, 0)
            generator = shuffle_generator(self._data.train)
            if generator is not None:
                generator.manual_seed(self.config.seed)

    def data_path(self) -> Path:
        """``--data``, or the task's bundled dataset, generated on first use under the runs folder."""
        config = self.config
        if config.data is not None:
            return Path(config.data)
        root = Path(config.runs_dir) / "_data" / f"{config.task}-{config.train_images}-{config.val_images}-{config.image_size}"
        return self.task.default_data(root, train_images=config.train_images, val_images=config.val_images,
                                      image_size=config.image_size, seed=config.seed)

    def calibration_files(self) -> list[Path]:
        """The images int8 is calibrated on, at most ``--calib-images`` spread evenly: those of ``--calib``;
        else, with ``--data``, its training images (the deployment's own data, not the bundled digits);
        else the bundled ``calib_data/``."""
        return self._calibration_choice()[0]

    def calibration_source(self) -> str:
        """Where the calibration images come from, in words, for the report."""
        return self._calibration_choice()[1]

    def calibration_images(self) -> torch.Tensor:
        """The calibration images of :meth:`calibration_files`, ``[N,3,S,S]`` preprocessed as at inference."""
        return load_images(self.calibration_files(), self.config.image_size)

    def _calibration_choice(self) -> tuple[list[Path], str]:
        if self._calibration is None:
            config, limit = self.config, self.config.calib_images
            training = image_paths(self.data.train.dataset) if config.calib is None and config.data is not None else None
            if config.calib is not None:
                found = calibration_paths(config.calib)
                files = spread(found, limit)
                source = f"{len(files)} of the {len(found)} images of --calib {config.calib}, evenly spread"
            elif training:
                files = spread(training, limit)
                source = f"{len(files)} of the {len(training)} training images of --data {config.data}, evenly spread"
            else:
                files = spread(calibration_paths(DEFAULT_CALIB), limit)
                source = f"{len(files)} bundled digits images ({DEFAULT_CALIB.name}/)"
                if config.data is not None:
                    source += "; the --data training set names no image files, pass --calib for your own"
            self._calibration = files, source
        return self._calibration

    def preflight(self) -> None:
        """Check every input the build reads, once, before the first stage, so a bad one fails in seconds
        rather than after minutes of training; a problem is a one-line EdgeCompressError.

        Checked: the dataset (its yaml, folders and every label file: the loaders read them all), the
        model (built with ``--weights`` and run on one input of ``--image-size``; with ``--distill``, that its
        task can distil it), the memory one training batch needs, that ``--target-macs`` is reachable, that
        latency tables imported from the device (``--latency-runtime tensorrt``) hold every point the planner
        needs, and that every training, validation and calibration image decodes (cached under the runs folder
        by each file's size and time).
        """
        started, config = time.time(), self.config
        data = self.data
        model = self._preflight_model(data.num_classes)
        if config.distill:
            self.task.distillation_loss(model)  # a task or detector family without a distillation term refuses --distill here
        if config.target_macs is not None and not config.prune_layers:  # dropped blocks would change what is reachable
            self._check_target_macs(model)
        if config.target_latency is not None and self.imported_latency_tables:
            from .profile import measure_latency_tables

            measure_latency_tables(model, self.example_input(), **self.latency_table_options())  # every point imported, or the fix
        images = (image_paths(data.train.dataset) or []) + (image_paths(data.val.dataset) or [])
        calibration = self.calibration_files() if self.target.int8 else []
        check_images(images + calibration, cache=Path(config.runs_dir) / "_data" / "checked")
        console.print(f"[green]✓[/] inputs checked in {time.time() - started:.1f}s: {len(images)} training and validation images decode"
                      + (f"; int8 calibrates on {self.calibration_source()}" if calibration else ""), highlight=False, soft_wrap=True)
        if calibration and len(calibration) < MIN_CALIBRATION_IMAGES:
            console.print(f"[yellow]warning:[/] only {len(calibration)} calibration images; int8 ranges from so few are noisy, "
                          "pass --calib with a few hundred images from your deployment data", highlight=False, soft_wrap=True)

    def _preflight_model(self, num_classes: int) -> nn.Module:
        """The model, built as the baseline builds it and run once on one input: it must accept
        ``--image-size``, and a training batch of its activations must fit in memory."""
        from .models import ZOO, resolve_model

        config = self.config
        model = resolve_model(config.model, num_classes=num_classes, weights=config.weights, trust=config.trust_model)
        example = self.example_input()
        try:
            per_image = _saved_activation_bytes(model, example)
        except Exception as exc:  # noqa: BLE001  (whatever a user's model raises on this input)
            designed = f" (it was designed for {ZOO[config.model].image_size})" if config.model in ZOO else ""
            raise EdgeCompressError(f"--model {config.model} fails on a {config.image_size}x{config.image_size} input ({describe(exc)}); "
                                    f"pass an --image-size it accepts{designed}") from None
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        needed = config.batch_size * (per_image + 2 * example.numel() * example.element_size()) + 4 * weights  # + gradients, Adam moments
        check_training_memory(config.image_size, config.batch_size, needed, estimate="about")
        return model

    def _check_target_macs(self, model: nn.Module) -> None:
        from .prune.budget import max_removable_fraction

        config = self.config
        reachable = max_removable_fraction(model, self.example_input(), min_channels=config.min_channels, round_to=config.round_to, ignore=config.ignore)
        if config.target_macs > reachable:
            most = math.floor(reachable * 100) / 100
            raise EdgeCompressError(
                f"--target-macs {config.target_macs:g} is out of reach for {config.model}: cutting every prunable layer to --min-channels "
                f"{config.min_channels} (--round-to {config.round_to}) removes at most {reachable:.1%} of its MACs; pass --target-macs {most:g} "
                "or less, a smaller --min-channels, or fewer --ignore modules"
            )

    @property
    def imported_latency_tables(self) -> bool:
        """Whether ``--latency-runtime`` reads tables measured on the device (tensorrt) rather than timing them here."""
        from .profile.layer_latency import IMPORTED_RUNTIMES

        return self.config.latency_runtime in IMPORTED_RUNTIMES

    def latency_table_options(self) -> dict[str, Any]:
        """How the latency tables of ``--target-latency`` are found (:func:`~edgecompress.profile.measure_latency_tables`'s
        arguments): in ``--latency-runtime`` on a ``--round-to`` grid; fp32 timed here, or the target's precision measured on it."""
        from .profile.layer_latency import grid_step

        config = self.config
        on_device = {"precision": self.target.precision, "device": self.target.name} if self.imported_latency_tables else {}
        return {"ignore": config.ignore, "runtime": config.latency_runtime, "step": grid_step(config.round_to), **on_device}

    def example_input(self) -> torch.Tensor:
        """A fixed random batch of one input, for tracing, statistics and export."""
        generator = torch.Generator().manual_seed(self.config.seed)
        return torch.randn(1, 3, self.config.image_size, self.config.image_size, generator=generator)

    def load_stage_model(self, stage: str) -> nn.Module:
        """The model a finished stage saved, loaded safely (the classes of a ``file.py:callable`` model allowed)."""
        from .artifacts import load_model
        from .models import model_classes

        return load_model(self.artifact(stage, "model"), classes=model_classes(self.config.model), trust=self.config.trust_model)

    def artifact(self, stage: str, name: str) -> Path:
        """Path of an artifact a finished stage recorded in its outcome."""
        return self.dir / stage / self.outcomes[stage].outputs[name]


def _saved_activation_bytes(model: nn.Module, example: torch.Tensor) -> int:
    """Bytes of the activations autograd saves for backward in one forward of ``example`` (parameters
    excluded), counted as they are saved and never kept, so measuring holds no more than inference."""
    weights = {p.data_ptr() for p in model.parameters()}
    saved = 0

    def count(tensor: torch.Tensor) -> None:
        nonlocal saved
        if tensor.data_ptr() not in weights:
            saved += tensor.numel() * tensor.element_size()

    model.eval()  # one input: BatchNorm in training mode would refuse a 1x1 map
    with torch.autograd.graph.saved_tensors_hooks(count, lambda _: None):
        model(example)
    return saved
