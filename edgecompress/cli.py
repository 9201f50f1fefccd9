"""The `edgecompress` command: a thin typer layer over the Python API."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .errors import EdgeCompressError
from .pipeline import BuildConfig, build as run_build
from .progress import console

app = typer.Typer(help="Prune, quantize and deploy CNNs to edge hardware.", no_args_is_help=True, add_completion=False)
DEFAULTS = {f.name: f.default for f in fields(BuildConfig)}


def _fail(error: EdgeCompressError) -> None:
    console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def build(
    target: str = typer.Option(DEFAULTS["target"], help="Deployment target; `edgecompress targets` lists them."),
    model: str = typer.Option(DEFAULTS["model"], help="Zoo name, path/to/file.py:callable, package.module:callable or a torch.save(model) file."),
    weights: Optional[Path] = typer.Option(None, help="State dict to load; skips baseline training."),
    task: str = typer.Option(DEFAULTS["task"], help="detect (YOLO data.yaml) or classify (ImageFolder with train/ and val/)."),
    data: Optional[Path] = typer.Option(None, help="Dataset: a YOLO data.yaml, or an ImageFolder root. Default: the bundled digits detection set."),
    calib: Optional[Path] = typer.Option(None, help="Folder of calibration images. Default: the bundled calib_data/."),
    name: Optional[str] = typer.Option(None, help="Run name: the folder under --runs-dir. Default: MODEL-TARGET."),
    runs_dir: Path = typer.Option(Path(DEFAULTS["runs_dir"]), help="Where run folders are written."),
    image_size: int = typer.Option(DEFAULTS["image_size"], help="Square input size in pixels."),
    batch_size: int = typer.Option(DEFAULTS["batch_size"]),
    lr: float = typer.Option(DEFAULTS["lr"], help="Peak Adam learning rate (cosine-annealed); QAT uses lr/100."),
    epochs: int = typer.Option(DEFAULTS["epochs"], help="Baseline training epochs (ignored with --weights)."),
    sparse_epochs: int = typer.Option(DEFAULTS["sparse_epochs"], help="Sparse-training epochs."),
    sparsity_lambda: float = typer.Option(DEFAULTS["sparsity_lambda"], help="L1 weight on BN gammas during sparse training."),
    prune_ratio: float = typer.Option(DEFAULTS["prune_ratio"], help="Fraction of prunable channels removed (global threshold)."),
    target_macs: Optional[float] = typer.Option(None, help="Fraction of MACs to remove (0.5 halves them); replaces --prune-ratio."),
    prune_layers: int = typer.Option(DEFAULTS["prune_layers"], help="Residual blocks (x + f(x)) to replace by identity before channel pruning."),
    criterion: str = typer.Option(DEFAULTS["criterion"], help="Channel importance: bn-gamma, l1, fpgm or taylor."),
    min_channels: int = typer.Option(DEFAULTS["min_channels"], help="Channels every layer keeps at least."),
    round_to: int = typer.Option(DEFAULTS["round_to"], help="Kept channels are rounded up to a multiple of this."),
    ignore: list[str] = typer.Option([], help="Module names never pruned nor quantized (repeatable)."),
    finetune_epochs: int = typer.Option(DEFAULTS["finetune_epochs"]),
    qat_epochs: int = typer.Option(DEFAULTS["qat_epochs"]),
    max_drop: Optional[float] = typer.Option(None, help="Keep the most quantization-sensitive layers in float until int8 is within this metric drop (e.g. 0.01)."),
    calib_method: str = typer.Option(DEFAULTS["calib_method"], help="Activation calibrator: max, percentile, mse or entropy."),
    profile_runs: int = typer.Option(DEFAULTS["profile_runs"], help="Timed runs per model, round and runtime."),
    profile_rounds: int = typer.Option(DEFAULTS["profile_rounds"], help="Interleaved profiling rounds (each model once per round)."),
    profile_runtime: list[str] = typer.Option(list(DEFAULTS["profile_runtimes"]), help="CPU runtime the report times the models in: onnxruntime, openvino (repeatable)."),
    profile_batch: int = typer.Option(DEFAULTS["profile_batch"], help="Batch size of the report's timed inputs: 1 for latency, larger for throughput."),
    seed: int = typer.Option(DEFAULTS["seed"]),
    quick: bool = typer.Option(False, "--quick", help="Tiny data and one epoch per stage: a smoke run in about a minute."),
    from_stage: Optional[str] = typer.Option(None, "--from", help="Rerun from this stage on, even if finished."),
) -> None:
    """Run the whole pipeline: baseline, sparse, prune, finetune, qat, export, engine, report."""
    config = BuildConfig(
        target=target, model=model, weights=str(weights) if weights else None, task=task, data=str(data) if data else None,
        calib=str(calib) if calib else None, name=name, runs_dir=str(runs_dir), image_size=image_size, batch_size=batch_size,
        lr=lr, epochs=epochs, sparse_epochs=sparse_epochs, sparsity_lambda=sparsity_lambda, prune_ratio=prune_ratio, target_macs=target_macs, prune_layers=prune_layers, criterion=criterion,
        min_channels=min_channels, round_to=round_to, ignore=tuple(ignore), finetune_epochs=finetune_epochs, qat_epochs=qat_epochs, max_drop=max_drop,
        calib_method=calib_method, profile_runs=profile_runs, profile_rounds=profile_rounds, profile_runtimes=tuple(profile_runtime), profile_batch=profile_batch, seed=seed, quick=quick, from_stage=from_stage,
    )
    try:
        run_dir = run_build(config)
    except EdgeCompressError as error:
        _fail(error)
    console.print(f"\n[bold green]done:[/] {run_dir}/report.md")
    console.print((run_dir / "report.md").read_text(), markup=False, highlight=False)


@app.command()
def targets() -> None:
    """List the deployment targets and the facts each build plan follows."""
    from .engine import list_targets

    table = Table(title="deployment targets")
    for column in ("target", "GPU arch", "JetPack", "TRT", "int8", "DLA", "memory", "precision"):
        table.add_column(column, no_wrap=column in ("target", "GPU arch"))
    for t in list_targets():
        table.add_row(t.name, t.gpu_arch or "–", t.jetpack or "–", t.tensorrt or "–", "yes" if t.int8 else "no", str(t.dla_cores), f"{t.memory_gb:g} GB", t.precision)
    console.print(table)


@app.command()
def check(
    onnx_file: Path = typer.Argument(..., metavar="MODEL.onnx", help="ONNX file to lint (an int8 Q/DQ export, or a float one)."),
    target: str = typer.Option(..., help="Deployment target or an unambiguous alias (orin-nano, agx-orin, 4090); `edgecompress targets` lists them."),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON instead of a table."),
) -> None:
    """Lint a Q/DQ ONNX graph against the target's TensorRT rules, without TensorRT. Exit 1 on errors."""
    import json

    from rich.console import Console

    from .export.lint import check_onnx

    try:
        report = check_onnx(onnx_file, target)
    except EdgeCompressError as error:
        _fail(error)
    out = Console(soft_wrap=True)
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
    else:
        table = Table(title=f"{onnx_file.name} for {report.target} (TensorRT {report.tensorrt or '-'}, opset {report.opset})")
        for column in ("severity", "rule", "node", "op", "problem", "fix"):
            table.add_column(column, overflow="fold")
        colours = {"error": "red", "warning": "yellow", "info": "cyan"}
        for f in report.findings:
            table.add_row(f"[{colours[f.severity]}]{f.severity}[/]", f.rule, f.node, f.op, f.message, f.fix)
        if report.findings:
            out.print(table)
        verdict = "[bold red]errors found[/]" if report.errors else "[bold green]ok[/]"
        out.print(f"{verdict}: {len(report.errors)} errors, {len(report.warnings)} warnings, {len(report.findings) - len(report.errors) - len(report.warnings)} notes")
    raise typer.Exit(1 if report.errors else 0)


@app.command()
def quantize(
    model: str = typer.Argument(..., help="Zoo name, path/to/file.py:callable, package.module:callable or a torch.save(model) file."),
    data: Path = typer.Option(..., help="Validation/training data: a YOLO data.yaml (detect) or an ImageFolder root with train/ and val/ (classify)."),
    out: Path = typer.Option(..., help="Folder for model.pt, model.onnx, manifest.json and sensitivity.json/.md."),
    task: str = typer.Option("detect", help="detect or classify: which metric sensitivity and QAT use."),
    calib: Optional[Path] = typer.Option(None, help="Folder of calibration images. Default: the bundled calib_data/."),
    weights: Optional[Path] = typer.Option(None, help="State dict to load into MODEL."),
    image_size: Optional[int] = typer.Option(None, help="Square input size; defaults to the zoo model's."),
    batch_size: int = typer.Option(16),
    calib_images: int = typer.Option(256, help="Calibration images used (spread over the folder)."),
    limit: Optional[int] = typer.Option(None, help="Use at most this many training images (validation: fewer); for quick runs."),
    method: str = typer.Option("mse", help="Activation calibrator: mse (default), max, percentile or entropy (KL; clips ReLU6 detectors hard)."),
    backend: str = typer.Option("tensorrt", help="Q/DQ layout: tensorrt (int8 symmetric) or onnxruntime."),
    sensitivity: bool = typer.Option(False, "--sensitivity", help="Measure each layer's accuracy drop and keep the worst layers in float."),
    max_drop: float = typer.Option(0.01, help="With --sensitivity: largest allowed metric drop of the int8 model (absolute, e.g. 0.01 mAP)."),
    qat_epochs: int = typer.Option(0, help="Quantization-aware training epochs after calibration."),
    lr: float = typer.Option(1e-4, help="QAT learning rate."),
    skip: list[str] = typer.Option([], help="Layers (module names) or placed quantizers (e.g. add_1_quantizer, from sensitivity.json) kept in float; repeatable."),
) -> None:
    """Quantize a model to int8: calibrate, optionally pick mixed precision by sensitivity and fine-tune (QAT), export ONNX."""
    from .quantize_job import QuantizeJob, run_quantize_job

    job = QuantizeJob(
        model=model, data=data, out=out, task=task, calib=calib, weights=weights, image_size=image_size, batch_size=batch_size,
        calib_images=calib_images, limit=limit, method=method, backend=backend, sensitivity=sensitivity, max_drop=max_drop,
        qat_epochs=qat_epochs, lr=lr, skip=tuple(skip),
    )
    try:
        outputs = run_quantize_job(job)
    except EdgeCompressError as error:
        _fail(error)
    for name, path in outputs.items():
        console.print(f"  {name}: {path}", highlight=False)
    console.print(f"[bold green]done:[/] {out}; lint it with `edgecompress check {outputs['onnx']} --target TARGET`")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
