"""Latency tables: how long each conv or linear of a model takes in a runtime at fewer kept channels.

For every layer shape of a model (:mod:`.layer_shapes`, as it runs on the example input) a one-layer ONNX is
timed at a grid of kept-channel counts: along the output channels at all inputs kept, and along the input
channels at all outputs kept (a depthwise conv: in and out together). A layer kept at ``a`` inputs and ``b``
outputs is predicted as ``out_curve(b) * in_curve(a) / dense``, and a count between two measured ones costs
what the next measured count above it costs (the curves are step functions: kernels work in tiles of
channels). The product is exact where time grows with in x out channels, as MACs do, and keeps both
curves' steps; it costs two curves per layer instead of a grid of every (in, out) pair.

Timing is in this process with the registered runtime's runner (:mod:`.runtimes`): one session per grid
point, ``warmup`` runs each, then ``rounds`` rounds that each time ``runs`` runs of every point in turn
(alternating direction), so a slow spell of the machine spreads over every point; a point's latency is the
median of all its runs. A fresh process per point, as whole models are profiled, would cost more than the
timings themselves (a model has hundreds of points).

Tables are cached as JSON, one file per runtime (and version), machine, thread count, precision and layer
shape, under ``$EDGECOMPRESS_LATENCY_CACHE`` or ``$XDG_CACHE_HOME/edgecompress/layer-latency``
(``~/.cache/...``); a later call measures only the grid points the file lacks.

An *imported* runtime (``tensorrt``) is never timed here: its tables are measured on the device (the latency
bundle of :mod:`edgecompress.engine.latency_bundle` times the same one-layer models there) and saved into the
cache by :func:`save_imported_tables`, one file per runtime, device (a target name), precision and shape; a
later import replaces a shape's table. Reading them needs the device's name, and a missing point is an error
saying how to measure it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import EdgeCompressError
from ..graph import ChannelGraph, analyze
from ..progress import track
from .layer_shapes import PRECISIONS, LayerShape, layer_shapes
from .machine import machine_info
from .runtimes import get_runtime, load_runner

CACHE_ENV = "EDGECOMPRESS_LATENCY_CACHE"
SCHEMA = "edgecompress.layer-latency/1"
Point = tuple[int, int]  # (kept in channels, kept out channels)


@dataclass(frozen=True)
class ImportedRuntime:
    """A runtime whose tables are measured on another machine and imported into the cache: the precisions it runs, and
    how its tables are made (the fix when a table lacks points)."""

    name: str
    precisions: tuple[str, ...]
    how: str


IMPORTED_RUNTIMES: dict[str, ImportedRuntime] = {}


def register_imported_runtime(name: str, precisions: Sequence[str], how: str) -> ImportedRuntime:
    """Register ``name`` as a runtime whose tables come only from :func:`save_imported_tables`."""
    IMPORTED_RUNTIMES[name] = ImportedRuntime(name, tuple(precisions), how)
    return IMPORTED_RUNTIMES[name]


register_imported_runtime(
    "tensorrt", ("fp32", "fp16", "int8"),
    "TensorRT does not run here: write the one-layer models with `edgecompress latency-bundle --model MODEL --target DEVICE "
    "--out DIR` (the build's --image-size, --round-to and --ignore), run DIR/time_layers.sh on the device, and import its "
    "layer_latency.json with `edgecompress latency-import` (Python: edgecompress.engine.latency_bundle)")


@dataclass(frozen=True)
class LayerTable:
    """Measured latencies (ms) of one layer shape at ``points`` (kept in, kept out channels); see the module doc
    for how a count between or off the measured curves is predicted."""

    shape: LayerShape
    points: Mapping[Point, float]

    def __post_init__(self) -> None:
        if (self.shape.in_channels, self.shape.out_channels) not in self.points:
            raise EdgeCompressError(f"a latency table of {self.shape} needs the dense point "
                                    f"({self.shape.in_channels}, {self.shape.out_channels}); it has {sorted(self.points)}")

    @property
    def dense_ms(self) -> float:
        return self.points[(self.shape.in_channels, self.shape.out_channels)]

    @cached_property
    def _arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each curve as (counts, ms) arrays, for lookups."""
        arrays = {}
        for axis in ("in", "out"):
            counts, ms = zip(*self.curve(axis))
            arrays[axis] = (np.array(counts, dtype=int), np.array(ms, dtype=float))
        return arrays

    def curve(self, axis: str = "out") -> list[tuple[int, float]]:
        """The step curve along ``axis`` ("out", "in"; a depthwise conv has one, "out" and "in" alike): (channels, ms), ascending."""
        full_in, full_out = self.shape.in_channels, self.shape.out_channels
        if self.shape.depthwise:
            chosen = [(i, ms) for (i, o), ms in self.points.items() if i == o]
        elif axis == "out":
            chosen = [(o, ms) for (i, o), ms in self.points.items() if i == full_in]
        elif axis == "in":
            chosen = [(i, ms) for (i, o), ms in self.points.items() if o == full_out]
        else:
            raise EdgeCompressError(f"a latency curve runs along 'in' or 'out' channels, not {axis!r}")
        return sorted(chosen)

    def latency(self, kept_in: int | np.ndarray, kept_out: int | np.ndarray) -> np.ndarray:
        """Predicted ms at ``kept_in`` input and ``kept_out`` output channels (numbers or arrays of them)."""
        out_ms = _step_lookup(*self._arrays["out"], kept_out)
        if self.shape.depthwise:
            return out_ms
        return out_ms * _step_lookup(*self._arrays["in"], kept_in) / self.dense_ms

    def record(self) -> dict[str, Any]:
        return {"shape": self.shape.record(), "points": [{"in": i, "out": o, "ms": ms} for (i, o), ms in sorted(self.points.items())]}


def _step_lookup(counts: np.ndarray, values: np.ndarray, kept: int | np.ndarray) -> np.ndarray:
    """The latency of the smallest measured count at or above ``kept`` (of the largest measured count for more)."""
    return values[np.minimum(np.searchsorted(counts, kept, side="left"), len(counts) - 1)]


@dataclass(frozen=True)
class LatencyTables:
    """The tables of one model's layers: module name -> one table per call, and where they were measured.
    ``measured_points`` / ``cached_points``: grid points timed by this call / read from the cache."""

    tables: Mapping[str, tuple[LayerTable, ...]]
    runtime: str = ""
    precision: str = "fp32"
    threads: int | None = None
    machine: Mapping[str, Any] = field(default_factory=dict)
    measured_points: int = 0
    cached_points: int = 0

    def describe(self) -> str:
        if self.machine.get("device"):  # imported: measured on that device
            facts = "; ".join(_device_facts(measured) for measured in self.machine.get("measured_on", ()))
            return f"{self.runtime} {self.precision} on {self.machine['device']}" + (f" ({facts})" if facts else "")
        where = self.machine.get("cpu") or "this machine"
        return f"{self.runtime} {self.precision}, {self.threads or 'default'} threads, {where}"


def _device_facts(device: Mapping[str, Any]) -> str:
    """``TensorRT 10.3.0, sm_87, power mode 15W (1)`` from a device record (engine_meta.py's device.json)."""
    parts = [f"TensorRT {device['tensorrt']}" if device.get("tensorrt") else "", device.get("gpu_arch") or "",
             f"power mode {device['power_mode']}" if device.get("power_mode") else ""]
    return ", ".join(part for part in parts if part) or "device not identified"


def cache_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where tables are cached: ``cache_dir``, else ``$EDGECOMPRESS_LATENCY_CACHE``, else ``$XDG_CACHE_HOME/edgecompress/layer-latency``."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgecompress" / "layer-latency"


@lru_cache(maxsize=1)
def machine_key() -> dict[str, Any]:
    """What identifies this machine for a table: CPU model and logical CPUs, GPU, and a Jetson's power mode."""
    info = machine_info()
    return {"cpu": info["cpu"], "cpus": os.cpu_count(), "gpu": info["gpu"], "power_mode": info["power_mode"]}


def _runtime_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def grid_step(round_to: int | str) -> int:
    """The grid step of the tables for pruning with ``round_to``: itself, or 8 for 1 or "auto" (each kept count is then
    measured or lies on a plateau of the step curve between two measured ones)."""
    return round_to if isinstance(round_to, int) and round_to > 1 else 8


def grid(channels: int, step: int, max_points: int | None) -> list[int]:
    """Kept-channel counts to measure along one axis of ``channels``: multiples of ``step`` (widened to a multiple of
    it so that at most ``max_points`` are timed) and ``channels`` itself."""
    if max_points is not None and max_points >= 1:
        step *= max(1, -(-channels // (step * max_points)))
    return sorted({*range(step, channels, step), channels})


def grid_points(shape: LayerShape, axes: Iterable[str], step: int, max_points: int | None) -> list[Point]:
    """The (in, out) points a table of ``shape`` measures: the dense point, and a curve along each of ``axes``."""
    full_in, full_out = shape.in_channels, shape.out_channels
    axes = set(axes) & set(shape.resizable)
    if shape.depthwise:
        return [(count, count) for count in grid(full_out, step, max_points)] if axes else [(full_in, full_out)]
    points = {(full_in, full_out)}
    if "out" in axes:
        points |= {(full_in, count) for count in grid(full_out, step, max_points)}
    if "in" in axes:
        points |= {(count, full_out) for count in grid(full_in, step, max_points)}
    return sorted(points)


class TableCache:
    """One JSON file per table key (runtime, version, machine, threads, precision, shape), named by the key's hash."""

    def __init__(self, folder: Path, key: Mapping[str, Any]):
        self.folder, self.key = folder, dict(key)

    def path(self, shape: LayerShape) -> Path:
        text = json.dumps({**self.key, "shape": shape.record()}, sort_keys=True)
        return self.folder / f"{self.key['runtime']}-{self.key['precision']}-{hashlib.sha256(text.encode()).hexdigest()[:20]}.json"

    def read(self, shape: LayerShape) -> dict[str, Any] | None:
        """The cached record of ``shape``'s table, or None."""
        try:
            record = json.loads(self.path(shape).read_text())
        except (OSError, ValueError):
            return None
        if record.get("schema") != SCHEMA or record.get("key") != self.key or record.get("shape") != shape.record():
            return None  # another key hashed alike, or an older format: measure again
        return record

    def load(self, shape: LayerShape) -> dict[Point, float]:
        record = self.read(shape)
        return {(point["in"], point["out"]): point["ms"] for point in record["points"]} if record else {}

    def save(self, shape: LayerShape, points: Mapping[Point, float], settings: Mapping[str, Any]) -> None:
        """Write atomically (a concurrent reader sees the old file or the new one)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"schema": SCHEMA, "key": self.key, "shape": shape.record(), "settings": dict(settings), "measured_at": time.time(),
                  **LayerTable(shape, points).record()}
        handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        with os.fdopen(handle, "w") as file:
            json.dump(record, file, indent=1)
        os.replace(temporary, self.path(shape))


def time_points(models: Sequence[Path], input_shapes: Sequence[tuple[int, ...]], *, runtime: str, threads: int | None, warmup: int,
                runs: int, rounds: int, seed: int = 0) -> list[float]:
    """Median ms of each model (interleaved: every round times ``runs`` runs of each model in turn, alternating the order)."""
    factory = load_runner(get_runtime(runtime).runner)
    runners = [factory(str(path), shape, threads, seed) for path, shape in zip(models, input_shapes)]
    for run in runners:
        for _ in range(warmup):
            run()
    times: list[list[float]] = [[] for _ in runners]
    for round_index in range(rounds):
        order = range(len(runners)) if round_index % 2 == 0 else reversed(range(len(runners)))
        for index in order:
            run = runners[index]
            for _ in range(runs):
                start = time.perf_counter()
                run()
                times[index].append((time.perf_counter() - start) * 1e3)
    return [float(np.median(point_times)) for point_times in times]


def check_measurement(precision: str, warmup: int, runs: int, rounds: int, step: int, runtime: str = "onnxruntime") -> None:
    if runtime in IMPORTED_RUNTIMES:
        raise EdgeCompressError(f"{runtime} tables are not measured in this process; {IMPORTED_RUNTIMES[runtime].how}")
    if precision not in PRECISIONS:
        raise EdgeCompressError(f"layer tables are measured in {' or '.join(PRECISIONS)} here, not {precision!r}; "
                                "fp16 needs a runtime with fp16 kernels (TensorRT on the device)")
    if warmup < 0 or runs < 1 or rounds < 1 or step < 1:
        raise EdgeCompressError(f"measure with warmup >= 0, runs >= 1, rounds >= 1 and step >= 1 (got {warmup}, {runs}, {rounds}, {step})")


def measure_layer_table(shape: LayerShape, axes: Iterable[str] = ("in", "out"), *, runtime: str = "onnxruntime", precision: str = "fp32",
                        threads: int | None = None, step: int = 8, max_points: int | None = 16, warmup: int = 3, runs: int = 10,
                        rounds: int = 3, cache_dir: str | os.PathLike | None = None, seed: int = 0) -> tuple[LayerTable, int]:
    """The table of one layer shape along ``axes`` (see :func:`grid_points`), and how many points were timed now (0: all cached)."""
    check_measurement(precision, warmup, runs, rounds, step, runtime)
    cache = _cache(runtime, precision, threads, cache_dir)
    return _table(shape, grid_points(shape, axes, step, max_points), cache,
                  dict(runtime=runtime, threads=threads, warmup=warmup, runs=runs, rounds=rounds, seed=seed))


def _cache(runtime: str, precision: str, threads: int | None, cache_dir: str | os.PathLike | None) -> TableCache:
    package = get_runtime(runtime).package  # an unknown runtime or a missing package fails here, before any work
    key = {"runtime": runtime, "version": _runtime_version(package), "precision": precision, "threads": threads, "machine": dict(machine_key())}
    return TableCache(cache_folder(cache_dir), key)


def _table(shape: LayerShape, wanted: list[Point], cache: TableCache, settings: dict[str, Any]) -> tuple[LayerTable, int]:
    known = cache.load(shape)
    missing = [point for point in wanted if point not in known]
    if missing:
        from .layer_onnx import one_layer_onnx  # onnx loads only when something is measured

        precision = cache.key["precision"]
        with tempfile.TemporaryDirectory(prefix="edgecompress-layer-") as folder:
            paths, inputs = [], []
            for kept_in, kept_out in missing:
                pruned = shape.at(kept_in, kept_out)
                paths.append(Path(folder) / f"{kept_in}-{kept_out}.onnx")
                paths[-1].write_bytes(one_layer_onnx(pruned, precision, settings["seed"]).SerializeToString())
                inputs.append(pruned.input_shape)
            timed = time_points(paths, inputs, runtime=settings["runtime"], threads=settings["threads"], warmup=settings["warmup"],
                                runs=settings["runs"], rounds=settings["rounds"], seed=settings["seed"])
        known.update(zip(missing, timed))
        cache.save(shape, known, {key: settings[key] for key in ("warmup", "runs", "rounds")})
    return LayerTable(shape, {point: known[point] for point in wanted}), len(missing)


Request = tuple[LayerShape, tuple[Point, ...]]  # a layer shape and the grid points its table measures


def table_requests(model: nn.Module, example_input: torch.Tensor, *, resizable: Mapping[str, Sequence[str]] | None = None,
                   ignore: Sequence[str] = (), step: int = 8, max_points: int | None = 16) -> dict[str, tuple[Request, ...]]:
    """Module name -> (shape, grid points) of each of its calls on ``example_input``: the tables the planner needs
    (see :func:`measure_latency_tables` for the arguments)."""
    if resizable is None:
        resizable = prunable_dims(analyze(model, example_input, ignore))
    return {name: tuple((shape, tuple(grid_points(shape, resizable.get(name, ()), step, max_points))) for shape in shapes)
            for name, shapes in layer_shapes(model, example_input).items()}


def measure_latency_tables(
    model: nn.Module, example_input: torch.Tensor, *, resizable: Mapping[str, Sequence[str]] | None = None, ignore: Sequence[str] = (),
    runtime: str = "onnxruntime", precision: str = "fp32", device: str | None = None, threads: int | None = None, step: int = 8,
    max_points: int | None = 16, warmup: int = 3, runs: int = 10, rounds: int = 3, cache_dir: str | os.PathLike | None = None, seed: int = 0,
) -> LatencyTables:
    """Tables for every conv and linear of ``model`` as it runs on ``example_input`` (batch included).

    ``resizable``: module name -> the channel dims ("in", "out") pruning may cut (the curves measured); by default
    the channel analysis of ``edgecompress.graph.analyze`` (with ``ignore``) decides (a layer none of whose channels
    can be cut gets its dense point only). ``step`` / ``max_points``: the grid of each curve (see :func:`grid`); measure at
    ``step`` = the ``round_to`` you prune with, so every count the planner can choose is measured.
    ``warmup`` / ``runs`` / ``rounds``: per point, see :func:`time_points`. Shapes measured once serve every
    layer of that shape; cached points are not timed again.
    An imported runtime (``tensorrt``) reads the tables imported for ``device`` (a target name) and times nothing.
    """
    if runtime in IMPORTED_RUNTIMES:
        cache = imported_cache(runtime, precision, device, cache_dir)
        return _imported_tables(table_requests(model, example_input, resizable=resizable, ignore=ignore, step=step, max_points=max_points), cache)
    check_measurement(precision, warmup, runs, rounds, step, runtime)
    cache = _cache(runtime, precision, threads, cache_dir)
    requests = table_requests(model, example_input, resizable=resizable, ignore=ignore, step=step, max_points=max_points)
    settings = dict(runtime=runtime, threads=threads, warmup=warmup, runs=runs, rounds=rounds, seed=seed)
    made: dict[Request, LayerTable] = {}
    measured = cached = 0
    for shape, points in track(sorted({r for calls in requests.values() for r in calls}, key=str), f"layer latency tables ({runtime}, {precision})"):
        made[(shape, points)], timed = _table(shape, list(points), cache, settings)
        measured, cached = measured + timed, cached + len(points) - timed
    tables = {name: tuple(made[request] for request in calls) for name, calls in requests.items()}
    return LatencyTables(tables, runtime, precision, threads, dict(machine_key()), measured, cached)


def imported_cache(runtime: str, precision: str, device: str | None, cache_dir: str | os.PathLike | None = None) -> TableCache:
    """Where the tables of an imported runtime measured on ``device`` (a target name) in ``precision`` are cached."""
    imported = IMPORTED_RUNTIMES.get(runtime)
    if imported is None:
        raise EdgeCompressError(f"{runtime!r} is not an imported runtime; imported ones: {', '.join(IMPORTED_RUNTIMES)}")
    if not device:
        raise EdgeCompressError(f"{runtime} tables are imported per device: name the target they were measured on (e.g. jetson-orin-nano)")
    if precision not in imported.precisions:
        raise EdgeCompressError(f"{runtime} tables are in {', '.join(imported.precisions)}, not {precision!r}")
    return TableCache(cache_folder(cache_dir), {"runtime": runtime, "precision": precision, "device": device})


def save_imported_tables(tables: Iterable[LayerTable], runtime: str, precision: str, device: str, settings: Mapping[str, Any],
                         cache_dir: str | os.PathLike | None = None) -> Path:
    """Write tables measured on ``device`` into the cache, each replacing the table of its shape; ``settings`` (how they
    were measured, ``device``: the device record) go into every file. Returns the cache folder."""
    cache = imported_cache(runtime, precision, device, cache_dir)
    for table in tables:
        cache.save(table.shape, table.points, settings)
    return cache.folder


def _imported_tables(requests: Mapping[str, tuple[Request, ...]], cache: TableCache) -> LatencyTables:
    """The requested tables from an imported runtime's cache; a missing point is an error saying how to measure it."""
    runtime, precision, device = cache.key["runtime"], cache.key["precision"], cache.key["device"]
    made: dict[Request, LayerTable] = {}
    lacking: dict[LayerShape, list[Point]] = {}
    measured_on: list[dict] = []
    for shape, points in sorted({r for calls in requests.values() for r in calls}, key=str):
        record = cache.read(shape) or {"points": [], "settings": {}}
        known = {(point["in"], point["out"]): point["ms"] for point in record["points"]}
        if missing := [point for point in points if point not in known]:
            lacking[shape] = missing
            continue
        made[(shape, points)] = LayerTable(shape, {point: known[point] for point in points})
        if (facts := record["settings"].get("device")) and facts not in measured_on:
            measured_on.append(facts)
    total = sum(len(points) for _, points in {r for calls in requests.values() for r in calls})
    if lacking:
        shape, missing = next(iter(lacking.items()))
        count = sum(len(points) for points in lacking.values())
        raise EdgeCompressError(f"the {runtime} {precision} tables of {device} in {cache.folder} lack {count} of the {total} points this model needs "
                                f"({len(lacking)} layer shapes, e.g. {shape} at {missing[0][0]}->{missing[0][1]} channels); "
                                f"{IMPORTED_RUNTIMES[runtime].how}")
    tables = {name: tuple(made[request] for request in calls) for name, calls in requests.items()}
    return LatencyTables(tables, runtime, precision, None, {"device": device, "measured_on": measured_on}, 0, total)


def prunable_dims(graph: ChannelGraph) -> dict[str, tuple[str, ...]]:
    """Module name -> the channel dims ("in", "out") of it that some prunable channel group of ``graph`` cuts."""
    dims: dict[str, set[str]] = {}
    for group in graph.prunable_groups:
        for member in group.members:
            dims.setdefault(member.module, set()).update(member.role.dims)
    return {name: tuple(sorted(found)) for name, found in dims.items()}
