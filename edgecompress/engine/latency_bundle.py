"""Per-layer latency tables measured in TensorRT on the device: the latency bundle, and the import of its results.

TensorRT runs only on the device, so the tables of the ``tensorrt`` runtime (:mod:`edgecompress.profile.layer_latency`)
are measured there. :func:`write_latency_bundle` writes, for every layer shape of a model and every grid point the
latency planner asks for (the same :func:`~edgecompress.profile.layer_latency.table_requests` as the CPU tables), the
one-layer ONNX at those kept channels (one file per distinct pruned shape: a point of one layer is often the dense
shape of another), in the target's precision: fp32, fp16 (fp16 inputs, weights and output) or int8 as TensorRT's Q/DQ
layout (int8 symmetric input and per-channel weights, float bias; see :mod:`edgecompress.profile.layer_onnx`). Its
``time_layers.sh`` checks the device (``engine_meta.py``, as the engine bundle does), builds and times each model
with one trtexec call in the target's precision flags (a timing cache per GPU and TensorRT release; a point already
timed is kept, so a rerun resumes), and ``layer_times.py`` writes ``layer_latency.json``: each model's median GPU
compute time (trtexec's ``computeMs``), read with :mod:`.trtexec_reports`.

:func:`import_layer_latency` checks that file and saves its tables into the table cache as runtime ``tensorrt`` for the
bundle's target and precision, where ``build --target-latency F --latency-runtime tensorrt`` reads them.

A point's time is the whole one-layer engine's: the conv's kernels, and for int8 the quantization of its float input,
which in a network is fused into the layer before; the step curves (where a channel count crosses a kernel's tile)
are the conv's own.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..artifacts import atomic_dir, write_json, write_text
from ..errors import EdgeCompressError
from ..profile.layer_latency import LayerTable, save_imported_tables, table_requests
from ..profile.layer_onnx import one_layer_onnx
from ..profile.layer_shapes import LayerShape
from ..progress import track
from .bundle import CACHE, copy_file, shell_line, write_script
from .layer_times import MANIFEST_SCHEMA, RESULTS_SCHEMA
from .target import Target
from .trtexec import check_precision, trtexec_command

RUNTIME = "tensorrt"
MANIFEST = "layers.json"
RESULTS = "layer_latency.json"
SCRIPT = "time_layers.sh"
DEVICE_SCRIPTS = ("engine_meta.py", "trtexec_reports.py", "layer_times.py")
# trtexec timing of each model: warm-up, then exactly ITERATIONS inferences (--duration=0: no minimum time), so the
# times file of a 20 us layer stays small.
WARMUP_MS, ITERATIONS = 200, 200


@dataclass(frozen=True)
class LatencyBundle:
    """What :func:`write_latency_bundle` wrote: the folder's files, and how many models, grid points and layer shapes."""

    folder: Path
    paths: dict[str, Path]
    models: int
    points: int
    shapes: int
    precision: str


@dataclass(frozen=True)
class ImportedLatency:
    """What :func:`import_layer_latency` saved: the device and precision, tables and points, the cache folder, and the device record."""

    device: str
    precision: str
    tables: int
    points: int
    folder: Path
    measured_on: dict[str, Any] = field(default_factory=dict)


def model_file(shape: LayerShape) -> str:
    """The bundle's name of the one-layer model of ``shape``: readable, and unique by a hash of the whole shape."""
    digest = hashlib.sha256(json.dumps(shape.record(), sort_keys=True).encode()).hexdigest()[:12]
    return f"layers/{shape.op}-{shape.in_channels}-{shape.out_channels}-{digest}.onnx"


def _check_target(target: Target, precision: str) -> None:
    if target.tensorrt is None:
        raise EdgeCompressError(f"target {target.name} does not run TensorRT: measure its latency tables here "
                                "(edgecompress.profile.measure_latency_tables, or build --latency-runtime onnxruntime|openvino)")
    check_precision(target, precision)


def write_latency_bundle(
    model: nn.Module, example_input: torch.Tensor, target: Target, out_dir: str | os.PathLike, *, precision: str | None = None,
    ignore: Sequence[str] = (), step: int = 8, max_points: int | None = 16, model_name: str = "model", workspace_mib: int | None = None,
    warmup_ms: int = WARMUP_MS, iterations: int = ITERATIONS, seed: int = 0,
) -> LatencyBundle:
    """Write the latency bundle of ``model`` (on ``example_input``) for ``target`` into ``out_dir`` (replaced as a whole).

    ``precision``: the target's by default. ``ignore``, ``step`` and ``max_points`` choose the grid as
    :func:`~edgecompress.profile.measure_latency_tables` does: pass the build's ``--ignore`` and its ``--round-to``
    as ``step`` (8 for ``--round-to`` 1), so the tables hold every point the build's planner asks for. trtexec times
    each model for ``iterations`` inferences after ``warmup_ms`` of warm-up.
    """
    precision = precision or target.precision
    _check_target(target, precision)
    if step < 1:
        raise EdgeCompressError(f"the grid step must be >= 1 (got {step}); pass the --round-to you will build with")
    if warmup_ms < 0 or iterations < 1:
        raise EdgeCompressError(f"time with warmup_ms >= 0 and iterations >= 1 (got {warmup_ms}, {iterations})")
    out = Path(out_dir)
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file()):
        raise EdgeCompressError(f"--out {out} holds other files; pass a new or empty folder (the bundle replaces it as a whole)")
    requests = {request for calls in table_requests(model, example_input, ignore=ignore, step=step, max_points=max_points).values()
                for request in calls}
    tables = [{"shape": shape.record(), "points": [{"in": i, "out": o, "file": model_file(shape.at(i, o))} for i, o in points]}
              for shape, points in sorted(requests, key=str)]
    pruned = {model_file(shape.at(i, o)): shape.at(i, o) for shape, points in requests for i, o in points}
    manifest = {
        "schema": MANIFEST_SCHEMA, "model": model_name, "input_shape": list(example_input.shape), "target": target.name,
        "tensorrt": target.tensorrt, "gpu_arch": target.gpu_arch, "precision": precision, "layout": "tensorrt", "opset": target.export_opset,
        "grid": {"step": step, "max_points": max_points, "ignore": list(ignore)},
        "timing": {"warmup_ms": warmup_ms, "iterations": iterations},
        "files": [{"file": name, "shape": shape.record()} for name, shape in sorted(pruned.items())],
        "tables": tables,
    }
    here = Path(__file__).parent
    with atomic_dir(out) as folder:
        (folder / "layers").mkdir()
        for name in track(sorted(pruned), f"one-layer models ({precision}, {target.name})"):
            layer = one_layer_onnx(pruned[name], precision, seed, layout="tensorrt", opset=target.export_opset)
            (folder / name).write_bytes(layer.SerializeToString())
        for script in DEVICE_SCRIPTS:
            copy_file(here / script, folder / script)
        write_json(folder / MANIFEST, manifest)
        write_script(folder / SCRIPT, time_layers_script(target, precision, sorted(pruned), manifest["timing"], workspace_mib))
        write_text(folder / "README.md", readme(target, precision, model_name, len(pruned), sum(len(t["points"]) for t in tables), manifest["timing"]))
    paths = {"manifest": out / MANIFEST, "script": out / SCRIPT, "readme": out / "README.md", "layers": out / "layers"}
    return LatencyBundle(out, paths, len(pruned), sum(len(points) for _, points in requests), len(requests), precision)


def time_layers_script(target: Target, precision: str, models: Sequence[str], timing: dict[str, int], workspace_mib: int | None = None) -> str:
    """The bash script that checks the device, times every one-layer model with trtexec (``timing``: warmup_ms, iterations)
    and collects the results."""
    detect = ["python3", "engine_meta.py", "detect", "--out", "device.json", "--expect-tensorrt", str(target.tensorrt),
              "--expect-arch", str(target.gpu_arch), "--target", target.name]
    command = trtexec_command(target, "$1", None, precision=precision, workspace_mib=workspace_mib, fp16_onnx=True, timing_cache=CACHE)
    command += [f"--warmUp={timing['warmup_ms']}", f"--iterations={timing['iterations']}", "--duration=0", "--exportTimes=$part"]
    collect = ["python3", "layer_times.py", "--manifest", MANIFEST, "--device", "device.json", "--times", "times", "--out", RESULTS]
    lines = [
        "#!/usr/bin/env bash",
        f"# Time {len(models)} one-layer models in {precision} with trtexec on {target.name} (TensorRT {target.tensorrt}, "
        f"{target.gpu_arch}) and collect their GPU compute times into {RESULTS}. Generated by edgecompress; run it on the device.",
        "# A model already timed is kept (times/NAME.json): rerun the script to resume or to retry the ones trtexec failed on.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        'TRTEXEC="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"',
        '[ -x "$TRTEXEC" ] || { echo "trtexec not found; set TRTEXEC=/path/to/trtexec" >&2; exit 1; }',
        'PYTHON="${PYTHON:-python3}"',
        shell_line(detect) + ' --trtexec "$TRTEXEC"',
        "mkdir -p timing-cache times",
        'CACHE="timing-cache/$("$PYTHON" engine_meta.py cache-name --device device.json)"',
        f"COUNT={len(models)} DONE=0",
        "time_layer() {  # $1: a one-layer model; trtexec builds and times it, its times go to times/NAME.json, its log beside",
        '  DONE=$((DONE + 1))',
        '  local name times part',
        '  name="$(basename "$1" .onnx)"; times="times/$name.json"; part="$times.part"',
        '  [ -s "$times" ] && return 0',
        '  echo "[$DONE/$COUNT] $1" >&2',
        f'  if {shell_line(command)} >"times/$name.log" 2>&1; then',
        '    mv "$part" "$times"',
        "  else",
        '    echo "trtexec failed on $1 (log: times/$name.log)" >&2',
        "  fi",
        "}",
        *(f"time_layer {shlex.quote(name)}" for name in models),
        shell_line(collect),
    ]
    return "\n".join(lines) + "\n"


def readme(target: Target, precision: str, model_name: str, models: int, points: int, timing: dict[str, int]) -> str:
    return f"""# Latency tables of {model_name} on {target.name} ({precision})

{models} one-layer ONNX models in `layers/` (the {points} grid points of the model's layer shapes that latency-budget
pruning asks for), to be timed with trtexec on the device: {target.description}, TensorRT {target.tensorrt}, GPU
{target.gpu_arch}.

```bash
./{SCRIPT}                                             # on the device
TRTEXEC=/usr/src/tensorrt/bin/trtexec ./{SCRIPT}       # if trtexec is not on PATH
```

It records the device in `device.json` (and refuses one with another TensorRT major or GPU), builds and times each
model with one trtexec call ({timing['warmup_ms']} ms warm-up, {timing['iterations']} inferences, `--exportTimes=times/NAME.json`; a
model already timed is kept, so a rerun resumes), and writes `{RESULTS}`: each model's median GPU compute time.
Each model costs an engine build (TensorRT times its tactics) and the timed run; the timing cache in
`timing-cache/` spares the tactic timing of a shape timed before (a rerun, another model's bundle). Bring
`{RESULTS}` back and import it:

```bash
edgecompress latency-import {RESULTS}
edgecompress build --target {target.name} --target-latency 0.5 --latency-runtime tensorrt ...
```
"""


# ---- import ------------------------------------------------------------------------------------------------------


def _read_results(path: Path) -> dict[str, Any]:
    fix = f"pass the {RESULTS} that {SCRIPT} wrote on the device"
    try:
        record = json.loads(path.read_text())
    except OSError as error:
        raise EdgeCompressError(f"cannot read {path} ({error.strerror or error}); {fix}") from None
    except ValueError:
        raise EdgeCompressError(f"{path} is not JSON; {fix}") from None
    found = record.get("schema") if isinstance(record, dict) else None
    if found != RESULTS_SCHEMA:
        hint = f"; it is the bundle's manifest: run {SCRIPT} on the device first" if found == MANIFEST_SCHEMA else ""
        raise EdgeCompressError(f"{path} is not layer-latency results (schema {found!r}, expected {RESULTS_SCHEMA}){hint}; {fix}")
    return record


def _point_ms(model: dict[str, Any] | None, shape: LayerShape, kept_in: int, kept_out: int, file: str) -> float:
    """The measured ms of ``shape`` at (kept_in, kept_out), from the results' entry of its model ``file``."""
    if not (isinstance(kept_in, int) and isinstance(kept_out, int) and 1 <= kept_in <= shape.in_channels and 1 <= kept_out <= shape.out_channels):
        raise EdgeCompressError(f"point {kept_in}->{kept_out} is outside {shape}")
    if model is None:
        raise EdgeCompressError(f"point {kept_in}->{kept_out} of {shape} names {file}, which the results do not list")
    expected = shape.at(kept_in, kept_out)
    if model["shape"] != expected.record():
        found = LayerShape.from_record(model["shape"])
        raise EdgeCompressError(f"mismatched shapes: point {kept_in}->{kept_out} of {shape} names {file}, a model of {found}, not of {expected}")
    ms = model["ms"]
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms) or ms <= 0:
        raise EdgeCompressError(f"{file} has no valid time ({ms!r})")
    return float(ms)


def _tables(record: dict[str, Any]) -> list[LayerTable]:
    models = {entry["file"]: entry for entry in record["files"]}
    untimed = [entry["file"] for entry in record["files"] if entry.get("ms") is None]
    if untimed:
        raise EdgeCompressError(f"{len(untimed)} of the {len(models)} one-layer models have no time ({', '.join(untimed[:3])}"
                                f"{', ...' if len(untimed) > 3 else ''}): trtexec failed on them or did not run; rerun {SCRIPT} on the device "
                                "(it keeps the models already timed; see times/NAME.log) and import again")
    tables = []
    for table in record["tables"]:
        shape = LayerShape.from_record(table["shape"])
        points = {(point["in"], point["out"]): _point_ms(models.get(point["file"]), shape, point["in"], point["out"], point["file"])
                  for point in table["points"]}
        tables.append(LayerTable(shape, points))
    return tables


def import_layer_latency(results: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> ImportedLatency:
    """Check the results of a latency bundle and save its tables into the table cache (runtime ``tensorrt``, the bundle's
    target and precision), each replacing the table of its shape. Nothing is saved unless every point is valid."""
    path = Path(results)
    record = _read_results(path)
    try:
        tables = _tables(record)
        device, precision, measured_on = record["target"], record["precision"], dict(record["device"])
        expected_arch = record["gpu_arch"]
    except EdgeCompressError as error:
        raise EdgeCompressError(f"{path}: {error}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise EdgeCompressError(f"{path} is not complete layer-latency results ({type(error).__name__}: {error}); "
                                f"pass the {RESULTS} that {SCRIPT} wrote, unedited") from None
    if measured_on.get("gpu_arch") and expected_arch and measured_on["gpu_arch"] != expected_arch:
        raise EdgeCompressError(f"{path} was measured on a {measured_on['gpu_arch']} GPU, but its bundle was made for {device} ({expected_arch}); "
                                "make the bundle for the device's target")
    settings = {"device": measured_on, "timing": record.get("timing"), "statistic": record.get("statistic"), "source": str(path.resolve())}
    folder = save_imported_tables(tables, RUNTIME, precision, device, settings, cache_dir)
    return ImportedLatency(device, precision, len(tables), sum(len(table.points) for table in tables), folder, measured_on)
