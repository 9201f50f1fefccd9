"""comparison.md and one self-contained comparison.html (CSS inline, plots as base64 PNG: no file or URL outside it)."""

from __future__ import annotations

import base64
import html
import io
import re
from typing import Any

from .compare import Comparison, LatencySource
from .runs import RunSummary


def _fmt(value: Any, spec: str = ".2f", suffix: str = "") -> str:
    return "–" if value is None else f"{format(value, spec)}{suffix}"


def _size(nbytes: int | None) -> str:
    return _fmt(nbytes and nbytes / 1e6, ".2f", " MB")


def _row_cells(row: dict[str, Any], columns: list[str]) -> list[str]:
    """One table row: run, model, metric, params, MACs, ONNX size, then median/p90 and speed-up per latency column."""
    cells = [row["run"], row["model"], _fmt(row["metric"], ".4f"), _fmt(row["params"], ","), _fmt(row["macs"] and row["macs"] / 1e6, ".1f", " M"),
             _size(row["onnx_bytes"])]
    for column in columns:
        stats = row["latency"].get(column)
        speedup = row["speedup"].get(column)
        cells.append(f"{_fmt(stats.get('median_ms'))} / {_fmt(stats.get('p90_ms'))}" + (f" ({speedup:.2f}x)" if speedup else "") if stats else "–")
    return cells


def _headers(comparison: Comparison) -> list[str]:
    metrics = sorted({row["metric_name"] for row in comparison.rows if row["metric_name"]})
    headers = ["run", "model", " / ".join(metrics) or "metric", "params", "MACs", "ONNX size"]
    return headers + [f"{column}: median / p90 ms (speed-up)" for column in comparison.columns]


def _source_cells(source: LatencySource) -> list[str]:
    host, report = source.report.host, source.report
    gpu = report.latency_ms.get("gpu_compute") or {}
    return [source.name, source.label, report.source, _fmt(host["median"], ".3f"), _fmt(host["p90"], ".3f"), _fmt(host["p99"], ".3f"),
            _fmt(gpu.get("median"), ".3f"), _fmt(report.throughput_ips, ".1f"), _fmt(report.memory_mb.get("peak_host"), ".1f"),
            report.machine.get("gpu") or report.machine.get("cpu") or "–", str(source.file)]


SOURCE_HEADERS = ["timed", "runtime", "source", "median ms", "p90 ms", "p99 ms", "GPU compute median ms", "throughput /s",
                  "peak host MB", "machine", "file"]


def _markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    escape = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    return ["| " + " | ".join(map(escape, headers)) + " |", "|" + "---|" * len(headers),
            *("| " + " | ".join(map(escape, row)) + " |" for row in rows)]


def markdown(comparison: Comparison) -> str:
    """comparison.md: the same tables as the HTML, without the plots."""
    lines = ["# edgecompress comparison", "", _intro(comparison), ""]
    lines += _markdown_table(_headers(comparison), [_row_cells(row, comparison.columns) for row in comparison.rows])
    lines += _quick_note(comparison)
    for run in comparison.runs:
        lines += ["", f"## Stages of {run.name}", ""]
        lines += _markdown_table(STAGE_HEADERS,
                                 _stage_cells(run))
    if comparison.sources:
        lines += ["", "## Latency reports", ""]
        lines += _markdown_table(SOURCE_HEADERS, [_source_cells(source) for source in comparison.sources])
    for source in comparison.sources:
        if source.report.layers:
            lines += ["", f"## Slowest layers: {source.name} ({source.label})", ""]
            lines += _markdown_table(LAYER_HEADERS, _layer_cells(comparison, source))
    lines += ["", "Plots (latency distributions, accuracy against latency, per-layer times) are in comparison.html."]
    return "\n".join(lines) + "\n"


STAGE_HEADERS = ["stage", "status", "wall time", "notes"]
LAYER_HEADERS = ["layer", "type", "precision", "ms", "%"]


def _stage_cells(run: RunSummary) -> list[list[str]]:
    """Each stage's status and wall time; the note is why it was skipped, what the engine stage made, or the stage's metric."""
    cells = []
    for stage, manifest in run.manifests.items():
        metrics = manifest.get("metrics") or {}
        if manifest.get("reason"):
            note = manifest["reason"]
        elif "kind" in metrics:
            note = f"{metrics['kind']} at {metrics.get('precision', '?')}" + (f": {' '.join(metrics['command'])}" if metrics.get("command") else "")
        else:
            note = f"{run.metric} {metrics[run.metric]:.4f}" if isinstance(metrics.get(run.metric), (int, float)) else ""
        cells.append([stage, manifest.get("status", "–"), _fmt(manifest.get("wall_s"), ".1f", " s"), note])
    return cells


def _layer_cells(comparison: Comparison, source: LatencySource) -> list[list[str]]:
    return [[layer["name"], layer.get("type") or "–", layer.get("precision") or "–", _fmt(layer["time_ms"], ".4f"), _fmt(layer.get("percent"), ".1f")]
            for layer in comparison.slowest_layers(source)]


def _intro(comparison: Comparison) -> str:
    runs = "; ".join(f"`{run.name}` ({run.config.get('model', '?')}, target {run.target}, {run.config.get('task', '?')})" for run in comparison.runs)
    return (f"Runs: {runs}. Latency in ms per column: a build's CPU runtimes from its report.json (median / p90), then each "
            f"latency report given with --latency that timed one of the models. Speed-up: against the run's first model in the same column.")


def _quick_note(comparison: Comparison) -> list[str]:
    quick = [run.name for run in comparison.runs if run.config.get("quick")]
    return ["", f"> Quick runs ({', '.join(quick)}): tiny data and one epoch per stage, so their accuracy figures are meaningless."] if quick else []


# --- plots ---------------------------------------------------------------------------------------------------------


def _png(figure) -> str:
    """The figure as a base64 PNG data URI (closed afterwards)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_distributions(comparison: Comparison) -> str | None:
    """Box plots of the per-iteration times of every latency report that kept them; None when none did."""
    timed = [source for source in comparison.sources if source.report.times_ms]
    if not timed:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(min(4 + 1.6 * len(timed), 12.5), 4.5))
    axis.boxplot([source.report.times_ms for source in timed], showfliers=True, whis=(1, 99))
    axis.set_xticks(range(1, len(timed) + 1), [f"{source.name}\n{source.label}" for source in timed], fontsize=8)
    axis.set(ylabel="latency per inference (ms)", title="Latency distribution (box: p25-p75, whiskers: p1-p99)")
    axis.grid(axis="y", alpha=0.3)
    return _png(figure)


def plot_accuracy_latency(comparison: Comparison) -> str | None:
    """Accuracy against median latency: one line per run and latency column through its models (baseline -> int8)."""
    series = []
    for run in comparison.runs:
        rows = [row for row in comparison.rows if row["run"] == run.name]
        for column in dict.fromkeys(c for row in rows for c in row["latency"]):
            points = [(row["latency"][column]["median_ms"], row["metric"], row["model"]) for row in rows
                      if column in row["latency"] and row["latency"][column].get("median_ms") and row["metric"] is not None]
            if points:
                series.append((f"{run.name} · {column}", points))
    if not series:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(10, 5))
    for label, points in series:
        xs, ys, names = zip(*points)
        axis.plot(xs, ys, marker="o", label=label)
        for x, y, name in points:
            axis.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    metric = " / ".join(sorted({row["metric_name"] for row in comparison.rows if row["metric_name"]}))
    axis.set(xlabel="median latency (ms)", ylabel=metric or "metric", title="Accuracy against latency per stage")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _png(figure)


def plot_layers(comparison: Comparison, source: LatencySource) -> str | None:
    """Horizontal bars of the slowest layers of a report, labelled with their precision."""
    layers = comparison.slowest_layers(source)
    if not layers:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(10, 0.6 + 0.32 * len(layers)))
    names = [(layer["name"] if len(layer["name"]) <= 48 else layer["name"][:45] + "...") + (f" [{layer['precision']}]" if layer.get("precision") else "")
             for layer in layers]
    axis.barh(names, [layer["time_ms"] for layer in layers], color="#4878a8")
    axis.invert_yaxis()
    axis.tick_params(axis="y", labelsize=8)
    axis.set(xlabel="mean time per inference (ms)", title=f"Slowest layers: {source.name} ({source.label})")
    axis.grid(axis="x", alpha=0.3)
    return _png(figure)


# --- HTML ----------------------------------------------------------------------------------------------------------

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px; color: #1d2733; background: #fff; }
h1 { font-size: 24px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #d8dee4; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #f3f5f7; white-space: normal; max-width: 170px; vertical-align: bottom; }
code { background: #f3f5f7; padding: 0 3px; border-radius: 3px; } td:first-child, td:nth-child(2), th:first-child, th:nth-child(2) { text-align: left; }
tr:nth-child(even) td { background: #fafbfc; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 6px 10px; margin: 8px 0; }
.intro { max-width: 1100px; } img { max-width: 100%; border: 1px solid #eee; }
.wide { overflow-x: auto; }
"""


def _html_table(headers: list[str], rows: list[list[str]], table_id: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<div class="wide"><table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _code_spans(text: str) -> str:
    """Markdown's `code` as <code> in already escaped text."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def _figure(uri: str | None, alt: str, missing: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{uri}">' if uri else f'<p class="note">{html.escape(missing)}</p>'


def html_page(comparison: Comparison) -> str:
    """comparison.html: tables and plots in one file."""
    parts = [f"<h1>edgecompress comparison</h1><p class=\"intro\">{_code_spans(html.escape(_intro(comparison)))}</p>",
             _html_table(_headers(comparison), [_row_cells(row, comparison.columns) for row in comparison.rows], "models")]
    parts += [f'<p class="note">{html.escape(line[2:])}</p>' for line in _quick_note(comparison) if line]
    parts += ["<h2>Accuracy against latency</h2>",
              _figure(plot_accuracy_latency(comparison), "accuracy against latency", "No model has both an accuracy and a latency figure.")]
    parts += ["<h2>Latency distribution</h2>",
              _figure(plot_distributions(comparison), "latency distribution",
                      "No per-iteration times: a build's report keeps only median and p90. Pass --latency reports from "
                      "`edgecompress profile MODEL --json OUT` (or the deploy/ runner) to see the distributions.")]
    if comparison.sources:
        parts += ["<h2>Latency reports</h2>",
                  _html_table(SOURCE_HEADERS, [_source_cells(source) for source in comparison.sources], "latency-reports")]
    for index, source in enumerate(comparison.sources):
        if source.report.layers:
            parts += [f"<h2>Slowest layers: {html.escape(source.name)} ({html.escape(source.label)})</h2>",
                      _figure(plot_layers(comparison, source), "slowest layers", ""),
                      _html_table(LAYER_HEADERS, _layer_cells(comparison, source), f"layers-{index}")]
    for index, run in enumerate(comparison.runs):
        parts += [f"<h2>Stages of {html.escape(run.name)}</h2>",
                  _html_table(STAGE_HEADERS, _stage_cells(run), f"stages-{index}")]
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>edgecompress comparison</title>'
            f"<style>{CSS}</style></head><body>\n{body}\n<p><small>Generated {html.escape(comparison.created)} by edgecompress report.</small></p></body></html>\n")
