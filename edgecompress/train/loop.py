"""The training loop: fit a model in place with one optimizer and learning-rate schedule.

Adam with a cosine-annealed learning rate (the patent's recipe), linear warm-up, gradient clipping,
an optional L1 penalty on BatchNorm gammas (network slimming), parameter groups with their own
settings (e.g. learned quantizer ranges at their own learning rate), and a checkpoint after every
epoch so interrupted training resumes where it stopped.

A checkpoint holds only tensors and plain data (state dicts, the epochs' records, the moving average and the best
weights so far where kept, and the random states of torch and of the loader's shuffle, so a resumed run draws and
ends with what an uninterrupted one would) and is read with
``weights_only=True``, so nothing in it can run. One that cannot be used (truncated by a crash,
corrupt, foreign, or not matching the model) is ignored with one warning: the stage trains from its
first epoch and overwrites it after that epoch. Checkpoints are written from CPU copies of the state,
so one written on a GPU loads on a machine without one.

``device`` moves the model and every batch (images and targets) there; ``amp`` runs the forward pass
under ``torch.autocast`` on a GPU (bf16 where supported, else fp16 with a gradient scaler) and the loss
in float32. On the CPU ``amp`` changes nothing. Callers never pass ``amp`` for QAT: fake quantization
must compute exactly what the deployed int8 model will.

With ``config.ema`` the loop keeps an exponential moving average of the weights (:mod:`.ema`); validation measures
the average, and the model ends with it. With ``validate`` every epoch's weights (and the starting ones) are
measured on the validation set; with ``keep_best`` the model ends with the best of them, the starting weights
included, so training that only makes the model worse (as QAT can) leaves it as it was. Every epoch's loss,
learning rate, seconds and validation metrics are in the returned :class:`~.history.TrainHistory`.

Under torchrun (see :mod:`edgecompress.train.distributed`) the same call trains with DistributedDataParallel:
each process reads its share of every batch, gradients are averaged over the processes, and with the sparsity
penalty on every BatchNorm is synchronised, so the step is the one a single process takes on the whole batch
(every process adds the same penalty, whose averaged gradient is its own). Only rank 0 reads and writes the
checkpoint; it hands what it read to the other processes, so every process resumes from the same state, each
with its own random states. Validation runs on rank 0, which hands the metrics to the others, so every process
keeps the same weights.

The penalty is the patent's: loss += lambda * sum|gamma| over the BNs of prunable channels. Under
Adam, lambda weighs the L1 subgradient against the task gradient of each gamma (Adam normalises
their sum), so gammas whose task gradient is weaker than lambda collapse to about zero.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from ..artifacts import UnsafeFileError, atomic_path, read_plain
from ..errors import EdgeCompressError
from ..helpers import evaluating, model_device
from ..progress import progress_bar, track
from . import distributed
from .device import autocast_dtype, map_tensors, resolve_device, to_device
from .ema import EMA_DECAY, EMA_RAMP_STEPS, weight_ema
from .history import EpochRecord, TrainHistory

LossFn = Callable[[object, Tensor], Tensor]
Validate = Callable[[nn.Module], dict[str, float]]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run."""

    epochs: int
    lr: float = 4e-3
    weight_decay: float = 5e-4
    warmup_steps: int = 50
    sparsity_lambda: float = 0.0
    grad_clip: float = 10.0
    ema: bool = False  # validate and end with the moving average of the weights (see .ema)
    ema_decay: float = EMA_DECAY
    ema_ramp: float = EMA_RAMP_STEPS  # optimizer steps


def bn_l1(batchnorms: Sequence[nn.BatchNorm2d]) -> Tensor:
    """Sum of |gamma| over ``batchnorms``: the network-slimming sparsity penalty."""
    return sum(bn.weight.abs().sum() for bn in batchnorms)


def _optimizer(model: nn.Module, config: TrainConfig, param_groups: Sequence[dict[str, Any]] = ()) -> torch.optim.Optimizer:
    """AdamW; weight decay on weight matrices and kernels only; ``param_groups`` keep their own settings (no decay unless set)."""
    own = [{"weight_decay": 0.0, **group, "params": _group_params(group)} for group in param_groups]
    in_own_group = {id(p) for group in own for p in group["params"]}
    trainable = [p for p in model.parameters() if p.requires_grad and id(p) not in in_own_group]
    groups = [{"params": [p for p in trainable if p.ndim > 1], "weight_decay": config.weight_decay},
              {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups + own, lr=config.lr)


def _group_params(group: dict[str, Any]) -> list[Tensor]:
    params = group.get("params")
    if params is None:
        raise EdgeCompressError(f"a parameter group needs a 'params' entry, got keys {sorted(group)}")
    return [params] if isinstance(params, Tensor) else list(params)


def _lr_factor(step: int, total: int, config: TrainConfig) -> float:
    """The schedule: linear warm-up, then cosine annealing to 2%, as a fraction of each group's base learning rate."""
    warmup = min(config.warmup_steps, max(total // 4, 1))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress))


def _random_states(loader: Iterable) -> dict[str, Tensor]:
    """torch's global random state and the loader's shuffle generator's, if it has one (augmentations are drawn per epoch and sample)."""
    generator = distributed.shuffle_generator(loader)
    return {"torch": torch.get_rng_state(), **({"loader": generator.get_state()} if generator is not None else {})}


def _restore_random_states(loader: Iterable, states: dict[str, Tensor] | list[dict[str, Tensor]]) -> None:
    """This process's entry of the random states a checkpoint holds, one per process that wrote it (one dict in older ones)."""
    states = [states] if isinstance(states, dict) else states
    if len(states) != distributed.world_size():
        warnings.warn(f"the checkpoint was written by {len(states)} training process(es), this run has {distributed.world_size()}: "
                      "shuffles and augmentations from here differ from an uninterrupted run", stacklevel=4)
        return
    own = states[distributed.rank()]
    torch.set_rng_state(own["torch"])
    generator = distributed.shuffle_generator(loader)
    if generator is not None and "loader" in own:
        generator.set_state(own["loader"])


_FRESH = "ignoring it: training starts from epoch 1 and replaces it"


def _read_checkpoint(checkpoint: Path) -> dict[str, Any] | None:
    """The state in ``checkpoint``; None, with a warning, when it cannot be read."""
    try:
        return read_plain(checkpoint, what="resume checkpoint", fix=_FRESH)
    except UnsafeFileError as error:  # fit() never writes one that needs code
        warnings.warn(f"{error}; {_FRESH}", stacklevel=4)
    except EdgeCompressError as error:
        warnings.warn(str(error), stacklevel=4)
    return None


def _resume(model: nn.Module, optimizer: torch.optim.Optimizer, ema: AveragedModel | None, state: dict[str, Any], checkpoint: Path,
            loader: Iterable, keep_best: bool) -> tuple[TrainHistory, dict[str, Tensor] | None] | None:
    """Load a checkpoint's ``state`` into the model, optimizer and weight average; the history it recorded and, with
    ``keep_best``, the best weights so far. None, with a warning and all three untouched, when it does not fit."""
    before = _cpu_copy(model.state_dict())
    ema_before = _cpu_copy(ema.state_dict()) if ema is not None else None
    try:
        records = [EpochRecord.from_dict(record) for record in state["epochs"]]
        kept, kept_epoch = (state["kept_model"], int(state["kept_epoch"])) if keep_best else (None, None)
        history = TrainHistory(records, resumed_from_epoch=len(records), start_metrics=dict(state["start_metrics"]), kept_epoch=kept_epoch)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        if "random" in state:
            _restore_random_states(loader, state["random"])
    except Exception as exc:  # a checkpoint of another model, layout or setting: keys, shapes or groups differ
        model.load_state_dict(before)
        if ema is not None:
            ema.load_state_dict(ema_before)
        warnings.warn(f"resume checkpoint {checkpoint} does not fit this training ({type(exc).__name__}); {_FRESH}", stacklevel=3)
        return None
    return history, kept


def fit(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    loss_fn: LossFn,
    config: TrainConfig,
    *,
    sparse_batchnorms: Sequence[nn.BatchNorm2d] = (),
    param_groups: Sequence[dict[str, Any]] = (),
    checkpoint: Path | None = None,
    description: str = "train",
    device: str | torch.device | None = None,
    amp: bool = False,
    validate: Validate | None = None,
    keep_best: str | None = None,
) -> TrainHistory:
    """Train ``model`` in place; with ``checkpoint`` set, resume from it and rewrite it after each epoch.

    ``param_groups`` are torch optimizer groups (``{"params": [...], "lr": ...}``) for parameters
    that need their own settings; their ``lr`` (default ``config.lr``) follows the same schedule,
    and their weight decay is 0 unless the group sets it. Every other trainable parameter of
    ``model`` goes in the default groups.

    ``device`` (a name :func:`~edgecompress.train.device.resolve_device` reads, or None for the model's
    own) is where the model trains and stays; ``amp`` is mixed precision there, a no-op on the CPU.

    ``validate(module) -> metrics`` measures a module (in eval mode, without gradients) on validation data: the
    starting weights and every epoch's (the moving average's with ``config.ema``). With ``keep_best``, one of those
    metrics (higher is better), the model ends with the best weights measured, the starting ones included; a tie
    keeps the earlier.
    """
    if keep_best is not None and validate is None:
        raise EdgeCompressError(f"keep_best={keep_best!r} needs validate, the function that measures it")
    device = model_device(model) if device is None else resolve_device(device)
    model.to(device)
    precision = autocast_dtype(device) if amp else None
    scaler = torch.amp.GradScaler(device.type, enabled=precision == torch.float16)  # bf16 needs no scaling
    optimizer = _optimizer(model, config, param_groups)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    ema = weight_ema(model, config.ema_decay, config.ema_ramp) if config.ema else None
    measured = model if ema is None else ema.module
    history, kept = TrainHistory(), None
    penalty = bool(config.sparsity_lambda and sparse_batchnorms)
    with distributed.data_parallel(model, loader, device, sync_batchnorm=penalty) as (trained, loader):
        if checkpoint is not None:
            state = distributed.from_main_process(lambda: _read_checkpoint(Path(checkpoint)) if Path(checkpoint).exists() else None)
            resumed = _resume(model, optimizer, ema, state, Path(checkpoint), loader, keep_best is not None) if state is not None else None
            if resumed is not None:
                history, kept = resumed
        if validate is not None and history.resumed_from_epoch == 0:
            history.start_metrics = _validate(validate, measured, keep_best)
            if keep_best is not None:
                history.kept_epoch, kept = 0, _cpu_copy(measured.state_dict())
        steps_per_epoch = len(loader)
        total_steps = config.epochs * steps_per_epoch
        model.train()
        with progress_bar() as progress:
            task = progress.add_task(description, total=total_steps, completed=history.resumed_from_epoch * steps_per_epoch, loss=float("nan"))
            for epoch in range(history.resumed_from_epoch, config.epochs):
                distributed.set_epoch(loader, epoch)
                started, running = time.perf_counter(), 0.0
                for i, (images, targets) in enumerate(loader):
                    images, targets = to_device((images, targets), device)
                    step = epoch * steps_per_epoch + i
                    factor = _lr_factor(step, total_steps, config)
                    for group, base_lr in zip(optimizer.param_groups, base_lrs):
                        group["lr"] = base_lr * factor
                    if precision is None:
                        loss = loss_fn(trained(images), targets)
                    else:
                        with torch.autocast(device.type, dtype=precision):
                            outputs = trained(images)
                        loss = loss_fn(map_tensors(outputs, _float32), targets)
                    if penalty:
                        loss = loss + config.sparsity_lambda * bn_l1(sparse_batchnorms)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)  # clip the true gradients
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    if ema is not None:
                        ema.update_parameters(model)
                    running += loss.item()
                    progress.update(task, advance=1, loss=running / (i + 1), description=f"{description} {epoch + 1}/{config.epochs}")
                record = EpochRecord(epoch + 1, running / max(steps_per_epoch, 1), optimizer.param_groups[0]["lr"], time.perf_counter() - started)
                if validate is not None:
                    record.metrics = _validate(validate, measured, keep_best)
                history.epochs.append(record)
                if keep_best is not None and record.metrics[keep_best] > history.metrics_of(history.kept_epoch)[keep_best]:
                    history.kept_epoch, kept = record.epoch, _cpu_copy(measured.state_dict())
                if checkpoint is not None:
                    _save_checkpoint(Path(checkpoint), model, optimizer, history, ema, kept, distributed.gather_objects(_random_states(loader)))
    if ema is not None:
        model.load_state_dict(ema.module.state_dict())
    if kept is not None:
        model.load_state_dict(kept)
    model.eval()
    return history


def _validate(validate: Validate, module: nn.Module, keep_best: str | None) -> dict[str, float]:
    """``validate(module)`` in eval mode, measured on rank 0 and handed to every process; ``keep_best`` must be among the metrics."""

    def measure() -> dict[str, float]:
        with evaluating(module):
            return {name: float(value) for name, value in validate(module).items()}

    metrics = distributed.from_main_process(measure)
    if keep_best is not None and keep_best not in metrics:
        raise EdgeCompressError(f"keep_best={keep_best!r} is not among the metrics validate returns ({', '.join(metrics)}); pass one of those")
    return metrics


def _cpu_copy(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A copy of a state dict on the CPU, untouched by further training."""
    return {key: value.detach().to("cpu", copy=True) for key, value in state.items()}


def _save_checkpoint(checkpoint: Path, model: nn.Module, optimizer: torch.optim.Optimizer, history: TrainHistory, ema: AveragedModel | None,
                     kept: dict[str, Tensor] | None, random: list[dict[str, Tensor]]) -> None:
    """Write the training state (from CPU copies, so it loads on a machine without a GPU), on rank 0 only."""
    if not distributed.is_main_process():
        return
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epochs": history.plain(), "start_metrics": history.start_metrics,
             "kept_epoch": history.kept_epoch, "random": random}
    if ema is not None:
        state["ema"] = ema.state_dict()
    if kept is not None:
        state["kept_model"] = kept
    with atomic_path(checkpoint) as tmp:
        torch.save(to_device(state, torch.device("cpu")), tmp)


def accumulate_gradients(model: nn.Module, loader: Iterable, loss_fn: LossFn, *, batches: int, device: str | torch.device | None = None,
                         description: str = "gradients") -> None:
    """Sum the gradients of ``loss_fn`` over the first ``batches`` batches of ``loader`` into ``model``'s ``.grad``, in
    training mode on ``device``, for criteria that score channels from gradients. Under torchrun every process reads
    its share of each batch and the sum is averaged over the processes once, at the last batch."""
    device = model_device(model) if device is None else resolve_device(device)
    model.to(device).train()
    model.zero_grad(set_to_none=True)
    with distributed.data_parallel(model, loader, device) as (module, loader):
        count = min(batches, len(loader))
        for i, batch in enumerate(track(itertools.islice(loader, count), description, total=count)):
            images, targets = to_device(batch, device)
            with distributed.gradient_sync(module, enabled=i == count - 1):
                loss_fn(module(images), targets).backward()


def _float32(tensor: Tensor) -> Tensor:
    """An autocast output in float32, so the loss is computed at full precision."""
    return tensor.float() if tensor.is_floating_point() else tensor
