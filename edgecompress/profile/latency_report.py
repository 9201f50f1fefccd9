"""The latency report (schema ``edgecompress.latency/1``): one timed model on one device, from any source.

``edgecompress profile``, the C++ runner in deploy/ and the trtexec importers all write this one shape, so
``edgecompress report`` compares them side by side. The schema is ``latency_report.schema.json`` next to
this module; a report is checked against it with ``jsonschema`` when that package is installed (the dev
extra), otherwise by a check of the keys the schema requires.

Percentiles are numpy's default (linear interpolation), as in the C++ runner, so the figures agree.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..artifacts import write_json
from ..errors import EdgeCompressError

if TYPE_CHECKING:
    from rich.table import Table

SCHEMA_ID = "edgecompress.latency/1"
SCHEMA_PATH = Path(__file__).with_name("latency_report.schema.json")
STAT_KEYS = ("median", "p90", "p99", "mean", "min", "max", "count")


def latency_stats(times_ms: Sequence[float]) -> dict[str, float | int]:
    """Median, p90, p99, mean, min, max and count of per-iteration times (ms), as the schema's ``stats``."""
    times = np.asarray(times_ms, dtype=np.float64)
    if times.size == 0:
        raise EdgeCompressError("no timed iterations to summarise; run at least one iteration (--iterations 1 or more)")
    return {
        "median": float(np.percentile(times, 50)), "p90": float(np.percentile(times, 90)), "p99": float(np.percentile(times, 99)),
        "mean": float(times.mean()), "min": float(times.min()), "max": float(times.max()), "count": int(times.size),
    }


def throughput(times_ms: Sequence[float], batch: int = 1, wall_s: float | None = None) -> float:
    """Batch items per second over the timed run: its wall time when known, else the sum of the iterations."""
    seconds = wall_s if wall_s else float(np.sum(times_ms)) / 1e3
    return len(times_ms) * batch / seconds if seconds > 0 else 0.0


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The JSON schema every latency report follows."""
    return json.loads(SCHEMA_PATH.read_text())


def _required_key_problems(data: Any, node: dict[str, Any], where: str) -> list[str]:
    """What is missing or mistyped in ``data`` by ``node``'s required keys and nested objects (no jsonschema at hand)."""
    if "$ref" in node:
        node = schema()["$defs"][node["$ref"].rpartition("/")[2]]
    if "const" in node and data != node["const"]:
        return [f"{where or 'report'} must be {node['const']!r}, got {data!r}"]
    if node.get("type") != "object" and "required" not in node:
        return []
    if not isinstance(data, dict):
        return [f"{where or 'report'} must be an object"]
    problems = [f"{where + '.' if where else ''}{key} is missing" for key in node.get("required", ()) if key not in data]
    for key, child in node.get("properties", {}).items():
        if key in data and data[key] is not None and isinstance(child, dict):
            problems += _required_key_problems(data[key], child, f"{where}.{key}" if where else key)
    return problems


def validate_report(data: Any, source: str | os.PathLike = "latency report") -> dict[str, Any]:
    """``data`` if it follows the schema, else a one-line :class:`EdgeCompressError` naming ``source`` and the first problem."""
    try:
        import jsonschema
    except ImportError:
        problems = _required_key_problems(data, schema(), "")
    else:
        errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(data), key=lambda e: list(e.absolute_path))
        problems = [f"{'.'.join(str(p) for p in error.absolute_path) or 'report'}: {error.message.splitlines()[0]}" for error in errors]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise EdgeCompressError(f"{source} is not a latency report ({SCHEMA_ID}): {problems[0]}{more}; "
                                f"write it with `edgecompress profile` or the deploy/ runner, or fix it to match {SCHEMA_PATH.name}")
    return data


@dataclass
class LatencyReport:
    """One timed model on one device, with the fields of ``latency_report.schema.json``."""

    model: dict[str, Any]
    runtime: dict[str, Any]
    machine: dict[str, Any]
    inputs: list[dict[str, Any]]
    settings: dict[str, Any]
    latency_ms: dict[str, Any]
    throughput_ips: float
    memory_mb: dict[str, Any]
    source: str = "edgecompress profile"
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    times_ms: list[float] | None = None
    layers: list[dict[str, Any]] | None = None
    tegrastats: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys the schema does not name, kept as read

    @classmethod
    def from_times(cls, times_ms: Sequence[float], *, model: dict[str, Any], runtime: dict[str, Any], machine: dict[str, Any],
                   inputs: list[dict[str, Any]], settings: dict[str, Any], peak_host_mb: float | None = None,
                   wall_s: float | None = None, **extra: Any) -> LatencyReport:
        """A report of host latencies ``times_ms``: the statistics and throughput computed from them, the times kept."""
        batch = settings.get("batch") or 1
        return cls(model=model, runtime=runtime, machine=machine, inputs=inputs, settings=settings,
                   latency_ms={"host": latency_stats(times_ms), "gpu_compute": None},
                   throughput_ips=throughput(times_ms, batch, wall_s), memory_mb={"peak_host": peak_host_mb, "gpu": None},
                   times_ms=[float(t) for t in times_ms], **extra)

    @classmethod
    def from_dict(cls, data: Any, source: str | os.PathLike = "latency report") -> LatencyReport:
        """A report from its JSON form, checked against the schema first; keys the schema does not name are kept in ``extra``."""
        validate_report(data, source)
        names = set(cls.__dataclass_fields__) - {"extra"}
        return cls(**{key: value for key, value in data.items() if key in names},
                   extra={key: value for key, value in data.items() if key not in names and key != "schema"})

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyReport:
        """Read and check a report file; a missing file, bad JSON or a schema mismatch is a one-line error naming it."""
        return cls.from_dict(read_json(path, "a latency report written by `edgecompress profile --json`"), path)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, ``schema`` first; optional parts left out when absent."""
        data = {"schema": SCHEMA_ID, **asdict(self)}
        extra = data.pop("extra")
        return {**{key: value for key, value in data.items() if value is not None}, **extra}

    def save(self, path: str | os.PathLike) -> Path:
        """Check the report against the schema and write it atomically."""
        return write_json(path, validate_report(self.to_dict(), path))

    @property
    def host(self) -> dict[str, float | int]:
        """Host latency statistics (ms)."""
        return self.latency_ms["host"]


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parse a JSON file; a missing file or bad JSON is a one-line error naming the file and ``what`` it should be."""
    path = Path(path)
    if not path.is_file():
        raise EdgeCompressError(f"{path} not found; pass {what}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise EdgeCompressError(f"{path} is not valid JSON ({error}); pass {what}") from None



def report_tables(report: LatencyReport, slowest_layers: int = 10) -> list[Table]:
    """Rich tables of one report: latency statistics (host, GPU compute) with throughput, memory, size and board state
    in the caption; then its slowest layers when it has per-layer times."""
    from rich.table import Table

    runtime, model, memory, board = report.runtime, report.model, report.memory_mb, report.tegrastats or {}
    title = f"{Path(model['path']).name}: " + " ".join(str(v) for v in (runtime.get("name"), runtime.get("version"), runtime.get("device"), runtime.get("precision")) if v)
    facts = [f"throughput {report.throughput_ips:.1f}/s"]
    facts += [f"peak host memory {memory['peak_host']:.1f} MB"] if memory.get("peak_host") is not None else []
    facts += [f"GPU memory {memory['gpu']:.1f} MB"] if memory.get("gpu") is not None else []
    facts += [f"size {model['bytes'] / 2**20:.2f} MB"] if model.get("bytes") is not None else []
    facts += [f"{rail} {power['mean']:.0f} mW mean" for rail, power in board.get("power_mw", {}).items()]
    facts += [f"GR3D {board['gr3d_percent']['mean']:.0f}% mean"] if "gr3d_percent" in board else []
    facts += [f"power mode {report.machine['power_mode']}"] if report.machine.get("power_mode") else []
    facts += [f"{report.source} on {report.machine.get('gpu') or report.machine.get('cpu') or 'an unnamed machine'}"]
    table = Table(title=title, caption="; ".join(facts))
    for column in ("latency", "median ms", "p90 ms", "p99 ms", "mean ms", "min ms", "max ms", "count"):
        table.add_column(column, justify="left" if column == "latency" else "right")
    for kind in ("host", "gpu_compute"):
        stats = report.latency_ms.get(kind)
        if stats:
            table.add_row(kind.replace("_", " "), *(f"{stats[key]:.3f}" for key in STAT_KEYS[:-1]), str(stats["count"]))
    tables = [table]
    if report.layers:
        shown = min(slowest_layers, len(report.layers))
        runs = report.settings.get("layer_runs")
        layers = Table(title=f"slowest layers ({shown} of {len(report.layers)})" if shown < len(report.layers) else "layers, slowest first",
                       caption=f"median of {runs} runs of the runtime's profiler; % of all layers' time" if runs else None)
        kernels = any(layer.get("kernel") for layer in report.layers)  # what a runtime's profiler ran each layer with
        for column in ("layer", "type", *(("kernel",) if kernels else ()), "precision", "ms", "%"):
            layers.add_column(column, justify="right" if column in ("ms", "%") else "left", overflow="fold")
        for layer in sorted(report.layers, key=lambda layer: -layer["time_ms"])[:slowest_layers]:
            percent = layer.get("percent")
            layers.add_row(layer["name"], layer.get("type") or "–", *((layer.get("kernel") or "–",) if kernels else ()),
                           layer.get("precision") or "–", f"{layer['time_ms']:.4f}", "–" if percent is None else f"{percent:.1f}")
        tables.append(layers)
    return tables
