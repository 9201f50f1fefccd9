"""report.md and report.json, generated from the stages' typed outcomes and manifests (never typed by hand)."""

from __future__ import annotations

import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from .artifacts import atomic_path, write_json, write_text
from .outcomes import ExportOutcome, ModelOutcome, QuantOutcome, SparseOutcome, StageOutcome
from .run import Run
from .settings import BuildConfig, flag_of

# A model whose p90 latency exceeds this multiple of its median was timed on a busy machine.
UNSTEADY_P90 = 2.0

# Which stage trained each exported model (its torch scores) and which one gives its size.
MODEL_ROWS = {"baseline": ("baseline", "baseline"), "pruned": ("finetune", "finetune"), "fp16": ("finetune", "finetune"), "int8": ("qat", "finetune")}


INT8_NOTES = {
    "tensorrt": "The int8 row runs the Q/DQ model in TensorRT's layout (int8 symmetric, Q/DQ on conv inputs). "
    "onnxruntime's CPU provider fuses a Q/DQ conv into an integer kernel only when its output feeds a "
    "QuantizeLinear, so on this CPU that row measures mostly float convs plus the quantize/dequantize cost, "
    "not the target's int8 speed.",
    "onnxruntime": "The int8 row runs the Q/DQ model in onnxruntime's layout (uint8 activations, every conv "
    "output quantized), which its CPU provider runs as QLinearConv/QLinearAdd/QLinearConcat integer kernels.",
}

RUNTIME_NOTES = {
    "openvino": "OpenVINO's CPU plugin reads the same ONNX files (fp32 precision hint, so float models run in fp32); "
    "its low-precision transformations run the Q/DQ convs of either layout as integer kernels.",
}


def plot_gamma_distribution(before: np.ndarray, after: np.ndarray, path: Path) -> Path:
    """Histogram (log |gamma|) of the prunable BN gammas before and after sparse training, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 1e-6  # exact zeros are drawn in the first bin
    bins = np.logspace(np.log10(floor), np.log10(max(before.max(), after.max(), 1.0) * 1.1), 60)
    figure, axis = plt.subplots(figsize=(7, 3.5), dpi=110)
    axis.hist(np.clip(before, floor, None), bins=bins, alpha=0.6, label="before sparse training")
    axis.hist(np.clip(after, floor, None), bins=bins, alpha=0.6, label="after sparse training")
    axis.set(xscale="log", xlabel="|gamma| of prunable BatchNorm channels", ylabel="channels", title="BN gamma distribution")
    axis.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return path


# The stages that train, in pipeline order, and the report's plot of their epochs.
TRAINING_STAGES = ("baseline", "sparse", "finetune", "qat")
TRAINING_PLOT = "training.png"


def _trained(run: Run) -> list[tuple[str, StageOutcome]]:
    """The training stages that ran (not skipped), with their outcomes."""
    return [(name, run.outcomes[name]) for name in TRAINING_STAGES if name in run.outcomes and not run.outcomes[name].skipped]


def plot_training(run: Run, path: Path) -> Path | None:
    """Training loss per epoch of every training stage, one after the other, above the task's metric along the pipeline
    (each stage's end, the pruned model before fine-tuning, and QAT's epochs from the PTQ model on, the kept one starred),
    as a PNG; None when no stage trained."""
    trained = _trained(run)
    if not any(outcome.epochs for _, outcome in trained):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    metric = run.task.primary_metric
    figure, (loss_axis, metric_axis) = plt.subplots(2, 1, sharex=True, figsize=(8, 5.5), dpi=110)
    start = 0
    for name, outcome in trained:
        rows = outcome.epochs
        epochs = [start + row["epoch"] for row in rows]
        line, = loss_axis.plot(epochs, [row["loss"] for row in rows], marker=".", label=f"{name} (with the L1 penalty)" if name == "sparse" else name)
        if name == "finetune" and "prune" in run.outcomes:
            metric_axis.plot(start, run.outcomes["prune"].scores[metric], "x", color=line.get_color(), label="pruned, before fine-tuning")
        if name == "qat" and outcome.kept_epoch is not None:
            metric_axis.plot([start, *epochs], [outcome.ptq[metric], *(row[metric] for row in rows)], marker="o", color=line.get_color(),
                             label="int8: PTQ, then each QAT epoch")
            metric_axis.plot(start + outcome.kept_epoch, outcome.scores[metric], "*", markersize=14, color=line.get_color(), label="int8 kept")
        else:
            metric_axis.plot(start + len(rows), outcome.scores[metric], "o", color=line.get_color(), label=f"{name} (end)")
        if start:  # a thin line where each stage after the first begins
            for axis in (loss_axis, metric_axis):
                axis.axvline(start + 0.5, color="grey", linewidth=0.5)
        start += len(rows)
    loss_axis.set(yscale="log", ylabel="training loss (epoch mean)", title="Training, stage after stage")
    metric_axis.set(xlabel="epoch (all training stages in order)", ylabel=f"{metric} (validation)")
    metric_axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss_axis.legend(fontsize="small")
    metric_axis.legend(fontsize="small")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return path


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "–" if value is None else format(value, spec)


def _count(n: int, noun: str) -> str:
    """``1 round``, ``3 rounds``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _flag(name: str) -> str:
    """The CLI flag of a build setting (``--profile-rounds``)."""
    return next(flag_of(item) for item in fields(BuildConfig) if item.name == name)


def _row(run: Run, label: str, latency: dict[str, dict[str, dict]]) -> dict[str, Any]:
    """Facts of one deployable model: accuracy in torch and onnxruntime, size, compute and speed in each runtime
    (the ``latency_*`` keys are the first runtime's)."""
    scores_stage, size_stage = MODEL_ROWS[label]
    trained: ModelOutcome | QuantOutcome = run.outcomes[scores_stage]
    size: ModelOutcome = run.outcomes[size_stage]
    export_outcome: ExportOutcome = run.outcomes["export"]
    exported = export_outcome.models.get(label)
    by_runtime = {runtime: stats.get(label, {}) for runtime, stats in latency.items()}
    lat = next(iter(by_runtime.values()), {})
    return {
        "model": label,
        "metrics_torch": trained.scores,
        "metrics_onnx": exported.onnx if exported else {},
        "params": size.params,
        "macs": size.macs,
        "file_size_bytes": lat.get("file_size_bytes"),
        "latency_median_ms": lat.get("median_ms"),
        "latency_p90_ms": lat.get("p90_ms"),
        "peak_memory_mb": lat.get("peak_memory_mb"),
        "latency_by_runtime": {runtime: {k: stats.get(k) for k in ("median_ms", "p90_ms", "peak_memory_mb")} for runtime, stats in by_runtime.items()},
        "onnx_max_abs_error": exported.max_abs_error if exported else None,
    }


def _markdown(run: Run, rows: list[dict[str, Any]], latency: dict[str, dict[str, dict]], layers: dict[str, dict[str, dict]], folder: Path,
              training_plot: Path | None) -> str:
    """report.md as read from ``folder`` (its links are relative to it); ``training_plot`` is where the plot ends up, if drawn."""
    metric = run.task.primary_metric
    base = rows[0]
    config = run.config
    runtime, *other_runtimes = config.profile_runtimes
    lines = [f"# edgecompress report: {config.name}", ""]
    if config.quick:
        lines += [f"> **Quick run** ({_flag('quick')}): tiny data and one epoch per stage, so the {metric} figures are meaningless; "
                  "it only shows that every stage runs.", ""]
    lines += [
        f"Model `{config.model}`, task `{config.task}`, target `{run.target.name}` ({run.target.description}), "
        f"input {config.image_size}x{config.image_size}. Latency: {runtime} on this machine's CPU, batch {config.profile_batch}, "
        f"{_count(config.profile_rounds, 'interleaved round')} of {_count(config.profile_runs, 'run')} after warm-up, each in a fresh process.",
        "",
        f"| model | {metric} (torch) | {metric} (onnxruntime) | params | MACs | ONNX size | latency median | latency p90 | speed-up | peak memory |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        speedup = base["latency_median_ms"] / row["latency_median_ms"] if row["latency_median_ms"] and base["latency_median_ms"] else None
        lines.append(
            f"| {row['model']} | {_fmt(row['metrics_torch'].get(metric))} | {_fmt(row['metrics_onnx'].get(metric))} "
            f"| {row['params']:,} | {row['macs'] / 1e6:.1f} M | {_fmt(row['file_size_bytes'] and row['file_size_bytes'] / 1e6, '.2f')} MB "
            f"| {_fmt(row['latency_median_ms'], '.2f')} ms | {_fmt(row['latency_p90_ms'], '.2f')} ms | {_fmt(speedup, '.2f')}x | {_fmt(row['peak_memory_mb'], '.1f')} MB |"
        )
    if runtime in RUNTIME_NOTES:
        lines += ["", RUNTIME_NOTES[runtime]]
    for other in other_runtimes:
        lines += _runtime_table(other, rows)
    lines += _unsteady_latency_note(latency)
    labels = {row["model"] for row in rows}
    timed_in_onnxruntime = "onnxruntime" in config.profile_runtimes  # the notes below explain onnxruntime's figures
    if "int8" in labels and timed_in_onnxruntime:
        lines += ["", INT8_NOTES.get(run.outcomes["qat"].backend, "")]
    if "fp16" in labels:
        lines += ["", _fp16_note(run, timed_in_onnxruntime)]
    lines += _layers_section(run, rows, latency, layers)
    lines += ["", "## Stages", "", "| stage | status | wall time | notes |", "|---|---|---|---|"]
    for name, manifest in run.manifests.items():
        lines.append(f"| {name} | {manifest['status']} | {manifest['wall_s']:.1f} s | {_stage_note(run, name)} |")
    lines += _training_section(run, folder, training_plot)
    lines += _gamma_section(run, folder)
    engine = run.outcomes["engine"]
    lines += ["", "## Deployment", "", f"Result: **{engine.kind}** at {engine.precision}.", ""]
    if engine.command:
        lines += ["```", " ".join(engine.command), "```", ""]
    lines += [f"- {note}" for note in engine.notes]
    return "\n".join(lines) + "\n"


def _runtime_table(runtime: str, rows: list[dict[str, Any]]) -> list[str]:
    """The same models timed in another runtime (same input, runs and rounds)."""
    times = [row["latency_by_runtime"][runtime] for row in rows]
    about = RUNTIME_NOTES.get(runtime, "")
    lines = ["", f"Latency in {runtime} (same input, runs and rounds). {about}".rstrip(), "",
             "| model | latency median | latency p90 | speed-up | peak memory |", "|---|---|---|---|---|"]
    for row, stats in zip(rows, times):
        speedup = times[0]["median_ms"] / stats["median_ms"] if stats["median_ms"] and times[0]["median_ms"] else None
        lines.append(f"| {row['model']} | {_fmt(stats['median_ms'], '.2f')} ms | {_fmt(stats['p90_ms'], '.2f')} ms "
                     f"| {_fmt(speedup, '.2f')}x | {_fmt(stats['peak_memory_mb'], '.1f')} MB |")
    return lines


def _cell(text: Any) -> str:
    """A markdown table cell: ``–`` for nothing, ``|`` escaped."""
    return "–" if text is None else str(text).replace("|", "\\|")


def _layers_section(run: Run, rows: list[dict[str, Any]], latency: dict[str, dict[str, dict]], layers: dict[str, dict[str, dict]]) -> list[str]:
    """"Where the time goes": each model's slowest layers in each runtime's own profiler, slowest first (``layers``: by runtime,
    then model, as :meth:`LayerProfile.to_dict` writes them)."""
    if not layers:
        return []
    from .profile import RUNTIMES, LayerProfile

    count = run.config.profile_layers
    first = LayerProfile.from_dict(next(iter(next(iter(layers.values())).values())))
    lines = ["", "## Where the time goes", "",
             f"The slowest {count} layers of each model in each runtime, timed by the runtime's own profiler (the median of "
             f"{_count(first.runs, 'run')} after {_count(first.warmup, 'warm-up run')}, same input and threads as above). A layer is the ONNX node "
             "the runtime's node comes from: runtimes fuse nodes (a conv with its activation, Q/DQ pairs into an integer kernel) and add "
             "their own (layout reorders). The kernel says what ran it, e.g. QLinearConv or jit_avx2_I8 for int8, Conv or brgconv_avx2_f32 "
             "for float; the share is of all its layers' time."]
    untimed = [runtime for runtime in run.config.profile_runtimes if runtime in RUNTIMES and not RUNTIMES[runtime].layer_profiler]
    if untimed:
        lines += ["", f"{', '.join(untimed)}: no layer profiler registered, so timed whole only."]
    for runtime, by_model in layers.items():
        profiles = {label: LayerProfile.from_dict(data) for label, data in by_model.items()}
        devices = sorted({profile.device for profile in profiles.values()})
        lines += ["", f"### {runtime} ({', '.join(devices)})"]
        for row in rows:
            if row["model"] not in profiles:
                continue
            profile = profiles[row["model"]]
            whole = latency.get(runtime, {}).get(row["model"], {}).get("median_ms")
            lines += ["", f"**{row['model']}**: {_count(len(profile.layers), 'layer')}, {profile.total_ms:.3f} ms in all"
                      + (f" of {profile.run_ms:.3f} ms per profiled run" if profile.run_ms else "")
                      + (f" (whole model: {whole:.3f} ms median)" if whole else ""), "",
                      "| layer | type | kernel | precision | ms | share |", "|---|---|---|---|---|---|"]
            lines += [f"| {_cell(layer.name)} | {_cell(layer.type)} | {_cell(layer.kernel)} | {_cell(layer.precision)} | {layer.time_ms:.3f} "
                      f"| {layer.percent:.1f}% |" for layer in profile.layers[:count]]
    return lines


def _unsteady_latency_note(latency: dict[str, dict[str, dict]]) -> list[str]:
    """A warning naming every model whose p90 is over UNSTEADY_P90 times its median: its rounds disagree."""
    unsteady = [f"{label} in {runtime} (p90 {stats['p90_ms']:.2f} ms, {stats['p90_ms'] / stats['median_ms']:.1f}x its median {stats['median_ms']:.2f} ms)"
                for runtime, by_model in latency.items() for label, stats in by_model.items()
                if stats.get("median_ms") and stats.get("p90_ms") and stats["p90_ms"] > UNSTEADY_P90 * stats["median_ms"]]
    if not unsteady:
        return []
    return ["", f"> **Unsteady latency**: {'; '.join(unsteady)}. Its timed runs disagree, as on a busy machine; rerun with more "
                f"{_flag('profile_rounds')} or on a quieter machine before trusting these figures."]


def _fp16_note(run: Run, timed_in_onnxruntime: bool) -> str:
    """What the fp16 row is, and what the deployment ships (a TensorRT 8/10 target builds the float ONNX with --fp16)."""
    target = run.target
    files = run.outcomes["export"].outputs
    _, shipped = target.deployment(int8_ready=not run.outcomes["qat"].skipped)
    note = f"The fp16 row is the pruned model converted to fp16 (`{files['fp16']}`, inputs and outputs stay fp32), the ONNX a strongly typed (TensorRT 11) build takes."
    if shipped != "fp16" and target.tensorrt:
        note += (f" {target.name} ships `{files.get(shipped, shipped)}` instead: its TensorRT {target.tensorrt} builds the float ONNX with --fp16, "
                 "so the deployed engine runs in fp16 but starts from the pruned row's file.")
    if timed_in_onnxruntime:
        note += " onnxruntime's CPU provider has few fp16 kernels, so the fp16 latency here says nothing about the GPU."
    return note


def _relative(path: Path, folder: Path) -> str:
    """``path`` as a link from a file in ``folder``."""
    return Path(os.path.relpath(path, folder)).as_posix()


def _training_section(run: Run, folder: Path, plot: Path | None) -> list[str]:
    """The training ``plot`` (where the report stage leaves it) and each training stage's ``train.csv``, linked relative to ``folder``."""
    logs = [(name, run.dir / name / outcome.outputs["train_log"]) for name, outcome in _trained(run) if "train_log" in outcome.outputs]
    if not logs:
        return []
    image = [f"![training loss and {run.task.primary_metric} per epoch]({_relative(plot, folder)})", ""] if plot else []
    return ["", "## Training", "", *image, "Per-epoch rows (epoch, loss, lr, seconds, validation metrics where measured): "
            + ", ".join(f"[{name}]({_relative(path, folder)})" for name, path in logs) + "."]


def _gamma_section(run: Run, folder: Path) -> list[str]:
    """Histogram of |gamma| of the prunable BNs before and after sparse training; the plot linked relative to ``folder``."""
    sparse: SparseOutcome = run.outcomes["sparse"]
    before, after = sparse.gamma_before, sparse.gamma_after
    if before is None or after is None:
        return []
    edges = before.edges
    bins = [f"{lo}–{hi}" for lo, hi in zip(edges, edges[1:])]
    plot = sparse.outputs.get("gamma_plot")
    image = [f"![BN gamma distribution]({_relative(run.dir / 'sparse' / plot, folder)})", ""] if plot else []
    return [
        "", "## BN gammas (sparse training)", "", *image,
        "| abs(gamma) | " + " | ".join(bins) + " |",
        "|---|" + "---|" * len(bins),
        "| before | " + " | ".join(str(c) for c in before.counts) + " |",
        "| after | " + " | ".join(str(c) for c in after.counts) + " |",
    ]


def _scores(scores: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in scores.items())


def _stage_note(run: Run, name: str) -> str:
    """One line on what the stage did, from its typed outcome."""
    outcome = run.outcomes[name]
    if outcome.skipped:
        return outcome.skipped
    if name == "sparse":
        return f"BN gammas < 0.01: {outcome.gamma_before.fraction_below_001:.1%} -> {outcome.gamma_after.fraction_below_001:.1%}"
    if name == "prune":
        plan, blocks = outcome.plan, outcome.removed_blocks
        note = f"replaced {_count(len(blocks), 'residual block')} by identity; " if blocks else ""
        goal = f"MAC target {plan['target_macs']:.0%} removed; " if plan.get("target_macs") is not None else ""
        if outcome.latency:
            latency = outcome.latency
            measured = (f"measured {latency['measured_fraction']:.0%} in {latency['runtime']}" if latency["measured_fraction"] is not None
                        else f"from {latency['runtime']} tables of the device, measured there by the engine bundle")
            goal = f"latency target {plan['target_latency']:.0%} of dense: predicted {latency['predicted_fraction']:.0%}, {measured}; "
        return note + goal + f"removed {plan['channels_removed']} of {plan['channels_total']} prunable channels; before fine-tune: " + _scores(outcome.scores)
    if name == "qat":
        note = f"{outcome.backend} Q/DQ layout, {outcome.weight_bits}-bit weights; "
        if outcome.float_by_default:
            note += f"{_count(len(outcome.float_by_default), 'prediction conv')} kept in float by default; "
        if outcome.kept_float is not None:
            note += f"sensitivity analysis kept {_count(len(outcome.kept_float), 'layer')} in float ({', '.join(outcome.kept_float) or 'none'}); "
        source = f"calibrated on {outcome.calibration_source}" if outcome.calibration_source else _count(outcome.calibration_images, "calibration image")
        kept = outcome.kept_note(run.task.primary_metric)
        return note + "after calibration (PTQ): " + _scores(outcome.ptq) + f"; {source}" + (f"; {kept}" if kept else "")
    if name == "engine":
        return f"{outcome.kind} at {outcome.precision}"
    if name == "export":
        errors = "; ".join(f"{label} max abs error {model.max_abs_error:.2e}" for label, model in outcome.models.items())
        return f"opset {outcome.opset}; {errors}"
    return _scores(getattr(outcome, "scores", {}))


def write_report(run: Run, folder: Path, latency: dict[str, dict[str, dict]], layers: dict[str, dict[str, dict]] | None = None) -> dict[str, str]:
    """Write report.md, report.json and the training plot into ``folder``, and the report into the run folder; ``latency``
    is by runtime, then model, and so are ``layers`` (each model's :meth:`~edgecompress.profile.LayerProfile.to_dict`)."""
    rows = [_row(run, label, latency) for label in MODEL_ROWS if label in run.outcomes["export"].outputs]
    plot = plot_training(run, folder / TRAINING_PLOT)
    data = {
        "name": run.config.name,
        "target": asdict(run.target),
        "models": rows,
        "stages": {name: {k: m[k] for k in ("status", "reason", "wall_s", "metrics")} for name, m in run.manifests.items()},
        "total_wall_s": round(sum(m["wall_s"] for m in run.manifests.values()), 1),
    }
    # Links are relative to where each copy ends up: the run folder, and the stage's own folder run.dir/<stage>
    # (a stage writes into a partial folder that the pipeline then moves there).
    for where, final in ((folder, run.dir / folder.name), (run.dir, run.dir)):
        write_json(where / "report.json", data)
        write_text(where / "report.md", _markdown(run, rows, latency, layers or {}, final, run.dir / folder.name / TRAINING_PLOT if plot else None))
    return {"report_md": "report.md", "report_json": "report.json", **({"training_plot": TRAINING_PLOT} if plot else {})}
