"""The `edgecompress` command: a thin typer layer over the Python API.

The options of ``build`` and ``quantize`` are generated from the fields of :class:`BuildConfig` and
:class:`QuantizeJob` (help text, defaults, and choices read from the registries), so a setting is
declared once and checked once, by the config itself.
"""

from __future__ import annotations

import inspect
import os
import sys
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import EdgeCompressError
from .pipeline import build as run_build
from .progress import console
from .quantize_job import QuantizeJob, run_quantize_job
from .settings import BuildConfig, flag_of
from .stages import STAGE_NAMES
from .train.distributed import is_main_process, launched_by_torchrun, torchrun_command

app = typer.Typer(help="Prune, quantize and deploy CNNs to edge hardware.", no_args_is_help=True, add_completion=False)

def load_plugins() -> None:
    """Import every module declared in the ``edgecompress.plugins`` entry-point group, so its registrations
    (targets, tasks, criteria, runtimes) exist before the options and their help are built."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="edgecompress.plugins"):
        entry.load()


load_plugins()

# Choices the settings cannot name themselves (the stage table sits above the settings).
EXTRA_CHOICES: dict[str, Callable[[], Any]] = {"from_stage": lambda: STAGE_NAMES}


def _fail(error: EdgeCompressError) -> None:
    console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)  # 'pkg[extra]' is text, not markup
    raise typer.Exit(2)


def _cli_type(annotation: Any) -> Any:
    """The type typer parses a field as: ``X | None`` -> Optional[X], ``tuple[str, ...]`` -> list[str]."""
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) is tuple:
        return list[args[0]]
    if len(args) == 1 and type(None) in typing.get_args(annotation):
        return Optional[args[0]]
    return annotation


def _parameter(item, annotation: Any) -> inspect.Parameter:
    meta = item.metadata
    choices = meta.get("choices") or EXTRA_CHOICES.get(item.name)
    help_text = meta.get("help", "") + (f" Choose from: {', '.join(choices())}." if choices else "")
    cli_type = _cli_type(annotation)
    default = None if item.default is MISSING else list(item.default) if isinstance(item.default, tuple) else item.default
    if meta.get("argument"):
        info = typer.Argument(..., help=help_text, show_default=False, metavar=item.name.upper())
    elif item.default is MISSING:
        info = typer.Option(..., flag_of(item), help=help_text, metavar=item.name.upper())
    else:
        shown = not (default is None or default is False or default == [])
        metavar = "" if isinstance(default, bool) else item.name.removesuffix("s" if isinstance(item.default, tuple) else "").upper()
        flag = f"{flag_of(item)}/--no-{flag_of(item)[2:]}" if default is True else flag_of(item)  # a setting on by default can be turned off
        info = typer.Option(default, flag, help=help_text, show_default=shown, metavar=metavar)
    return inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=cli_type)


def command_from(config_type: type, name: str, action: Callable[[Any], None], doc: str) -> None:
    """Register a command whose options are ``config_type``'s fields; it calls ``action(config_type(**options))``."""
    hints = typing.get_type_hints(config_type)
    parameters = [_parameter(item, hints[item.name]) for item in fields(config_type)]

    def command(**options: Any) -> None:
        values = {key: tuple(value) if isinstance(value, list) else value for key, value in options.items()}
        try:
            action(config_type(**values))
        except EdgeCompressError as error:
            _fail(error)

    command.__signature__ = inspect.Signature(parameters)
    command.__doc__ = doc
    command.__name__ = name
    app.command(name)(command)


def _build(config: BuildConfig) -> None:
    if config.gpus is not None and config.gpus > 1 and not launched_by_torchrun():
        config.check()  # bad settings are refused here, not by each of N processes
        command = torchrun_command(config.gpus, sys.argv[1:])
        console.print(f"[dim]starting {config.gpus} processes: {escape(' '.join(command))}[/]", highlight=False, soft_wrap=True)
        os.execv(command[0], command)  # torchrun takes this process's place: its exit status and signals are the build's
    run_dir = run_build(config)
    if not is_main_process():
        return  # rank 0 prints the report
    console.print(f"\n[bold green]done:[/] {run_dir}/report.md", soft_wrap=True)  # a path to copy: never wrapped
    # The report is the output: stdout, as written (logs and progress stay on stderr), so `| cat` keeps it whole.
    sys.stdout.write((run_dir / "report.md").read_text())
    sys.stdout.flush()


def _quantize(job: QuantizeJob) -> None:
    outputs = run_quantize_job(job)
    for label, path in outputs.items():
        console.print(f"  {label}: {path}", highlight=False)
    console.print(f"[bold green]done:[/] {job.out}; lint it with `edgecompress check {outputs['onnx']} --target TARGET`", soft_wrap=True)


command_from(BuildConfig, "build", _build, "Run the whole pipeline: " + ", ".join(STAGE_NAMES) + ".")
command_from(QuantizeJob, "quantize", _quantize,
             "Quantize a model to int8: calibrate, optionally pick mixed precision by sensitivity and fine-tune (QAT), export ONNX.")


@app.command()
def targets() -> None:
    """List the deployment targets and the facts each build plan follows."""
    from .targets import list_targets

    # No side borders, one space between columns, short headers: one line per target in 80 columns.
    table = Table(title="deployment targets", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for column in ("target", "arch", "JetPack", "TRT", "int8", "DLA", "memory", "precision"):
        table.add_column(column, no_wrap=True)
    for t in list_targets():
        table.add_row(t.name, t.gpu_arch or "–", t.jetpack or "–", t.tensorrt or "–", "yes" if t.int8 else "no", str(t.dla_cores), f"{t.memory_gb:g} GB", t.precision)
    Console().print(table)  # the command's output: stdout


@app.command()
def check(
    onnx_file: Path = typer.Argument(..., metavar="MODEL.onnx", help="ONNX file to lint (an int8 Q/DQ export, or a float one)."),
    target: str = typer.Option(..., help="Deployment target or an unambiguous alias (orin-nano, agx-orin, 4090); `edgecompress targets` lists them."),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON instead of a table."),
) -> None:
    """Lint an ONNX graph for the target without TensorRT: ops its TensorRT parser lacks, custom ops, Q/DQ rules. Exit 1 on errors."""
    import json

    from .engine import check_onnx
    from .targets import get_target

    try:
        report = check_onnx(onnx_file, get_target(target))
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
        in_float = any(f.rule == "no-qdq" for f in report.findings)
        verdict = "[bold red]errors found[/]" if report.errors else "[bold green]ok[/]" + (" in float (no Q/DQ)" if in_float else "")
        counts = {"error": len(report.errors), "warning": len(report.warnings), "note": len(report.findings) - len(report.errors) - len(report.warnings)}
        out.print(f"{verdict}: " + ", ".join(f"{n} {kind}{'' if n == 1 else 's'}" for kind, n in counts.items()))
    raise typer.Exit(1 if report.errors else 0)


@app.command()
def engine(
    onnx_file: Path = typer.Argument(..., metavar="MODEL.onnx", help="Exported ONNX: an int8 Q/DQ export, or a float (or fp16) one."),
    target: str = typer.Option(..., "--target", "-t", help="Deployment target or an unambiguous alias (orin-nano, agx-orin, thor-trt11); `edgecompress targets` lists them."),
    precision: Optional[str] = typer.Option(None, help="int8, fp16 or fp32 (default: the target's best; int8 needs a Q/DQ ONNX)."),
    dla_core: Optional[int] = typer.Option(None, "--dla-core", metavar="N", help="Build for DLA core N with GPU fallback (boards with DLA). A bundle for a DLA board always times a GPU-only and a DLA engine and writes which to use."),
    out: Path = typer.Option(Path("engine"), "--out", metavar="DIR", help="Folder for the engine, or for the deployment bundle."),
    workspace_mib: Optional[int] = typer.Option(None, "--workspace-mib", metavar="N", help="TensorRT builder workspace in MiB (default: an eighth of the board's memory, 256 to 4096)."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", metavar="PATH", help="Timing cache for an engine built here (default: ~/.cache/edgecompress/timing/, one per GPU and TensorRT release)."),
) -> None:
    """Build the target's engine from an ONNX: here when this machine has its GPU and TensorRT (with the int8 proof), otherwise a bundle whose build_engine.sh builds, proves and profiles on the device."""
    from .targets.deploy import build_engine

    try:
        result = build_engine(onnx_file, target, out, precision=precision, dla_core=dla_core, workspace_mib=workspace_mib, timing_cache=timing_cache)
    except EdgeCompressError as error:
        _fail(error)
    for name, path in result.paths.items():
        console.print(f"  {name}: {path}", highlight=False, soft_wrap=True)
    for note in result.notes:
        console.print(f"  [dim]{escape(note)}[/]", highlight=False, soft_wrap=True)
    what = {"engine": "engine", "onnxruntime": "onnxruntime model", "bundle": "bundle (run build_engine.sh on the device)"}[result.kind]
    console.print(f"[bold green]done:[/] {result.precision} {what} for {result.target} in {out}", soft_wrap=True, highlight=False)


@app.command("latency-bundle")
def latency_bundle(
    model: str = typer.Option(..., help="Zoo name, path/to/file.py:callable, package.module:callable or a model file: the model the build prunes."),
    target: str = typer.Option(..., "--target", "-t", help="The TensorRT device the tables are for (jetson-orin-nano, agx-orin, ...; `edgecompress targets`)."),
    precision: Optional[str] = typer.Option(None, help="int8, fp16 or fp32 (default: the target's, as the build's --latency-runtime tensorrt reads them)."),
    image_size: int = typer.Option(128, help="Square input size, as the build's --image-size."),
    num_classes: int = typer.Option(10, help="Classes of the data the build trains on (a head's width depends on it); the bundled digits have 10."),
    round_to: int = typer.Option(8, help="The build's --round-to: the grid of kept-channel counts (8 for 1)."),
    max_points: int = typer.Option(16, help="At most this many counts per curve (the build's planner asks for 16)."),
    ignore: list[str] = typer.Option([], help="The build's --ignore modules (repeatable): their channels are not pruned, so not timed."),
    weights: Optional[Path] = typer.Option(None, help="State dict to load into MODEL (the shapes do not depend on it)."),
    trust_model: bool = typer.Option(False, help="Load a MODEL file that needs code to load: only for files you trust."),
    out: Path = typer.Option(Path("latency-bundle"), "--out", metavar="DIR", help="Folder for the bundle (replaced as a whole)."),
) -> None:
    """Write the one-layer ONNX models of MODEL's layer shapes at every kept-channel count latency-budget pruning asks for, and
    time_layers.sh, which times them with trtexec on the device and writes layer_latency.json for `edgecompress latency-import`."""
    import torch

    from .engine.latency_bundle import write_latency_bundle
    from .models import resolve_model
    from .profile.layer_latency import grid_step
    from .targets import get_target

    try:
        board = get_target(target)
        network = resolve_model(model, num_classes=num_classes, weights=weights, trust=trust_model).eval()
        bundle = write_latency_bundle(network, torch.zeros(1, 3, image_size, image_size), board, out, precision=precision, ignore=ignore,
                                      step=grid_step(round_to), max_points=max_points, model_name=model)
    except EdgeCompressError as error:
        _fail(error)
    console.print(f"  {bundle.models} one-layer models for {bundle.points} points of {bundle.shapes} layer shapes in {out}/layers", highlight=False)
    console.print(f"[bold green]done:[/] {out}; copy it to the {board.name}, run ./time_layers.sh there, then "
                  f"`edgecompress latency-import layer_latency.json`", soft_wrap=True, highlight=False)


@app.command("latency-import")
def latency_import(
    results: Path = typer.Argument(..., metavar="LAYER_LATENCY.json", help="The results time_layers.sh wrote on the device."),
) -> None:
    """Import the per-layer TensorRT latency tables a latency bundle measured on the device, for `build --latency-runtime tensorrt`."""
    from .engine.latency_bundle import import_layer_latency

    try:
        imported = import_layer_latency(results)
    except EdgeCompressError as error:
        _fail(error)
    device = imported.measured_on
    console.print(f"[bold green]done:[/] {imported.tables} tables ({imported.points} points) of {imported.device} in {imported.precision}, "
                  f"TensorRT {device.get('tensorrt') or '?'}, power mode {device.get('power_mode') or '?'}, into {imported.folder}; "
                  f"build with --target {imported.device} --latency-runtime tensorrt", soft_wrap=True, highlight=False)


def _shape(text: str | None) -> tuple[int, ...] | None:
    """``1,3,320,320`` -> ``(1, 3, 320, 320)``."""
    if text is None:
        return None
    try:
        dims = tuple(int(dim) for dim in text.split(","))
    except ValueError:
        dims = ()
    if not dims or min(dims) < 1:
        raise EdgeCompressError(f"--shape must be positive whole numbers separated by commas, like 1,3,320,320 (got {text!r})")
    return dims


@app.command()
def profile(
    model: Optional[Path] = typer.Argument(None, metavar="MODEL", show_default=False,
                                           help="An .onnx model, an OpenVINO IR .xml, or a TensorRT .engine/.plan; with --import of trtexec files, the engine (or ONNX) trtexec timed."),
    runtime: Optional[str] = typer.Option(None, help="onnxruntime or openvino (default: onnxruntime for .onnx, openvino for .xml; an engine runs in TensorRT)."),
    device: Optional[str] = typer.Option(None, help="cpu, or cuda: onnxruntime's CUDAExecutionProvider (onnxruntime-gpu). Default: cpu (an engine: its GPU)."),
    shape: Optional[str] = typer.Option(None, metavar="1,3,320,320", help="Input shape (default: the model's, a symbolic batch taken as 1)."),
    iterations: int = typer.Option(100, help="Timed iterations."),
    warmup: int = typer.Option(10, help="Warm-up iterations before timing."),
    threads: Optional[int] = typer.Option(None, help="Inference threads (default: the runtime's)."),
    json_out: Optional[Path] = typer.Option(None, "--json", metavar="OUT.json", help="Write the report (schema edgecompress.latency/1) to this file."),
    imports: list[Path] = typer.Option([], "--import", metavar="FILE.json",
                                       help="Read instead of timing (repeatable): a latency report (the deploy/ runner's), or trtexec's --exportTimes file with its --exportProfile and --exportLayerInfo files."),
    stage: Optional[str] = typer.Option(None, help="Which model of a build this is (baseline, pruned, fp16, int8), so `edgecompress report` shows it in that row."),
    target: Optional[str] = typer.Option(None, help="The edgecompress target it ran on, recorded in the report (`edgecompress targets`)."),
    precision: Optional[str] = typer.Option(None, help="With trtexec imports: the precision the engine was built in (int8, fp16, fp32)."),
    layers: int = typer.Option(0, "--layers", metavar="N",
                               help="Also time each layer with the runtime's own profiler (onnxruntime, OpenVINO on the CPU; 10 runs) "
                                    "and print the N slowest; with --import, the N slowest of the imported per-layer times."),
) -> None:
    """Time one model in a fresh process (or import trtexec's / the C++ runner's figures) and print its latency; --json writes the report."""
    from .comparison import import_report, profile_file
    from .profile import report_tables

    try:
        if layers < 0:
            raise EdgeCompressError(f"--layers must be 0 (no per-layer table) or a number of slowest layers to print, got {layers}")
        if imports:
            report = import_report(imports, model=model, stage=stage, target=target, precision=precision)
        elif model is None:
            raise EdgeCompressError("pass a MODEL to time (.onnx, .xml, .engine) or --import FILE.json")
        else:
            report = profile_file(model, runtime=runtime, device=device, shape=_shape(shape), iterations=iterations, warmup=warmup,
                                  threads=threads, stage=stage, target=target, progress=True, layers=layers > 0)
        if json_out is not None:
            report.save(json_out)
    except EdgeCompressError as error:
        _fail(error)
    out = Console(soft_wrap=True)
    for table in report_tables(report, slowest_layers=layers or 10):
        out.print(table)
    if json_out is not None:
        console.print(f"[bold green]done:[/] {json_out}", soft_wrap=True, highlight=False)


@app.command()
def report(
    run_dirs: Optional[list[Path]] = typer.Argument(None, metavar="RUN_DIR...", show_default=False,
                                                    help="Run folders written by `edgecompress build` (runs/NAME)."),
    latency: list[Path] = typer.Option([], "--latency", metavar="FILE.json",
                                       help="Latency reports to add (repeatable): `edgecompress profile --json`, the deploy/ runner, trtexec imports."),
    out: Path = typer.Option(Path("comparison"), "--out", metavar="DIR", help="Folder for comparison.md, comparison.json and comparison.html."),
) -> None:
    """Compare runs and latency reports: a table of models x runs (accuracy, size, latency, speed-up) and plots, in one HTML file."""
    from .comparison import compare_runs

    try:
        paths = compare_runs(run_dirs or [], latency, out)
    except EdgeCompressError as error:
        _fail(error)
    for path in paths.values():
        console.print(f"  {path}", highlight=False, soft_wrap=True)
    console.print(f"[bold green]done:[/] {paths['comparison.html']}", soft_wrap=True, highlight=False)
    sys.stdout.write(paths["comparison.md"].read_text())  # the output: stdout, as for build's report
    sys.stdout.flush()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
