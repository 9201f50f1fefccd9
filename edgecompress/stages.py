"""The eight stage functions of :mod:`edgecompress.pipeline`, each ``(run, folder) -> StageOutcome``."""

from __future__ import annotations

import itertools
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .artifacts import load_model, save_model, write_json, write_text
from .pipeline import Run, Stage, StageOutcome
from .progress import console
from .stats import model_stats
from .train.loop import TrainConfig, fit

BASELINE_SETTINGS = ("task", "data", "image_size", "train_images", "val_images", "seed", "batch_size", "lr")


def _evaluate(run: Run, model: nn.Module, quiet: bool = False) -> dict[str, float]:
    from .tasks import torch_predict

    metrics = run.task.evaluate(torch_predict(model), model, run.data.val)
    if not quiet:
        console.print("  " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return metrics


def _size_metrics(run: Run, model: nn.Module) -> dict[str, int]:
    stats = model_stats(model, run.example_input())
    return {"params": stats.params, "macs": stats.macs}


def _train(run: Run, model: nn.Module, folder: Path, config: TrainConfig, description: str, sparse=()) -> list[float]:
    history = fit(model, run.data.train, run.task.loss(model), config, sparse_batchnorms=sparse, checkpoint=folder / "checkpoint.pt", description=description)
    (folder / "checkpoint.pt").unlink(missing_ok=True)
    return [round(loss, 5) for loss in history.epoch_losses]


def _save(model: nn.Module, folder: Path, metrics: dict) -> StageOutcome:
    save_model(model, folder / "model.pt")
    return StageOutcome(outputs={"model": "model.pt"}, metrics=metrics)


def baseline(run: Run, folder: Path) -> StageOutcome:
    """Load ``--weights`` or train the model from scratch; evaluate it."""
    from .graph import analyze
    from .models import resolve_model

    config = run.config
    model = resolve_model(config.model, num_classes=run.data.num_classes, weights=config.weights)
    analyze(model, run.example_input(), ignore=config.ignore)  # a model the pruner cannot handle fails before training
    losses: list[float] = []
    if config.weights is None and config.epochs > 0:
        run.task.prepare(model, run.data)
        losses = _train(run, model, folder, TrainConfig(config.epochs, lr=config.lr), "baseline")
    return _save(model, folder, {**_evaluate(run, model), **_size_metrics(run, model), "train_loss": losses})


def _gammas(batchnorms: list[nn.BatchNorm2d]) -> np.ndarray:
    return torch.cat([bn.weight.detach().abs().flatten() for bn in batchnorms]).numpy() if batchnorms else np.zeros(1)


def _gamma_histogram(gammas: np.ndarray) -> dict[str, object]:
    edges = [0.0, 1e-3, 1e-2, 0.05, 0.1, 0.25, 0.5, 1.0, float("inf")]
    counts, _ = np.histogram(gammas, bins=edges)
    return {
        "channels": int(gammas.size),
        "edges": edges[:-1] + ["inf"],
        "counts": counts.tolist(),
        "median": float(np.median(gammas)),
        "fraction_below_0.01": float((gammas < 1e-2).mean()),
    }


def sparse(run: Run, folder: Path) -> StageOutcome:
    """Sparse training: the task loss plus lambda * sum|gamma| over the BNs of prunable channels."""
    from .prune import prunable_batchnorms
    from .report import plot_gamma_distribution

    config = run.config
    model = load_model(run.artifact("baseline", "model"))
    batchnorms = [bn for _, bn in prunable_batchnorms(model, run.example_input(), ignore=config.ignore)]
    before = _gammas(batchnorms)
    losses = _train(run, model, folder, TrainConfig(config.sparse_epochs, lr=config.lr, sparsity_lambda=config.sparsity_lambda), "sparse", sparse=batchnorms)
    after = _gammas(batchnorms)
    plot_gamma_distribution(before, after, folder / "gamma_histogram.png")
    hist_before, hist_after = _gamma_histogram(before), _gamma_histogram(after)
    console.print(f"  BN gammas below 0.01: {hist_before['fraction_below_0.01']:.1%} -> {hist_after['fraction_below_0.01']:.1%} of {after.size} channels")
    metrics = {**_evaluate(run, model), "gamma_before": hist_before, "gamma_after": hist_after, "train_loss": losses}
    save_model(model, folder / "model.pt")
    return StageOutcome(outputs={"model": "model.pt", "gamma_plot": "gamma_histogram.png"}, metrics=metrics)


def _accumulate_gradients(run: Run, model: nn.Module, batches: int = 8) -> None:
    """Sum the task loss's gradients over a few training batches, for the ``taylor`` criterion."""
    loss_fn = run.task.loss(model)
    model.train()
    model.zero_grad(set_to_none=True)
    for images, targets in itertools.islice(run.data.train, batches):
        loss_fn(model(images), targets).backward()


def prune_stage(run: Run, folder: Path) -> StageOutcome:
    """Optionally drop the weakest residual blocks, then remove the least important channels, physically."""
    from .prune import LAYER_CRITERIA, apply_plan, plan_pruning, prune_layers

    config = run.config
    model = load_model(run.artifact("sparse", "model"))
    example = run.example_input()
    removed_blocks: list[str] = []
    if config.prune_layers:
        layer_criterion = config.criterion if config.criterion in LAYER_CRITERIA else "bn-gamma"
        removed_blocks = prune_layers(model, example, n=config.prune_layers, criterion=layer_criterion, ignore=config.ignore)
        console.print(f"  replaced {len(removed_blocks)} residual blocks by identity: {', '.join(removed_blocks)}")
    if config.criterion == "taylor":
        _accumulate_gradients(run, model)
    goal = {"target_macs": config.target_macs} if config.target_macs is not None else {"ratio": config.prune_ratio}
    plan = plan_pruning(model, example, **goal, criterion=config.criterion, ignore=config.ignore,
                        min_channels=config.min_channels, round_to=config.round_to)
    model = apply_plan(model, plan)
    model.zero_grad(set_to_none=True)
    metrics = {**_evaluate(run, model), **_size_metrics(run, model), "plan": plan.summary(), "removed_blocks": removed_blocks}
    return _save(model, folder, metrics)


def finetune(run: Run, folder: Path) -> StageOutcome:
    """Fine-tune the pruned model to recover accuracy."""
    config = run.config
    model = load_model(run.artifact("prune", "model"))
    losses = _train(run, model, folder, TrainConfig(config.finetune_epochs, lr=config.lr), "finetune")
    return _save(model, folder, {**_evaluate(run, model), **_size_metrics(run, model), "train_loss": losses})


def qat(run: Run, folder: Path) -> StageOutcome:
    """Fold BN, insert int8 fake-quant, calibrate on the calibration images, then train a few epochs.

    With ``max_drop`` set, a sensitivity analysis first keeps the layers whose int8 version costs
    most accuracy in float until the calibrated model is within ``max_drop`` of the float one.
    """
    from .data.calib import calib_batches, load_calibration_images
    from .pipeline import DEFAULT_CALIB
    from .quant import calibrate, quantize_model
    from .quant.placement import BACKEND_FOR_TARGET_KIND
    from .quant.sensitivity import analyze_sensitivity

    config = run.config
    if not run.target.int8:
        return StageOutcome(skipped=f"{run.target.name} has no int8 support in TensorRT {run.target.tensorrt}; deploying the pruned model in {run.target.precision}")
    model = load_model(run.artifact("finetune", "model"))
    backend = BACKEND_FOR_TARGET_KIND[run.target.kind]
    images = load_calibration_images(Path(config.calib) if config.calib else DEFAULT_CALIB, config.image_size, limit=config.calib_images)
    outputs, extra = {"model": "model.pt"}, {}
    if config.max_drop is None:
        model = quantize_model(model, run.example_input(), skip=config.ignore, backend=backend)
        ranges = calibrate(model, calib_batches(images, config.batch_size), method=config.calib_method)
        extra["activation_ranges"] = ranges
    else:
        metric = run.task.primary_metric
        model, sensitivity = analyze_sensitivity(
            model, calib_batches(images, config.batch_size), lambda candidate: _evaluate(run, candidate, quiet=True)[metric],
            max_drop=config.max_drop, method=config.calib_method, skip=config.ignore, backend=backend,
            example_input=run.example_input(), metric_name=metric,
        )
        write_text(folder / "sensitivity.md", sensitivity.to_markdown())
        write_json(folder / "sensitivity.json", sensitivity.to_dict())
        outputs.update(sensitivity="sensitivity.md", sensitivity_json="sensitivity.json")
        extra["kept_float"] = sensitivity.skip
    ptq = _evaluate(run, model)
    losses = _train(run, model, folder, TrainConfig(config.qat_epochs, lr=config.lr / 100, warmup_steps=0), "qat")
    metrics = {**_evaluate(run, model), "ptq": ptq, "backend": backend, "calibration_images": int(images.shape[0]), **extra, "train_loss": losses}
    save_model(model, folder / "model.pt")
    return StageOutcome(outputs=outputs, metrics=metrics)


def export(run: Run, folder: Path) -> StageOutcome:
    """ONNX of the baseline, the pruned model and the deployed one (the int8 Q/DQ model, or an fp16
    conversion of the pruned model for fp16 targets), each checked against PyTorch in onnxruntime."""
    from .export import convert_fp16, export_onnx, qdq_summary, verify_onnx
    from .export.lint_rules import max_onnx_opset
    from .tasks import onnx_predict

    opset = min(17, max_onnx_opset(run.target) or 17)  # what the target's TensorRT parses (13 on JetPack 4)
    sources = {"baseline": ("baseline", "baseline.onnx"), "pruned": ("finetune", "pruned.onnx")}
    if run.manifests["qat"]["status"] == "done":
        sources["int8"] = ("qat", "int8.onnx")
    elif run.target.precision == "fp16":
        sources["fp16"] = ("finetune", "pruned_fp16.onnx")
    outputs, metrics = {}, {}
    for label, (stage, file_name) in sources.items():
        model = load_model(run.artifact(stage, "model")).eval()
        if label == "fp16":
            path = convert_fp16(folder / outputs["pruned"], folder / file_name)
        else:
            path = export_onnx(model, run.example_input(), folder / file_name, int8=label == "int8", opset=opset)
        report = verify_onnx(model, path, tuple(run.example_input().shape))
        accuracy = run.task.evaluate(onnx_predict(path), model, run.data.val)
        metrics[label] = {"max_abs_error": report.max_abs_error, "max_rel_error": report.max_rel_error, "onnx": accuracy}
        if label == "int8":
            metrics[label]["qdq"] = asdict(qdq_summary(path))
        console.print(f"  {file_name}: max |onnxruntime - torch| {report.max_abs_error:.2e}, " + ", ".join(f"{k} {v:.4f}" for k, v in accuracy.items()))
        outputs[label] = file_name
    return StageOutcome(outputs=outputs, metrics={**metrics, "opset": opset})


def engine(run: Run, folder: Path) -> StageOutcome:
    """Build the target's engine, or the deployment bundle that builds it on the device."""
    from .engine import build_engine

    precision = "int8" if run.manifests["qat"]["status"] == "done" else run.target.precision
    # TensorRT 11 networks are strongly typed: fp16 comes from the fp16 ONNX; older versions take --fp16 on the float one.
    fp16_onnx = precision == "fp16" and run.target.strongly_typed and "fp16" in run.manifests["export"]["outputs"]
    onnx_path = run.artifact("export", "int8" if precision == "int8" else "fp16" if fp16_onnx else "pruned")
    result = build_engine(run.target, onnx_path, folder, precision=precision)
    outputs = {name: str(Path(path).relative_to(folder)) for name, path in result.paths.items()}
    console.print(f"  {result.kind}: {', '.join(outputs.values())}")
    return StageOutcome(outputs=outputs, metrics={"kind": result.kind, "precision": precision, "command": result.command, "notes": result.notes})


def report(run: Run, folder: Path) -> StageOutcome:
    """Profile every exported model side by side in each CPU runtime asked for and write report.md / report.json."""
    from .profile import compare_models
    from .report import write_report

    config = run.config
    models = {label: run.artifact("export", label) for label in run.manifests["export"]["outputs"]}
    shape = (config.profile_batch, *run.example_input().shape[1:])
    latency: dict[str, dict[str, dict]] = {}
    for runtime in config.profile_runtimes:
        stats = compare_models(models, shape, runs=config.profile_runs, rounds=config.profile_rounds, progress=True, runtime=runtime)
        latency[runtime] = {label: asdict(row) for label, row in stats.items()}
        for label, row in stats.items():
            console.print(f"  {label} ({runtime}): median {row.median_ms:.3f} ms, p90 {row.p90_ms:.3f} ms, peak {row.peak_memory_mb:.1f} MB")
    outputs = write_report(run, folder, latency)
    return StageOutcome(outputs=outputs, metrics={"latency": latency})


STAGES: tuple[Stage, ...] = (
    Stage("baseline", baseline, BASELINE_SETTINGS + ("model", "weights", "epochs")),
    Stage("sparse", sparse, ("sparse_epochs", "sparsity_lambda", "ignore")),
    Stage("prune", prune_stage, ("prune_ratio", "target_macs", "prune_layers", "criterion", "min_channels", "round_to", "ignore")),
    Stage("finetune", finetune, ("finetune_epochs",)),
    Stage("qat", qat, ("target", "calib", "calib_method", "calib_images", "max_drop", "qat_epochs")),
    Stage("export", export, ()),
    Stage("engine", engine, ("target",)),
    Stage("report", report, ("profile_runs", "profile_rounds", "profile_runtimes", "profile_batch")),
)
