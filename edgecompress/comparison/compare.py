"""The comparison of runs and latency reports: one row per deployable model of each run, latency in every runtime.

A build's report times its models on this machine's CPU (median and p90 per runtime); a latency report given with
``--latency`` (an engine timed on a device, the C++ runner's output, a trtexec import, ``edgecompress profile --json``)
joins the row of the model it timed when it names that model's stage (``model.stage``) and one run matches (see
:func:`attach`); otherwise it is listed on its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..profile import LatencyReport
from .runs import RunSummary

COMPARISON_SCHEMA = "edgecompress.comparison/1"
SLOWEST_LAYERS = 15


@dataclass
class LatencySource:
    """A latency report given to the comparison, where it came from, and the run row it joined (if any)."""

    file: Path
    report: LatencyReport
    run: str | None = None
    model: str | None = None

    @property
    def label(self) -> str:
        """``tensorrt cuda:0 int8``: the runtime, device and precision it was timed in."""
        runtime = self.report.runtime
        return " ".join(str(part) for part in (runtime.get("name"), runtime.get("device"), runtime.get("precision")) if part)

    @property
    def name(self) -> str:
        """What it timed: ``run/model`` when it joined a row, else the model file's name."""
        return f"{self.run}/{self.model}" if self.run else Path(self.report.model["path"]).name


def _inside(path: str, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(folder)
    except ValueError:
        return False
    return True


def attach(runs: list[RunSummary], sources: list[LatencySource]) -> None:
    """Join each latency report to the run row of the model it timed: the run whose models include the report's stage
    and, among several runs, whose folder holds the timed file or, failing that, the only one built for its target
    (an engine timed on the device from the run's bundle)."""
    for source in sources:
        stage = source.report.model.get("stage")
        candidates = [run for run in runs if stage in {row["model"] for row in run.models}]
        if len(candidates) > 1:
            candidates = ([run for run in candidates if _inside(source.report.model["path"], run.folder)]
                          or [run for run in candidates if run.target and run.target == source.report.machine.get("target")])
        if len(candidates) == 1:
            source.run, source.model = candidates[0].name, stage


def _row_latency(run: RunSummary, row: dict[str, Any], sources: list[LatencySource]) -> dict[str, dict[str, Any]]:
    """Latency of one model by column: the build's CPU runtimes, then each latency report that joined it."""
    columns = {f"{runtime} (build)": {"median_ms": stats.get("median_ms"), "p90_ms": stats.get("p90_ms"), "source": "report.json"}
               for runtime, stats in row.get("latency_by_runtime", {}).items()}
    for source in sources:
        if source.run == run.name and source.model == row["model"]:
            host = source.report.host
            columns[source.label] = {"median_ms": host["median"], "p90_ms": host["p90"], "source": str(source.file)}
    return columns


@dataclass
class Comparison:
    """Everything the comparison files show, computed once from the runs and the latency reports."""

    runs: list[RunSummary]
    sources: list[LatencySource]
    rows: list[dict[str, Any]] = field(default_factory=list)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def __post_init__(self) -> None:
        attach(self.runs, self.sources)
        for run in self.runs:
            base: dict[str, dict[str, Any]] = {}
            for row in run.models:
                metric = run.metric
                latency = _row_latency(run, row, self.sources)
                base = base or latency  # the run's first model (its baseline) is what speed-ups compare to
                self.rows.append({
                    "run": run.name, "model": row["model"], "metric_name": metric,
                    "metric": (row.get("metrics_onnx") or {}).get(metric, (row.get("metrics_torch") or {}).get(metric)),
                    "metric_torch": (row.get("metrics_torch") or {}).get(metric),
                    "params": row.get("params"), "macs": row.get("macs"), "onnx_bytes": row.get("file_size_bytes"),
                    "latency": latency,
                    "speedup": {column: base[column]["median_ms"] / stats["median_ms"]
                                for column, stats in latency.items()
                                if column in base and stats.get("median_ms") and base[column].get("median_ms")},
                })

    @property
    def columns(self) -> list[str]:
        """Every latency column, in the order first seen."""
        return list(dict.fromkeys(column for row in self.rows for column in row["latency"]))

    def slowest_layers(self, source: LatencySource, count: int = SLOWEST_LAYERS) -> list[dict[str, Any]]:
        """The ``count`` layers of a report that take the longest, slowest first."""
        return sorted(source.report.layers or [], key=lambda layer: -layer["time_ms"])[:count]

    def to_dict(self) -> dict[str, Any]:
        """comparison.json: the rows, each run's stages and target, and a summary of every latency report."""
        return {
            "schema": COMPARISON_SCHEMA,
            "created": self.created,
            "runs": [{"name": run.name, "folder": str(run.folder), "target": run.target, "task": run.config.get("task"),
                      "model": run.config.get("model"), "quick": bool(run.config.get("quick")), "metric": run.metric,
                      "runtimes": run.runtimes,
                      "stages": {stage: {key: manifest.get(key) for key in ("status", "reason", "wall_s")} for stage, manifest in run.manifests.items()}}
                     for run in self.runs],
            "columns": self.columns,
            "rows": self.rows,
            "latency_reports": [{"file": str(source.file), "label": source.label, "run": source.run, "model": source.model,
                                 "model_path": source.report.model["path"], "source": source.report.source,
                                 "machine": source.report.machine, "host_ms": source.report.host,
                                 "gpu_compute_ms": source.report.latency_ms.get("gpu_compute"),
                                 "throughput_ips": source.report.throughput_ips, "memory_mb": source.report.memory_mb,
                                 "tegrastats": source.report.tegrastats, "slowest_layers": self.slowest_layers(source)}
                                for source in self.sources],
        }
