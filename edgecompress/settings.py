"""The build's settings: one schema that the Python API, the CLI options and the checks all read.

Each field of :class:`BuildConfig` carries its help text and, where the value names something in a
registry (a target, task, criterion, calibrator or runtime), the registry it must be found in. The CLI
generates its options from these fields (:mod:`edgecompress.cli`), and :meth:`BuildConfig.check`
validates every value once, before any stage runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import EdgeCompressError


def setting(default: Any, help: str, *, choices: Callable[[], Iterable[str]] | None = None, flag: str | None = None,
            minimum: float | None = None, argument: bool = False) -> Any:
    """A settings field, required when ``default`` is ``...``: ``help`` for the CLI, ``choices`` (a registry's names,
    read when needed), the CLI ``flag`` when it differs from the field name, the ``minimum`` a number may take, or
    ``argument`` for a positional one."""
    metadata = {"help": help, "choices": choices, "flag": flag, "minimum": minimum, "argument": argument}
    return field(metadata=metadata) if default is ... else field(default=default, metadata=metadata)


def flag_of(item) -> str:
    """The CLI flag of a settings field (``--image-size``)."""
    return item.metadata.get("flag") or "--" + item.name.replace("_", "-")


def check_settings(config: Any) -> None:
    """Every field against its ``choices`` and ``minimum``; a bad value is one line naming the flag and the fix."""
    for item in fields(config):
        value, meta = getattr(config, item.name), item.metadata
        if value is None:
            continue
        values = value if isinstance(value, tuple) else (value,)
        if meta.get("choices") is not None:
            known = list(meta["choices"]())
            for one in values:
                if one not in known:
                    raise EdgeCompressError(f"unknown {flag_of(item)} {one!r}; choose one of {', '.join(known)}")
        if meta.get("minimum") is not None and isinstance(value, (int, float)) and not isinstance(value, bool) and value < meta["minimum"]:
            raise EdgeCompressError(f"{flag_of(item)} must be >= {meta['minimum']:g}, got {value}")


def _check_latency_runtime(runtime: str, target: str) -> None:
    """A runtime timed here must be installed; tables imported from the device need a target that runs that runtime."""
    from .profile.layer_latency import IMPORTED_RUNTIMES
    from .profile.runtimes import get_runtime
    from .targets import get_target

    if runtime not in IMPORTED_RUNTIMES:
        get_runtime(runtime)  # its package is installed
    elif get_target(target).tensorrt is None:
        raise EdgeCompressError(f"--latency-runtime {runtime} reads tables measured on a TensorRT device, and --target {target} has no TensorRT; "
                                "pass a Jetson or GPU --target, or --latency-runtime onnxruntime|openvino")


def target_names() -> list[str]:
    from .targets import TARGETS

    return list(TARGETS)


def task_names() -> list[str]:
    from .tasks import TASKS

    return list(TASKS)


def criterion_names() -> list[str]:
    from .prune import CRITERIA

    return list(CRITERIA)


def strategy_names() -> list[str]:
    from .prune import STRATEGIES

    return list(STRATEGIES)


def calibrator_names() -> list[str]:
    from .quant.calibrators import CALIBRATORS

    return list(CALIBRATORS)


def augmentation_names() -> list[str]:
    from .data.augment import AUGMENTATIONS

    return list(AUGMENTATIONS)


def runtime_names() -> list[str]:
    from .profile.runtimes import RUNTIMES

    return list(RUNTIMES)


def latency_runtime_names() -> list[str]:
    """The runtimes timed here, then those whose tables are imported from the device (tensorrt)."""
    from .profile.layer_latency import IMPORTED_RUNTIMES

    return runtime_names() + list(IMPORTED_RUNTIMES)


@dataclass(frozen=True)
class BuildConfig:
    """Every setting of a build; the CLI's ``build`` options are generated from these fields."""

    target: str = setting("cpu", "Deployment target or an unambiguous alias (orin-nano, 4090); `edgecompress targets` lists them.", choices=target_names)
    model: str = setting("yolo-mbv2", "Zoo name, path/to/file.py:callable, package.module:callable or a torch.save(model) file.")
    trust_model: bool = setting(False, "Load a --model file that needs code to load (a torch.save(model) file, an Ultralytics checkpoint): "
                                       "loading it can run anything in it, so only for files you trust.")
    weights: str | None = setting(None, "State dict to load; skips baseline training.")
    task: str = setting("detect", "What the model does: detect (YOLO data.yaml) or classify (ImageFolder with train/ and val/).", choices=task_names)
    data: str | None = setting(None, "Dataset: a YOLO data.yaml, or an ImageFolder root. Default: the task's bundled set (digits detection).")
    calib: str | None = setting(None, "Folder of calibration images. Default: an evenly spread sample of --data's training images, or the bundled calib_data/ without --data.")
    name: str | None = setting(None, "Run name: the folder under --runs-dir. Default: MODEL-TARGET.")
    runs_dir: str = setting("runs", "Where run folders are written.")
    image_size: int = setting(128, "Square input size in pixels.", minimum=1)
    batch_size: int = setting(32, "Training and evaluation batch size.", minimum=1)
    workers: int | None = setting(None, "Processes loading and augmenting the training and validation batches (0: the training process). "
                                        "Default: of each process's share of the CPUs, up to 8 on a GPU, up to 2 on the CPU (none with one CPU). "
                                        "The batches, hence results and reused stages, are the same whatever the number.", minimum=0)
    lr: float | None = setting(None, "Peak Adam learning rate (cosine-annealed); QAT uses lr/100. Default: 0.01 when the build trains its "
                                     "baseline, 0.001 with --weights: 0.01 throws a trained model far from what it learned.")
    augment: str = setting("light", "Augmentation of the training images (every training stage; validation and calibration images never): none; "
                                    "light (random zoom, shift, brightness, contrast); full (light plus the patent's random crop, perspective warp, "
                                    "horizontal flip and mixup; detection only; no flip for a data.yaml with 'flip: false', as the bundled digits').",
                           choices=augmentation_names)
    epochs: int = setting(20, "Baseline training epochs (ignored with --weights; 0 only with --weights).", minimum=0)
    sparse_epochs: int = setting(8, "Sparse-training epochs.", minimum=0)
    sparsity_lambda: float = setting(1e-3, "L1 weight on BN gammas during sparse training.", minimum=0)
    prune_ratio: float = setting(0.6, "Fraction of prunable channels removed (global threshold).")
    target_macs: float | None = setting(None, "Fraction of MACs to remove (0.5 halves them); replaces --prune-ratio.")
    target_latency: float | None = setting(None, "Prune to at most this fraction of the model's latency predicted from per-layer tables measured "
                                                 "in --latency-runtime (0.4: 40%); replaces --prune-ratio.")
    latency_runtime: str = setting("onnxruntime", "Runtime the per-layer latency tables of --target-latency are measured in (cached per machine); "
                                                  "tensorrt: the tables imported from the --target device (`edgecompress latency-bundle`).",
                                   choices=latency_runtime_names)
    prune_layers: int = setting(0, "Residual blocks (x + f(x)) to replace by identity before channel pruning.", minimum=0)
    criterion: str = setting("bn-gamma", "Channel importance criterion.", choices=criterion_names)
    strategy: str = setting("global", "How the criterion's scores become removed channels: one global plan, or several passes.",
                            choices=strategy_names)
    min_channels: int = setting(8, "Channels every layer keeps at least.")
    round_to: int = setting(8, "Kept channels are rounded up to a multiple of this.")
    ignore: tuple[str, ...] = setting((), "Module names never pruned nor quantized (repeatable).")
    finetune_epochs: int = setting(8, "Fine-tuning epochs after pruning.", minimum=0)
    qat_epochs: int = setting(2, "Quantization-aware training epochs after calibration.", minimum=0)
    distill: bool = setting(True, "Knowledge distillation: the unpruned (sparse-trained) model teaches the pruned one during fine-tuning, "
                                  "and the float fine-tuned model its int8 twin during QAT, on the same batches (bench/train_bench.py: "
                                  "+0.8 point int8 mAP50-95 at the default prune ratio, for about 20% longer fine-tuning).")
    distill_weight: float = setting(1.0, "Weight of the distillation term against the task loss (--distill); each task's term is in its "
                                         "loss's units, so 1 weighs the teacher as much as the labels.", minimum=0)
    quantize_prediction_layers: bool = setting(False, "Quantize a detector's final box/class convs too; by default they stay float, "
                                                      "as NVIDIA's and Ultralytics' QAT recipes keep them.")
    max_drop: float | None = setting(None, "Keep the most quantization-sensitive layers in float until int8 is within this metric drop (e.g. 0.01).", minimum=0)
    calib_method: str = setting("mse", "Activation calibrator.", choices=calibrator_names)
    calib_images: int = setting(256, "Calibration images used (spread over the folder).", minimum=1)
    train_images: int = setting(2000, "Training images of the bundled dataset (and the limit of a --quick run on yours).", minimum=1)
    val_images: int = setting(400, "Validation images of the bundled dataset.", minimum=1)
    profile_runs: int = setting(100, "Timed runs per model, round and runtime.", minimum=1)
    profile_rounds: int = setting(3, "Interleaved profiling rounds (each model once per round).", minimum=1)
    profile_runtimes: tuple[str, ...] = setting(("onnxruntime",), "CPU runtime the report times the models in (repeatable).", choices=runtime_names, flag="--profile-runtime")
    profile_batch: int = setting(1, "Batch size of the report's timed inputs: 1 for latency, larger for throughput.", minimum=1)
    profile_layers: int = setting(10, "Slowest layers per model and runtime in the report's 'Where the time goes' section, timed by the "
                                      "runtime's own profiler (0: no per-layer profiling).", minimum=0)
    device: str = setting("auto", "Where training, calibration and evaluation run: auto (a GPU when torch sees one, else the CPU), cpu, cuda "
                                  "or cuda:N. Export and the report's timings always run on the CPU.")
    amp: bool = setting(False, "Mixed precision for the float training stages on a GPU (bf16 where supported, else fp16 with a gradient "
                               "scaler); never for QAT. No effect on the CPU: autocast is not applied there.")
    ema: bool = setting(True, "Keep an exponential moving average of the weights while training the baseline and fine-tuning, as YOLO "
                              "trainers do, and evaluate and save it: decay 0.9999 ramped in over about 2000 steps (README). Not for sparse "
                              "training, whose raw BN gammas the pruner reads, nor QAT, which keeps its best epoch instead.")
    gpus: int | None = setting(None, "Train on this many GPUs of this machine with DistributedDataParallel: reruns this command under "
                                     "`torchrun --standalone --nproc_per_node N`. For several machines, or processes on the CPU (gloo), "
                                     "start `torchrun ... -m edgecompress build` yourself.", minimum=1)
    seed: int = setting(0, "Seed of every random choice (weights, shuffles, augmentations, example inputs).", minimum=0)
    quick: bool = setting(False, "Tiny data and one epoch per stage: a smoke run of a few minutes.")
    from_stage: str | None = setting(None, "Rerun from this stage on, even if finished (the pipeline checks the name).", flag="--from")

    def resolved(self) -> BuildConfig:
        """Apply ``quick`` to the settings left at their defaults, and the default name."""
        from .targets import get_target

        config = replace(self, target=get_target(self.target).name)  # an alias becomes the registry name
        if config.lr is None:
            config = replace(config, lr=SCRATCH_LR if config.weights is None else TRAINED_LR)
        if self.quick:
            defaults = BuildConfig()
            config = replace(config, **{k: v for k, v in QUICK.items() if getattr(config, k) == getattr(defaults, k)})
        if config.name is None:
            config = replace(config, name=f"{Path(config.model).stem.split(':')[0]}-{config.target}" + ("-quick" if self.quick else ""))
        return config

    def check(self) -> None:
        """Reject bad settings before any stage runs, rather than after minutes of training."""
        from .profile.runtimes import get_runtime
        from .prune.plan import check_arguments
        from .targets import get_target
        from .train import resolve_device

        check_settings(replace(self, target=get_target(self.target).name))  # a target alias is fine here too
        device = resolve_device(self.device)  # a GPU asked for on a machine without one
        if self.gpus is not None:
            _check_gpus(self.gpus, device)
        check_arguments(self.prune_ratio, self.criterion, self.min_channels, self.round_to)
        if self.target_macs is not None and not 0 < self.target_macs < 1:
            raise EdgeCompressError(f"--target-macs must be in (0, 1), got {self.target_macs}; 0.5 removes half the MACs")
        if self.target_latency is not None and not 0 < self.target_latency < 1:
            raise EdgeCompressError(f"--target-latency must be in (0, 1), got {self.target_latency}; 0.4 keeps 40% of the predicted latency")
        if self.target_latency is not None and self.target_macs is not None:
            raise EdgeCompressError("pass one of --target-macs and --target-latency, not both")
        if self.target_latency is not None:
            _check_latency_runtime(self.latency_runtime, self.target)
            if self.strategy != "global":
                raise EdgeCompressError(f"--target-latency plans in one pass: use --strategy global (got {self.strategy})")
        if self.lr is not None and not 0 < self.lr < float("inf"):
            raise EdgeCompressError(f"--lr must be a positive number, got {self.lr}; the default is {SCRATCH_LR} ({TRAINED_LR} with --weights)")
        if self.epochs == 0 and self.weights is None:
            raise EdgeCompressError("--epochs 0 without --weights would ship an untrained model; pass --weights FILE or --epochs >= 1")
        if self.weights is not None and not Path(self.weights).is_file():
            raise EdgeCompressError(f"--weights file {self.weights} not found; pass the path of a saved state dict")
        if self.calib is not None and not Path(self.calib).is_dir():
            raise EdgeCompressError(f"--calib folder {self.calib} not found; pass a folder of a few hundred images from your deployment data")
        check_training_memory(self.image_size, self.batch_size, self.batch_size * 3 * self.image_size**2 * 4 * MIN_ACTIVATIONS_PER_INPUT)
        _check_zoo_task(self.model, self.task)
        if not self.profile_runtimes:
            raise EdgeCompressError("--profile-runtime needs at least one runtime; the default is onnxruntime")
        for runtime in self.profile_runtimes:
            get_runtime(runtime)  # its package is installed


# Default peak learning rates: from scratch, and from a trained model (--weights). An Ultralytics YOLOv8n trained on
# the digits set (mAP50 0.781) scored 0.177 after one sparse epoch at 0.01, 0.739 at 0.001 (bench/RESULTS.md).
SCRATCH_LR, TRAINED_LR = 1e-2, 1e-3

# One training batch holds at least this many times its input batch (float32): the activations
# autograd saves for backward. The zoo's CNNs save 80-600x; a CNN with BatchNorm saves several times
# its input in its first layer alone. Run.preflight measures the real model's.
MIN_ACTIVATIONS_PER_INPUT = 8


def check_training_memory(image_size: int, batch_size: int, needed: float, *, estimate: str = "at least") -> None:
    """Refuse a build whose one training batch needs more memory than is available now, naming the two flags that set it."""
    import psutil

    available = psutil.virtual_memory().available
    if needed > available:
        raise EdgeCompressError(
            f"--image-size {image_size} with --batch-size {batch_size} needs {estimate} {_gigabytes(needed)} of memory for one "
            f"training batch, but {_gigabytes(available)} is available; lower --image-size or --batch-size"
        )


def _gigabytes(count: float) -> str:
    return f"{count / 2**30:,.1f} GiB"


def _check_gpus(gpus: int, device: Any) -> None:
    """``--gpus N`` needs N GPUs here, or agrees with the torchrun that started this process."""
    import torch

    from .train.distributed import launched_by_torchrun

    if launched_by_torchrun():
        started = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        if started != gpus:
            raise EdgeCompressError(f"--gpus {gpus}, but torchrun started {started} processes on this machine; drop --gpus under torchrun, "
                                    "or make the two agree")
        return
    found = torch.cuda.device_count() if device.type == "cuda" else 0
    if found < gpus:
        seen = f"torch sees {found}" if found else "--device is the CPU" if torch.cuda.is_available() else f"torch {torch.__version__} sees none"
        fix = f"pass --gpus {found} or fewer" if found else "drop --gpus"
        raise EdgeCompressError(f"--gpus {gpus} needs {gpus} GPUs, but {seen}; {fix}, or for processes on the CPU (gloo) run "
                                f"`torchrun --nproc_per_node {gpus} -m edgecompress build ...`")


def _check_zoo_task(model: str, task: str) -> None:
    """A zoo model is built for one task; asking for another fails here, not after training."""
    from .models import ZOO
    from .tasks import TASKS

    entry = ZOO.get(model)
    if entry is None or entry.task == task:
        return
    fix = f"pass --task {entry.task}" if entry.task in TASKS else f"no build task handles {entry.task} models yet; use the pruning API"
    raise EdgeCompressError(f"zoo model {model} is a {entry.task} model, not {task}; {fix}")


# The --quick profile (tests and smoke runs): tiny data and one epoch per stage.
QUICK = dict(epochs=1, sparse_epochs=1, finetune_epochs=1, qat_epochs=1, train_images=96, val_images=32,
             calib_images=32, profile_runs=20, profile_rounds=1, batch_size=16)
