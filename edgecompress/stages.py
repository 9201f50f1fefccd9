"""The eight build stages, each ``(run, folder) -> StageOutcome``, and the settings whose change reruns them."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch
from torch import nn

from .artifacts import save_model, write_json, write_text
from .outcomes import (EngineOutcome, ExportedModel, ExportOutcome, GammaHistogram, ModelOutcome, PruneOutcome, QuantOutcome,
                       ReportOutcome, SparseOutcome, StageOutcome)
from .progress import console, status, track
from .run import Run
from .stats import model_stats
from .tasks import onnx_predict, torch_predict
from .train.device import pin_memory, resolve_device
from .train.distill import distilling
from .train.distributed import from_main_process, is_main_process
from .train.history import TrainHistory, write_train_csv
from .train.loop import LossFn, TrainConfig, Validate, accumulate_gradients, fit

if TYPE_CHECKING:
    from .profile import LatencyTables
    from .prune import LatencyPrediction


def _device(run: Run) -> torch.device:
    """Where the build trains, calibrates and evaluates (``--device``); on a GPU its loaders hand out pinned batches."""
    device = resolve_device(run.config.device)
    pin_memory((run.data.train, run.data.val), device)
    return device


def _evaluate(run: Run, model: nn.Module, quiet: bool = False) -> dict[str, float]:
    """The task's metrics of ``model``, measured on the model's device."""
    metrics = run.task.evaluate(torch_predict(model), model, run.data.val)
    if not quiet:
        console.print("  " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return metrics


def _size(run: Run, model: nn.Module) -> dict[str, int]:
    stats = model_stats(model, run.example_input())
    return {"params": stats.params, "macs": stats.macs}


TRAIN_LOG = "train.csv"


def _train(run: Run, model: nn.Module, folder: Path, config: TrainConfig, description: str, sparse=(), amp: bool = False,
           loss_fn: LossFn | None = None, validate: Validate | None = None, keep_best: str | None = None) -> TrainHistory:
    """Train ``model`` on the build's device (where it stays), resuming from the stage's checkpoint, with ``loss_fn`` (default:
    the task's loss); the history, whose epochs are also written to the stage's ``train.csv`` (see :func:`_train_log`)."""
    history = fit(model, run.data.train, loss_fn or run.task.loss(model), config, sparse_batchnorms=sparse, checkpoint=folder / "checkpoint.pt",
                  description=description, device=_device(run), amp=amp, validate=validate, keep_best=keep_best)
    if is_main_process():
        (folder / "checkpoint.pt").unlink(missing_ok=True)
        if history.epochs:
            write_train_csv(history.rows(), folder / TRAIN_LOG)
    return history


def _train_log(history: TrainHistory) -> dict[str, str]:
    """The stage output naming its ``train.csv`` (one row per epoch: epoch, loss, lr, seconds, validation metrics), if it trained."""
    return {"train_log": TRAIN_LOG} if history.epochs else {}


def _save(model: nn.Module, path: Path) -> None:
    """Move the model to the CPU and save it there, from rank 0 only: in a distributed build the others read rank 0's file."""
    model.cpu()
    if is_main_process():
        save_model(model, path)


def baseline(run: Run, folder: Path) -> ModelOutcome:
    """Load ``--weights`` or train the model from scratch; evaluate it."""
    from .graph import analyze
    from .models import resolve_model

    config = run.config
    model = resolve_model(config.model, num_classes=run.data.num_classes, weights=config.weights, trust=config.trust_model)
    analyze(model, run.example_input(), ignore=config.ignore)  # a model the pruner cannot handle fails before training
    run.task.check_model(model)
    history = TrainHistory()
    if config.weights is None and config.epochs > 0:
        run.task.prepare(model, run.data)
        history = _train(run, model, folder, TrainConfig(config.epochs, lr=config.lr, ema=config.ema), "baseline", amp=config.amp)
    scores = _evaluate(run, model.to(_device(run)))
    _save(model, folder / "model.pt")
    return ModelOutcome(outputs={"model": "model.pt", **_train_log(history)}, scores=scores, **_size(run, model), epochs=history.rows())


def _gammas(batchnorms: list[nn.BatchNorm2d]) -> np.ndarray:
    return torch.cat([bn.weight.detach().abs().flatten() for bn in batchnorms]).cpu().numpy() if batchnorms else np.zeros(1)


def sparse(run: Run, folder: Path) -> SparseOutcome:
    """Sparse training: the task loss plus lambda * sum|gamma| over the BNs of prunable channels."""
    from .prune import prunable_batchnorms
    from .report import plot_gamma_distribution

    config = run.config
    model = run.load_stage_model("baseline")
    batchnorms = [bn for _, bn in prunable_batchnorms(model, run.example_input(), ignore=config.ignore)]
    before = _gammas(batchnorms)
    history = _train(run, model, folder, TrainConfig(config.sparse_epochs, lr=config.lr, sparsity_lambda=config.sparsity_lambda), "sparse",
                     sparse=batchnorms, amp=config.amp)
    after = _gammas(batchnorms)
    if is_main_process():
        plot_gamma_distribution(before, after, folder / "gamma_histogram.png")
    hist_before, hist_after = GammaHistogram.of(before), GammaHistogram.of(after)
    console.print(f"  BN gammas below 0.01: {hist_before.fraction_below_001:.1%} -> {hist_after.fraction_below_001:.1%} of {after.size} channels")
    scores = _evaluate(run, model)
    _save(model, folder / "model.pt")
    return SparseOutcome(outputs={"model": "model.pt", "gamma_plot": "gamma_histogram.png", **_train_log(history)}, scores=scores,
                         gamma_before=hist_before, gamma_after=hist_after, epochs=history.rows())


def _accumulate_gradients(run: Run, model: nn.Module, batches: int = 8) -> None:
    """Sum the task loss's gradients over a few training batches, on the build's device, for criteria that need
    gradients; the model (gradients included) comes back to the CPU, where pruning is planned."""
    accumulate_gradients(model, run.data.train, run.task.loss(model), batches=batches, device=_device(run), description="gradients for the criterion")
    model.cpu()


def _train_between_passes(run: Run) -> Callable[[nn.Module, int], None]:
    """Train a model in place for some epochs on the build's device (lr as fine-tuning), for strategies that train
    between or during pruning passes; the model comes back to the CPU."""

    def train(model: nn.Module, epochs: int) -> None:
        fit(model, run.data.train, run.task.loss(model), TrainConfig(epochs, lr=run.config.lr), description="pruning pass",
            device=_device(run), amp=run.config.amp)
        model.cpu()

    return train


def prune_stage(run: Run, folder: Path) -> PruneOutcome:
    """Optionally drop the weakest residual blocks, then remove the least important channels, physically, by the
    build's strategy (one global plan by default)."""
    from .data.calib import calib_batches
    from .prune import PruneJob, get_criterion, get_strategy, prune_layers, summarize_passes

    config = run.config
    criterion, strategy = get_criterion(config.criterion), get_strategy(config.strategy)
    model = run.load_stage_model("sparse")
    example = run.example_input()
    removed_blocks: list[str] = []
    if config.prune_layers:
        with status("scoring residual blocks"):
            removed_blocks = prune_layers(model, example, n=config.prune_layers, criterion=criterion, ignore=config.ignore)
        console.print(f"  replaced {len(removed_blocks)} residual blocks by identity: {', '.join(removed_blocks)}")
    goal = {"target_macs": config.target_macs} if config.target_macs is not None else {"ratio": config.prune_ratio}
    data = list(calib_batches(run.calibration_images(), config.batch_size)) if criterion.needs_data or strategy.needs_data else None
    tables, dense = None, None
    if config.target_latency is not None:
        goal, tables, dense = {"target_latency": config.target_latency}, _latency_tables(run, model), copy.deepcopy(model)
    job = PruneJob(example, **goal, criterion=criterion, ignore=config.ignore, min_channels=config.min_channels, round_to=config.round_to, data=data,
                   gradients=lambda m: _accumulate_gradients(run, m), train=_train_between_passes(run), latency_tables=tables)
    with status(f"pruning ({strategy.name} strategy, {criterion.name} criterion)"):
        plans = strategy.prune(model, job)
    model.zero_grad(set_to_none=True)
    measure = dense is not None and plans[-1].latency and is_main_process()  # only rank 0's outcome is written
    latency = _predicted_and_measured(run, dense, model, plans[-1].latency) if measure else None
    scores = _evaluate(run, model.to(_device(run)))
    _save(model, folder / "model.pt")
    return PruneOutcome(outputs={"model": "model.pt"}, scores=scores, **_size(run, model), plan=summarize_passes(plans, job),
                        removed_blocks=removed_blocks, latency=latency)


# End-to-end check of a latency-budget plan: few timed runs, enough for a median next to the prediction.
LATENCY_CHECK_RUNS, LATENCY_CHECK_ROUNDS = 20, 2


def _latency_tables(run: Run, model: nn.Module) -> LatencyTables:
    """The model's per-layer latency tables (:meth:`Run.latency_table_options`; cached per machine, or imported from the
    device); measured by rank 0 alone under torchrun, so every process plans the same cuts."""
    from .profile import measure_latency_tables

    tables = from_main_process(lambda: measure_latency_tables(model, run.example_input(), **run.latency_table_options()))
    console.print(f"  latency tables ({tables.describe()}): {tables.measured_points} points measured, {tables.cached_points} from the cache")
    return tables


def _predicted_and_measured(run: Run, dense: nn.Module, pruned: nn.Module, prediction: LatencyPrediction) -> dict:
    """The plan's predicted latency next to the dense and pruned models' measured end to end (fp32 ONNX in ``--latency-runtime``);
    with tables imported from the device, the prediction alone (the engine bundle times the model there)."""
    import tempfile

    from .export import export_onnx
    from .profile import compare_models

    example, runtime = run.example_input(), run.config.latency_runtime
    predicted = prediction.summary()
    if run.imported_latency_tables:
        console.print(f"  latency: predicted {predicted['predicted_fraction']:.0%} of dense from the {prediction.tables} tables; "
                      "the engine bundle measures it on the device")
        return {**predicted, "runtime": runtime, "dense_measured_ms": None, "measured_ms": None, "measured_fraction": None}
    with tempfile.TemporaryDirectory(prefix="edgecompress-latency-") as folder:
        paths = {label: export_onnx(model, example, Path(folder) / f"{label}.onnx") for label, model in (("dense", dense), ("pruned", pruned))}
        with status(f"timing the dense and pruned models in {runtime}"):
            stats = compare_models(paths, tuple(example.shape), runs=LATENCY_CHECK_RUNS, rounds=LATENCY_CHECK_ROUNDS, runtime=runtime)
    dense_ms, pruned_ms = stats["dense"].median_ms, stats["pruned"].median_ms
    console.print(f"  latency: predicted {predicted['predicted_fraction']:.0%} of dense, measured {pruned_ms / dense_ms:.0%} "
                  f"({pruned_ms:.3f} of {dense_ms:.3f} ms in {runtime})")
    return {**predicted, "runtime": runtime, "dense_measured_ms": dense_ms, "measured_ms": pruned_ms, "measured_fraction": pruned_ms / dense_ms}


@contextmanager
def _distillation(run: Run, student: nn.Module, teacher_stage: str) -> Iterator[LossFn | None]:
    """With ``--distill``: the training loss of ``student`` with the distillation term, ``teacher_stage``'s model teaching it
    on the same batches (on the build's device; under autocast when the stage trains with it). Without: None, the task's loss."""
    config = run.config
    if not config.distill:
        yield None
        return
    teacher = run.load_stage_model(teacher_stage).to(_device(run))
    console.print(f"  distilling from the {teacher_stage} model (weight {config.distill_weight:g})")
    with distilling(student, teacher, run.task.loss(student), run.task.distillation_loss(student), weight=config.distill_weight) as loss_fn:
        yield loss_fn


def finetune(run: Run, folder: Path) -> ModelOutcome:
    """Fine-tune the pruned model to recover accuracy; with ``--distill`` the model it was pruned from (the sparse-trained
    one: the student is a channel subset of it, so it can match it) teaches it."""
    config = run.config
    model = run.load_stage_model("prune")
    with _distillation(run, model, "sparse") as loss_fn:
        history = _train(run, model, folder, TrainConfig(config.finetune_epochs, lr=config.lr, ema=config.ema), "finetune", amp=config.amp,
                         loss_fn=loss_fn)
    scores = _evaluate(run, model)
    _save(model, folder / "model.pt")
    return ModelOutcome(outputs={"model": "model.pt", **_train_log(history)}, scores=scores, **_size(run, model), epochs=history.rows())


def quantize_stage(run: Run, folder: Path) -> QuantOutcome:
    """Fold BN, insert int8 fake-quant in the target's Q/DQ layout, calibrate on the calibration images, then train a few epochs.

    With ``max_drop`` set, a sensitivity analysis first keeps the layers whose int8 version costs
    most accuracy in float until the calibrated model is within ``max_drop`` of the float one.
    Layers are swapped on the CPU (BN folding is checked there); calibration and QAT run on the build's
    device, QAT without mixed precision, so fake quantization computes what the int8 engine will. With
    ``--distill`` the float fine-tuned model teaches its int8 twin during QAT.
    """
    from .data.calib import calib_batches
    from .quant import calibrate, default_float_layers, quantize_model
    from .quant.sensitivity import analyze_sensitivity

    config, target = run.config, run.target
    if not target.int8:
        return QuantOutcome(skipped=f"{target.name} has no int8 support in TensorRT {target.tensorrt}; deploying the pruned model in {target.precision}")
    model = run.load_stage_model("finetune")
    backend = target.qdq_backend
    images = run.calibration_images()
    outputs, ranges, kept_float = {"model": "model.pt"}, None, None
    float_layers = () if config.quantize_prediction_layers else default_float_layers(model)
    if config.max_drop is None:
        model = quantize_model(model, run.example_input(), skip=config.ignore, float_layers=float_layers, backend=backend,
                               weight_bits=target.weight_bits).to(_device(run))
        ranges = calibrate(model, calib_batches(images, config.batch_size), method=config.calib_method)
    else:
        metric = run.task.primary_metric
        model, sensitivity = analyze_sensitivity(
            model, calib_batches(images, config.batch_size), lambda candidate: _evaluate(run, candidate, quiet=True)[metric],
            max_drop=config.max_drop, method=config.calib_method, skip=config.ignore, float_layers=float_layers, backend=backend,
            example_input=run.example_input(), metric_name=metric, weight_bits=target.weight_bits,
        )
        if is_main_process():
            write_text(folder / "sensitivity.md", sensitivity.to_markdown())
            write_json(folder / "sensitivity.json", sensitivity.to_dict())
        outputs.update(sensitivity="sensitivity.md", sensitivity_json="sensitivity.json")
        kept_float = sensitivity.skip
    # every QAT epoch is measured, and the best weights are kept, the calibrated (PTQ) ones included: QAT never makes int8 worse
    with _distillation(run, model, "finetune") as loss_fn:
        history = _train(run, model.to(_device(run)), folder, TrainConfig(config.qat_epochs, lr=config.lr / 100, warmup_steps=0), "qat",
                         loss_fn=loss_fn, validate=lambda module: _evaluate(run, module), keep_best=run.task.primary_metric)
    _save(model, folder / "model.pt")
    outcome = QuantOutcome(outputs={**outputs, **_train_log(history)}, scores=history.kept_metrics(), ptq=history.start_metrics, backend=backend, weight_bits=target.weight_bits,
                           calibration_images=int(images.shape[0]), calibration_source=run.calibration_source(), activation_ranges=ranges,
                           kept_float=kept_float, float_by_default=list(float_layers), epochs=history.rows(), kept_epoch=history.kept_epoch)
    if outcome.kept_note(run.task.primary_metric):
        console.print(f"  {outcome.kept_note(run.task.primary_metric)}")
    return outcome


def _int8_ready(run: Run) -> bool:
    return not run.outcomes["qat"].skipped


def export(run: Run, folder: Path) -> ExportOutcome:
    """ONNX of the baseline, the pruned model and the deployed one (the int8 Q/DQ model, or an fp16
    conversion of the pruned model for fp16 targets), each checked against PyTorch in onnxruntime.

    What is exported is the task's ``export_module`` of each model (the model itself, or the model
    followed by the task's float post-processing, e.g. an anchor-free detector's box decoding)."""
    from .export import convert_fp16, export_onnx, qdq_summary, verify_onnx

    opset = run.target.export_opset
    sources = {"baseline": ("baseline", "baseline.onnx"), "pruned": ("finetune", "pruned.onnx")}
    if _int8_ready(run):
        sources["int8"] = ("qat", "int8.onnx")
    elif run.target.precision == "fp16":
        sources["fp16"] = ("finetune", "pruned_fp16.onnx")
    outputs, models = {}, {}
    for label, (stage, file_name) in track(list(sources.items()), "exporting", keep=True):
        model = run.load_stage_model(stage).eval()
        exported = run.task.export_module(model)
        if label == "fp16":
            path = convert_fp16(folder / outputs["pruned"], folder / file_name)
        else:
            path = export_onnx(exported, run.example_input(), folder / file_name, int8=label == "int8", opset=opset)
        report = verify_onnx(exported, path, tuple(run.example_input().shape))
        accuracy = run.task.evaluate(onnx_predict(path), model, run.data.val)
        models[label] = ExportedModel(report.max_abs_error, report.max_rel_error, accuracy, asdict(qdq_summary(path)) if label == "int8" else None)
        console.print(f"  {file_name}: max |onnxruntime - torch| {report.max_abs_error:.2e}, " + ", ".join(f"{k} {v:.4f}" for k, v in accuracy.items()))
        outputs[label] = file_name
    return ExportOutcome(outputs=outputs, models=models, opset=opset)


def engine(run: Run, folder: Path) -> EngineOutcome:
    """Build the target's engine, or the deployment bundle that builds it on the device."""
    from .engine import build_engine

    precision, label = run.target.deployment(_int8_ready(run))
    result = build_engine(run.target, run.artifact("export", label), folder, precision=precision)
    outputs = {name: str(Path(path).relative_to(folder)) for name, path in result.paths.items()}
    console.print(f"  {result.kind}: {', '.join(outputs.values())}")
    return EngineOutcome(outputs=outputs, kind=result.kind, precision=precision, command=result.command, notes=result.notes)


LAYERS_FILE = "layers.json"


def report(run: Run, folder: Path) -> ReportOutcome:
    """Profile every exported model side by side in each CPU runtime asked for, time their layers in each runtime's own
    profiler (``layers.json``: by runtime, then model) and write report.md / report.json."""
    from .profile import compare_models, get_runtime
    from .report import write_report

    config = run.config
    models = {label: run.artifact("export", label) for label in run.outcomes["export"].outputs}
    shape = (config.profile_batch, *run.example_input().shape[1:])
    latency: dict[str, dict[str, dict]] = {}
    layers: dict[str, dict[str, dict]] = {}
    for runtime in config.profile_runtimes:
        stats = compare_models(models, shape, runs=config.profile_runs, rounds=config.profile_rounds, progress=True, runtime=runtime)
        latency[runtime] = {label: asdict(row) for label, row in stats.items()}
        for label, row in stats.items():
            console.print(f"  {label} ({runtime}): median {row.median_ms:.3f} ms, p90 {row.p90_ms:.3f} ms, peak {row.peak_memory_mb:.1f} MB")
        if config.profile_layers and get_runtime(runtime).layer_profiler:
            layers[runtime] = _layer_profiles(models, shape, runtime)
    outputs = write_report(run, folder, latency, layers)
    if layers:
        write_json(folder / LAYERS_FILE, layers)
        outputs["layers"] = LAYERS_FILE
    return ReportOutcome(outputs=outputs, latency=latency)


def _layer_profiles(models: dict[str, Path], shape: tuple[int, ...], runtime: str) -> dict[str, dict]:
    """Each model's layers timed by ``runtime``'s own profiler (a few runs, the whole-model timing's default threads), as dicts."""
    from .profile import profile_layers

    profiles = {}
    for label, path in track(list(models.items()), f"per-layer times ({runtime})"):
        profiled = profile_layers(path, runtime=runtime, shape=shape)
        profiles[label] = profiled.to_dict()
        if profiled.layers:
            slowest = profiled.layers[0]
            console.print(f"  {label} ({runtime} profiler, {profiled.device}): {len(profiled.layers)} layers, {profiled.total_ms:.3f} ms; slowest "
                          f"{slowest.name} ({slowest.kernel}) {slowest.time_ms:.3f} ms, {slowest.percent:.0f}%", highlight=False)
    return profiles


@dataclass(frozen=True)
class Stage:
    """A build stage: its function, the record it returns and the settings whose change invalidates it.

    ``trains``: it trains (or takes gradients), so in a distributed build every process runs it, under DDP, and
    rank 0 writes its outputs; any other stage runs on rank 0 alone (prune trains: its gradient pass and the
    training between pruning passes; every process then plans the same pruning from the same averaged gradients).
    """

    name: str
    run: Callable[[Run, Path], StageOutcome]
    outcome: type[StageOutcome]
    settings: tuple[str, ...]
    trains: bool = False


# amp, augment and ema change the float training stages' results; fingerprints chain, so naming them here covers sparse and finetune too.
# workers is not among them: the batches are the same whatever the number of loader processes (tests/data/test_loaders.py).
BASELINE_SETTINGS = ("task", "data", "image_size", "train_images", "val_images", "seed", "batch_size", "lr", "amp", "augment", "ema")

STAGES: tuple[Stage, ...] = (
    Stage("baseline", baseline, ModelOutcome, BASELINE_SETTINGS + ("model", "weights", "epochs"), trains=True),
    Stage("sparse", sparse, SparseOutcome, ("sparse_epochs", "sparsity_lambda", "ignore"), trains=True),
    # calib and calib_images: the images a data-measuring criterion (activation) scores channels on
    Stage("prune", prune_stage, PruneOutcome, ("prune_ratio", "target_macs", "prune_layers", "criterion", "strategy", "min_channels",
                                               "round_to", "ignore", "calib", "calib_images", "target_latency", "latency_runtime"), trains=True),
    Stage("finetune", finetune, ModelOutcome, ("finetune_epochs", "distill", "distill_weight"), trains=True),
    Stage("qat", quantize_stage, QuantOutcome, ("target", "calib", "calib_method", "calib_images", "max_drop", "qat_epochs", "distill",
                                                "distill_weight"), trains=True),
    Stage("export", export, ExportOutcome, ()),
    Stage("engine", engine, EngineOutcome, ("target",)),
    Stage("report", report, ReportOutcome, ("profile_runs", "profile_rounds", "profile_runtimes", "profile_batch", "profile_layers")),
)
STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES)
