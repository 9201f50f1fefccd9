"""report.md and report.json, generated from the stages' typed outcomes and manifests (never typed by hand)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .artifacts import atomic_path, write_json, write_text
from .outcomes import ExportOutcome, ModelOutcome, QuantOutcome, SparseOutcome
from .run import Run

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


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "–" if value is None else format(value, spec)


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


def _markdown(run: Run, rows: list[dict[str, Any]]) -> str:
    metric = run.task.primary_metric
    base = rows[0]
    runtime, *other_runtimes = run.config.profile_runtimes
    lines = [
        f"# edgecompress report: {run.config.name}",
        "",
        f"Model `{run.config.model}`, task `{run.config.task}`, target `{run.target.name}` ({run.target.description}), "
        f"input {run.config.image_size}x{run.config.image_size}. Latency: {runtime} on this machine's CPU, batch {run.config.profile_batch}, "
        f"{run.config.profile_rounds} interleaved rounds of {run.config.profile_runs} runs after warm-up, each in a fresh process.",
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
    labels = {row["model"] for row in rows}
    timed_in_onnxruntime = "onnxruntime" in run.config.profile_runtimes  # the notes below explain onnxruntime's figures
    if "int8" in labels and timed_in_onnxruntime:
        lines += ["", INT8_NOTES.get(run.outcomes["qat"].backend, "")]
    if "fp16" in labels and timed_in_onnxruntime:
        lines += ["", "The fp16 row is the pruned model converted to fp16 (inputs and outputs stay fp32), the ONNX a "
                  "strongly typed TensorRT network builds in fp16; onnxruntime's CPU provider has few fp16 kernels, "
                  "so its latency here says nothing about the GPU."]
    lines += ["", "## Stages", "", "| stage | status | wall time | notes |", "|---|---|---|---|"]
    for name, manifest in run.manifests.items():
        lines.append(f"| {name} | {manifest['status']} | {manifest['wall_s']:.1f} s | {_stage_note(run, name)} |")
    lines += _gamma_section(run.outcomes["sparse"])
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


def _gamma_section(sparse: SparseOutcome) -> list[str]:
    """Histogram of |gamma| of the prunable BNs before and after sparse training."""
    before, after = sparse.gamma_before, sparse.gamma_after
    edges = before.edges
    bins = [f"{lo}–{hi}" for lo, hi in zip(edges, edges[1:])]
    return [
        "", "## BN gammas (sparse training)", "", "![BN gamma distribution](sparse/gamma_histogram.png)", "",
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
        note = f"replaced {len(blocks)} residual blocks by identity; " if blocks else ""
        goal = f"MAC target {plan['target_macs']:.0%} removed; " if plan.get("target_macs") is not None else ""
        return note + goal + f"removed {plan['channels_removed']} of {plan['channels_total']} prunable channels; before fine-tune: " + _scores(outcome.scores)
    if name == "qat":
        note = f"{outcome.backend} Q/DQ layout; "
        if outcome.kept_float is not None:
            note += f"sensitivity analysis kept {len(outcome.kept_float)} layers in float ({', '.join(outcome.kept_float) or 'none'}); "
        return note + "after calibration (PTQ): " + _scores(outcome.ptq) + f"; {outcome.calibration_images} calibration images"
    if name == "engine":
        return f"{outcome.kind} at {outcome.precision}"
    if name == "export":
        errors = "; ".join(f"{label} max abs error {model.max_abs_error:.2e}" for label, model in outcome.models.items())
        return f"opset {outcome.opset}; {errors}"
    return _scores(getattr(outcome, "scores", {}))


def write_report(run: Run, folder: Path, latency: dict[str, dict[str, dict]]) -> dict[str, str]:
    """Write report.md and report.json into ``folder`` and the run folder; ``latency`` is by runtime, then model."""
    rows = [_row(run, label, latency) for label in MODEL_ROWS if label in run.outcomes["export"].outputs]
    data = {
        "name": run.config.name,
        "target": asdict(run.target),
        "models": rows,
        "stages": {name: {k: m[k] for k in ("status", "reason", "wall_s", "metrics")} for name, m in run.manifests.items()},
        "total_wall_s": round(sum(m["wall_s"] for m in run.manifests.values()), 1),
    }
    markdown = _markdown(run, rows)
    for where in (folder, run.dir):
        write_json(where / "report.json", data)
        write_text(where / "report.md", markdown)
    return {"report_md": "report.md", "report_json": "report.json"}
