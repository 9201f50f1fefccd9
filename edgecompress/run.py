"""One build's context: its settings, folder, task, target, data and the outcomes of its finished stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .outcomes import StageOutcome
from .settings import BuildConfig
from .targets import get_target
from .tasks import get_task

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CALIB = PACKAGE_ROOT / "calib_data"


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

    @property
    def data(self):
        """The task's loaders, built on first use (stages reused from disk never load data).

        A quick build on a user's dataset reads only its first ``train_images`` images.
        """
        if self._data is None:
            limit = self.config.train_images if self.config.quick and self.config.data else None
            self._data = self.task.load(self.data_path(), self.config.image_size, self.config.batch_size, limit=limit)
        return self._data

    def reseed(self) -> None:
        """Seed torch and the training shuffle, so a stage gives the same result whether or not earlier stages were reused."""
        torch.manual_seed(self.config.seed)
        if self._data is not None and self._data.train.generator is not None:
            self._data.train.generator.manual_seed(self.config.seed)

    def data_path(self) -> Path:
        """``--data``, or the task's bundled dataset, generated on first use under the runs folder."""
        config = self.config
        if config.data is not None:
            return Path(config.data)
        root = Path(config.runs_dir) / "_data" / f"{config.task}-{config.train_images}-{config.val_images}-{config.image_size}"
        return self.task.default_data(root, train_images=config.train_images, val_images=config.val_images,
                                      image_size=config.image_size, seed=config.seed)

    def calibration_folder(self) -> Path:
        """``--calib``, or the bundled calibration images."""
        return Path(self.config.calib) if self.config.calib else DEFAULT_CALIB

    def example_input(self) -> torch.Tensor:
        """A fixed random batch of one input, for tracing, statistics and export."""
        generator = torch.Generator().manual_seed(self.config.seed)
        return torch.randn(1, 3, self.config.image_size, self.config.image_size, generator=generator)

    def artifact(self, stage: str, name: str) -> Path:
        """Path of an artifact a finished stage recorded in its outcome."""
        return self.dir / stage / self.outcomes[stage].outputs[name]
