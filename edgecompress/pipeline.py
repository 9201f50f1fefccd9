"""The build pipeline: baseline -> sparse -> prune -> finetune -> qat -> export -> engine -> report.

Each stage writes its artifacts into ``runs/<name>/<stage>/`` with a ``manifest.json`` saying what
produced them (a fingerprint of the settings it read and of every stage before it). Rerunning the
same build reuses stages whose fingerprint is unchanged; ``from_stage`` reruns from a stage on. A
stage works in ``runs/<name>/.partial/<stage>/`` and is renamed into place only when complete, so
an interrupted build leaves no half-written stage, and training resumes from its last epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from .artifacts import write_json
from .errors import EdgeCompressError
from .progress import console

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CALIB = PACKAGE_ROOT / "calib_data"


@dataclass(frozen=True)
class BuildConfig:
    """Every setting of a build; the CLI's options map one to one onto these fields."""

    target: str = "cpu"
    model: str = "yolo-mbv2"
    weights: str | None = None
    task: str = "detect"
    data: str | None = None
    calib: str | None = None
    name: str | None = None
    runs_dir: str = "runs"
    image_size: int = 128
    batch_size: int = 32
    lr: float = 1e-2
    epochs: int = 20
    sparse_epochs: int = 8
    sparsity_lambda: float = 1e-3
    prune_ratio: float = 0.6
    target_macs: float | None = None  # fraction of MACs to remove; replaces prune_ratio when set
    prune_layers: int = 0  # residual blocks replaced by identity before channel pruning
    criterion: str = "bn-gamma"
    min_channels: int = 8
    round_to: int = 8
    ignore: tuple[str, ...] = ()
    finetune_epochs: int = 8
    qat_epochs: int = 2
    max_drop: float | None = None  # with a value, sensitivity analysis keeps the worst layers in float
    calib_method: str = "mse"
    calib_images: int = 256
    train_images: int = 2000
    val_images: int = 400
    profile_runs: int = 100
    profile_rounds: int = 3
    profile_runtimes: tuple[str, ...] = ("onnxruntime",)  # CPU runtimes the report times every model in
    profile_batch: int = 1  # batch size of the report's timed inputs (latency at 1, throughput above)
    seed: int = 0
    quick: bool = False
    from_stage: str | None = None

    def resolved(self) -> BuildConfig:
        """Apply ``quick`` to the settings left at their defaults, and the default name."""
        config = self
        if self.quick:
            defaults = BuildConfig()
            config = replace(config, **{k: v for k, v in QUICK.items() if getattr(config, k) == getattr(defaults, k)})
        if config.name is None:
            config = replace(config, name=f"{Path(config.model).stem.split(':')[0]}-{config.target}" + ("-quick" if self.quick else ""))
        return config


# The --quick profile (tests and smoke runs): tiny data and one epoch per stage, about 20 s here.
QUICK = dict(epochs=1, sparse_epochs=1, finetune_epochs=1, qat_epochs=1, train_images=96, val_images=32,
             calib_images=32, profile_runs=20, profile_rounds=1, batch_size=16)


@dataclass
class StageOutcome:
    """What a stage produced: artifact file names (relative to the stage folder) and metrics."""

    outputs: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    skipped: str = ""


@dataclass(frozen=True)
class Stage:
    """A pipeline stage: its function and the settings whose change invalidates it."""

    name: str
    run: Callable[["Run", Path], StageOutcome]
    settings: tuple[str, ...]


class Run:
    """One build's context: its settings, folder, task, target and the manifests of finished stages."""

    def __init__(self, config: BuildConfig):
        from .engine import get_target
        from .tasks import get_task

        self.config = config
        self.dir = Path(config.runs_dir) / str(config.name)
        self.task = get_task(config.task)
        self.target = get_target(config.target)
        self.manifests: dict[str, dict[str, Any]] = {}
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
        """``--data``, or the bundled digits detection set, generated on first use under the runs folder."""
        if self.config.data is not None:
            return Path(self.config.data)
        if self.config.task != "detect":
            raise EdgeCompressError(f"task {self.config.task} has no bundled dataset; pass --data PATH")
        from .data.digits import make_digits_detection

        root = Path(self.config.runs_dir) / "_data" / f"digits-{self.config.train_images}-{self.config.val_images}-{self.config.image_size}"
        return make_digits_detection(root, n_train=self.config.train_images, n_val=self.config.val_images, image_size=self.config.image_size, seed=self.config.seed)

    def example_input(self) -> torch.Tensor:
        """A fixed random batch of one input, for tracing, statistics and export."""
        generator = torch.Generator().manual_seed(self.config.seed)
        return torch.randn(1, 3, self.config.image_size, self.config.image_size, generator=generator)

    def artifact(self, stage: str, name: str) -> Path:
        """Path of an artifact a finished stage recorded in its manifest."""
        return self.dir / stage / self.manifests[stage]["outputs"][name]


def _fingerprint(stage: Stage, config: BuildConfig, previous: str) -> str:
    settings = {key: getattr(config, key) for key in stage.settings}
    blob = json.dumps({"stage": stage.name, "settings": settings, "previous": previous}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _reusable(manifest_path: Path, fingerprint: str) -> dict[str, Any] | None:
    if not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    outputs_present = all((manifest_path.parent / rel).exists() for rel in manifest.get("outputs", {}).values())
    return manifest if manifest.get("fingerprint") == fingerprint and outputs_present else None


def run_stage(run: Run, stage: Stage, fingerprint: str, force: bool) -> dict[str, Any]:
    """Reuse the stage if its manifest matches, else run it in a partial folder and move it into place."""
    final = run.dir / stage.name
    if not force and (manifest := _reusable(final / "manifest.json", fingerprint)):
        console.print(f"[green]✓[/] {stage.name}: reused (fingerprint {fingerprint})")
        return manifest
    partial = run.dir / ".partial" / stage.name
    marker = partial / ".fingerprint"
    if partial.exists() and (force or not marker.is_file() or marker.read_text() != fingerprint):
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint)
    console.rule(f"[bold]{stage.name}")
    run.reseed()
    started = time.time()
    outcome = stage.run(run, partial)
    manifest = {
        "stage": stage.name,
        "status": "skipped" if outcome.skipped else "done",
        "reason": outcome.skipped,
        "fingerprint": fingerprint,
        "settings": {key: getattr(run.config, key) for key in stage.settings},
        "outputs": outcome.outputs,
        "metrics": outcome.metrics,
        "wall_s": round(time.time() - started, 2),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(partial / "manifest.json", manifest)
    marker.unlink()
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    status = f"skipped: {outcome.skipped}" if outcome.skipped else f"done in {manifest['wall_s']:.1f}s"
    console.print(f"[green]✓[/] {stage.name}: {status}")
    return manifest


def build(config: BuildConfig | None = None, **overrides: Any) -> Path:
    """Run the whole pipeline; returns the run folder. Keyword arguments override ``config`` fields."""
    from .stages import STAGES

    config = replace(config or BuildConfig(), **overrides).resolved()
    names = [stage.name for stage in STAGES]
    if config.from_stage is not None and config.from_stage not in names:
        raise EdgeCompressError(f"unknown stage {config.from_stage!r} for --from; choose one of {', '.join(names)}")
    _check_settings(config)
    run = Run(config)
    run.dir.mkdir(parents=True, exist_ok=True)
    write_json(run.dir / "config.json", asdict(config))
    previous = ""
    force_from = names.index(config.from_stage) if config.from_stage else len(names)
    try:
        for index, stage in enumerate(STAGES):
            fingerprint = _fingerprint(stage, config, previous)
            run.manifests[stage.name] = run_stage(run, stage, fingerprint, force=index >= force_from)
            previous = fingerprint
    except BaseException:
        _discard_unresumable(run.dir, names)
        raise
    shutil.rmtree(run.dir / ".partial", ignore_errors=True)
    return run.dir


def _check_settings(config: BuildConfig) -> None:
    """Reject bad settings before any stage runs, rather than after minutes of training."""
    from .prune.plan import check_arguments
    from .quant.calibrators import CALIBRATORS

    check_arguments(config.prune_ratio, config.criterion, config.min_channels, config.round_to)
    if config.target_macs is not None and not 0 < config.target_macs < 1:
        raise EdgeCompressError(f"--target-macs must be in (0, 1), got {config.target_macs}; 0.5 removes half the MACs")
    if config.max_drop is not None and config.max_drop < 0:
        raise EdgeCompressError(f"--max-drop must be >= 0, got {config.max_drop}; 0.01 allows one point of the metric")
    if config.prune_layers < 0:
        raise EdgeCompressError(f"--prune-layers must be >= 0, got {config.prune_layers}")
    if config.calib_method not in CALIBRATORS:
        raise EdgeCompressError(f"unknown --calib-method {config.calib_method!r}; choose one of {', '.join(CALIBRATORS)}")
    _check_runtimes(config.profile_runtimes)
    positive = ("profile_runs", "profile_rounds", "profile_batch", "batch_size", "image_size")
    for name in ("epochs", "sparse_epochs", "finetune_epochs", "qat_epochs", *positive):
        if getattr(config, name) < (1 if name in positive else 0):
            raise EdgeCompressError(f"--{name.replace('_', '-')} must not be {getattr(config, name)}; pass a positive number")


def _check_runtimes(runtimes: tuple[str, ...]) -> None:
    import importlib.util

    from .profile.worker import RUNNERS

    if not runtimes:
        raise EdgeCompressError("--profile-runtime needs at least one runtime; the default is onnxruntime")
    for runtime in runtimes:
        if runtime not in RUNNERS:
            raise EdgeCompressError(f"unknown --profile-runtime {runtime!r}; choose from {', '.join(RUNNERS)}")
        if importlib.util.find_spec(runtime) is None:
            raise EdgeCompressError(f"--profile-runtime {runtime}: the {runtime} package is not installed; pip install 'edgecompress[{runtime}]'")


def _discard_unresumable(run_dir: Path, stage_names: list[str]) -> None:
    """After a failure keep only what a rerun can use: finished stages and training checkpoints."""
    partial = run_dir / ".partial"
    for folder in partial.glob("*"):
        if not (folder / "checkpoint.pt").is_file():
            shutil.rmtree(folder)
    if partial.is_dir() and not any(partial.iterdir()):
        partial.rmdir()
    if not any((run_dir / name).is_dir() for name in stage_names) and not partial.is_dir():
        shutil.rmtree(run_dir)
