"""Turn trtexec's JSON exports into an ``edgecompress.latency/1`` report (edgecompress/profile/latency_report.schema.json).

Standard library only and Python 3.6 syntax: the deployment bundle copies this file to the device (a Jetson Nano's
JetPack 4 has Python 3.6) and runs it there::

    python3 trtexec_reports.py --times times.json [--profile profile.json] [--layers layers.json] \\
        [--engine model.engine] [--model model.onnx] [--target T] [--precision P] [--warmup-ms 200] --out latency.json

What trtexec writes, as read in samples/common/sampleReporting.cpp of https://github.com/NVIDIA/TensorRT (branches
release/8.2, 8.4, 8.5, 8.6, 10.0, 10.8, 10.16, 11.0 and main = 11.1) and the flags in samples/trtexec/README.md:

- ``--exportTimes``: a list with one object per inference, sorted by ``startH2dMs``: ``startEnqMs endEnqMs startH2dMs
  endH2dMs startComputeMs endComputeMs startD2hMs endD2hMs`` (ms since inference began), ``h2dMs computeMs d2hMs`` and
  ``latencyMs = h2dMs + computeMs + d2hMs``. Differences: 8.2 adds ``endToEndMs``; up to 8.4 the list still holds the
  warm-up inferences (those whose compute starts before ``--warmUp`` ms, trtexec's own cut), from 8.5 it leaves them
  out; from 11.0 data transfers are off unless ``--includeDataTransfers``, so ``h2dMs = d2hMs = 0``.
  Throughput is trtexec's: inferences x batch over the span from the first H2D start to the last D2H end.
- ``--exportProfile``: ``[{"count": N}, {"name", "timeMs" (sum over the N runs), "averageMs", "medianMs",
  "percentage"}, ...]``; 8.2 has no ``medianMs``. Names are written unescaped and a zero total prints ``nan``, so
  the reader accepts control characters in strings and reads a ``nan``/``inf`` value as unknown.
- ``--exportLayerInfo`` (IEngineInspector, ``LayerInformationFormat::kJSON``): ``{"Layers": [...], "Bindings": [...]}``
  (older releases have no ``Bindings``). With ``--profilingVerbosity=detailed`` a layer is an object with ``Name``,
  ``LayerType``, ``ParameterType``, ``Inputs``/``Outputs`` of ``{Name, Location, Dimensions, Format/Datatype}``;
  otherwise just its name. ``Format/Datatype`` reads e.g. "Row major linear FP32", "Four wide channel vectorized row
  major Int8 format", "Channel major FP16 format where channel % 8 == 0", 8.x's trailing-period variants, 10.x's kgen
  names ("Half", "Float", "Int8") and "N/A due to dynamic shapes". A layer's precision is that of its first input
  (its output when it has none), as NVIDIA's trt-engine-explorer (tools/experimental/trt-engine-explorer) reads it.
"""

import argparse
import datetime
import json
import math
import os
import re
import sys
import tempfile

SCHEMA = "edgecompress.latency/1"
TRTEXEC_DEFAULT_WARMUP_MS = 200.0  # sampleOptions.h defaultWarmUp, every release read

# Data-type words of a "Format/Datatype" string -> the schema's precision names.
DATATYPE_WORDS = {
    "fp32": "fp32", "float": "fp32", "fp16": "fp16", "half": "fp16", "bfloat16": "bf16", "bf16": "bf16",
    "int8": "int8", "uint8": "uint8", "int4": "int4", "fp8": "fp8", "fp4": "fp4", "fp4e2m1": "fp4",
    "int32": "int32", "int64": "int64", "bool": "bool", "double": "fp64",
}

_REQUIRED_TIME_KEYS = ("startH2dMs", "endD2hMs", "startComputeMs", "computeMs", "latencyMs")
_NON_FINITE_VALUE = re.compile(r"(:\s*)-?(?:nan|inf)\b", re.IGNORECASE)


class TrtexecReportError(ValueError):
    """A missing or unreadable trtexec export; the message is one line naming the file and the fix."""


# ---- statistics: numpy's defaults without numpy ----------------------------------------------------------------


def percentile(values, q):
    """``np.percentile(values, q)`` with numpy's default linear interpolation, bit for bit."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    index = (len(ordered) - 1) * (q / 100.0)
    below = int(math.floor(index))
    above = min(below + 1, len(ordered) - 1)
    low, high, weight = ordered[below], ordered[above], index - below
    difference = high - low
    # numpy's _lerp: interpolate from the nearer end so the result is exact at both ends.
    return high - difference * (1 - weight) if weight >= 0.5 else low + difference * weight


def median(values):
    """``np.median``: the middle value, or the mean of the middle two."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2.0


def summarize(values):
    """The schema's stats object (``$defs/stats``) of a list of times in ms."""
    values = [float(value) for value in values]
    if not values:
        raise ValueError("no times to summarize")
    return {
        "median": median(values), "p90": percentile(values, 90), "p99": percentile(values, 99),
        "mean": math.fsum(values) / len(values), "min": min(values), "max": max(values), "count": len(values),
    }


def make_report(model, runtime, machine, inputs, settings, host_ms, gpu_compute_ms, throughput_ips, memory_mb,
                layers=None, source=None, created=None, times=True):
    """Assemble a report in the shared schema from raw per-inference times (ms); used by every Python producer."""
    report = {
        "schema": SCHEMA,
        "created": created or utc_timestamp(),
        "source": source,
        "model": model,
        "runtime": runtime,
        "machine": machine,
        "inputs": inputs,
        "settings": settings,
        "latency_ms": {"host": summarize(host_ms), "gpu_compute": summarize(gpu_compute_ms) if gpu_compute_ms else None},
        "throughput_ips": float(throughput_ips),
        "memory_mb": memory_mb,
    }
    if times:
        report["times_ms"] = [float(value) for value in host_ms]
    if layers is not None:
        report["layers"] = layers
    return report


def utc_timestamp(seconds=None):
    """ISO 8601 UTC time (``2026-01-31T12:00:00Z``) of ``seconds`` since the epoch, or now."""
    utc = datetime.timezone.utc
    moment = datetime.datetime.now(utc) if seconds is None else datetime.datetime.fromtimestamp(seconds, utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def model_entry(path, model_format, stage=None):
    """The report's ``model`` object: path, size on disk (None if the file is not here) and format."""
    size = os.path.getsize(path) if os.path.isfile(path) else None
    return {"path": str(path), "bytes": size, "format": model_format, "stage": stage}


# ---- reading trtexec's files -------------------------------------------------------------------------------------


def _load_json(path, flag):
    """Parse one export file; a missing or garbled file is a one-line error naming the trtexec flag that writes it."""
    try:
        with open(str(path), encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError as error:
        raise TrtexecReportError("cannot read {} ({}); write it with trtexec {}={}".format(
            path, error.strerror or error, flag, path))
    try:
        return json.loads(text, strict=False)  # names are written unescaped: allow control characters
    except ValueError as error:
        repaired = _NON_FINITE_VALUE.sub(r"\1null", text)
        try:
            return json.loads(repaired, strict=False)
        except ValueError:
            detail = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise TrtexecReportError("{} is not the JSON trtexec {} writes ({}); rerun trtexec to write it again".format(
                path, flag, detail))


def _number(value):
    """A finite float, or None (``nan`` from trtexec, a missing value)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def read_times(path, warmup_ms=TRTEXEC_DEFAULT_WARMUP_MS):
    """The timed inferences of an ``--exportTimes`` file, warm-up records dropped as trtexec drops them.

    Returns ``(records, warmups_dropped)``. ``warmup_ms`` is the ``--warmUp`` trtexec ran with: files of TensorRT 8.4
    and older hold the warm-up inferences (compute starting before it); later files have none left to drop.
    """
    records = _load_json(path, "--exportTimes")
    if not isinstance(records, list) or not records:
        raise TrtexecReportError("{} holds no inference records; write it with trtexec --exportTimes={}".format(path, path))
    for position, record in enumerate(records):
        missing = [key for key in _REQUIRED_TIME_KEYS if not isinstance(record, dict) or _number(record.get(key)) is None]
        if missing:
            raise TrtexecReportError("record {} of {} lacks {}; it is not a trtexec --exportTimes file".format(
                position, path, ", ".join(missing)))
    # trtexec's cut (printPerformanceReport): everything from the first record whose compute starts after the warm-up.
    first = next((at for at, record in enumerate(records) if record["startComputeMs"] >= warmup_ms), len(records))
    timed = records[first:]
    if not timed:
        raise TrtexecReportError(
            "all {} records of {} started within the {:g} ms warm-up; pass the --warmUp trtexec ran with "
            "(--warmup-ms) or run trtexec longer".format(len(records), path, warmup_ms))
    return timed, first


def read_profile(path):
    """The per-layer records of an ``--exportProfile`` file: ``[{name, time_ms (mean per run), percent}]``."""
    records = _load_json(path, "--exportProfile")
    if not isinstance(records, list):
        raise TrtexecReportError("{} is not a list of layer records; write it with trtexec --exportProfile={}".format(
            path, path))
    runs = next((_number(record.get("count")) for record in records if isinstance(record, dict) and "count" in record),
                None)
    layers = []
    for record in records:
        if not isinstance(record, dict) or "name" not in record:
            continue
        mean = _number(record.get("averageMs"))
        total = _number(record.get("timeMs"))
        if mean is None and total is not None and runs:
            mean = total / runs
        if mean is None:
            raise TrtexecReportError("layer {!r} in {} has no averageMs or timeMs; rerun trtexec --exportProfile".format(
                record["name"], path))
        layers.append({"name": str(record["name"]), "time_ms": mean, "percent": _number(record.get("percentage"))})
    if not layers:
        raise TrtexecReportError("{} has no layer records; run trtexec with --exportProfile={} (and --separateProfileRun "
                                 "before 10.0)".format(path, path))
    return layers


def tensor_precision(format_string):
    """The precision word of a ``Format/Datatype`` string ("Row major linear INT8 format" -> "int8"), or None."""
    for word in re.split(r"[^0-9a-z]+", str(format_string).lower()):
        if word in DATATYPE_WORDS:
            return DATATYPE_WORDS[word]
    return None


def read_layer_info(path):
    """An ``--exportLayerInfo`` file as ``(layers, bindings)``: each layer ``{name, type, precision, inputs, outputs}``.

    ``inputs``/``outputs`` are ``[{name, shape, precision}]``; with a names-only export (no
    ``--profilingVerbosity=detailed``) type, precision and tensors are unknown.
    """
    info = _load_json(path, "--exportLayerInfo")
    if not isinstance(info, dict) or not isinstance(info.get("Layers"), list):
        raise TrtexecReportError("{} has no \"Layers\" list; write it with trtexec --exportLayerInfo={} "
                                 "--profilingVerbosity=detailed".format(path, path))
    layers = []
    for raw in info["Layers"]:
        if isinstance(raw, dict) and "Name" in raw:
            inputs, outputs = _tensors(raw.get("Inputs")), _tensors(raw.get("Outputs"))
            first = (inputs or outputs or [{"precision": None}])[0]
            layers.append({"name": str(raw["Name"]), "type": raw.get("ParameterType") or raw.get("LayerType"),
                           "precision": first["precision"], "inputs": inputs, "outputs": outputs})
        elif isinstance(raw, str):
            layers.append({"name": raw, "type": None, "precision": None, "inputs": [], "outputs": []})
    bindings = info.get("Bindings")
    return layers, [str(name) for name in bindings] if isinstance(bindings, list) else None


def _tensors(raw_tensors):
    tensors = []
    for raw in raw_tensors if isinstance(raw_tensors, list) else []:
        if isinstance(raw, dict) and "Name" in raw:
            dims = raw.get("Dimensions")
            shape = [int(dim) for dim in dims] if isinstance(dims, list) and all(isinstance(d, int) for d in dims) else None
            tensors.append({"name": str(raw["Name"]), "shape": shape,
                            "precision": tensor_precision(raw.get("Format/Datatype", ""))})
    return tensors


def engine_inputs(layers, bindings):
    """The engine's input tensors (``[{name, shape, dtype}]``, the schema's ``inputs``) seen in the layer info.

    An input is a tensor some layer reads and none writes (and a binding, when the file lists them); tensors whose
    shape is dynamic (-1) or unknown are left out, since the schema needs concrete sizes.
    """
    produced = set(tensor["name"] for layer in layers for tensor in layer["outputs"])
    found = []
    for layer in layers:
        for tensor in layer["inputs"]:
            name = tensor["name"]
            if name in produced or (bindings is not None and name not in bindings) or any(e["name"] == name for e in found):
                continue
            if tensor["shape"] and all(dim >= 1 for dim in tensor["shape"]):
                found.append({"name": name, "shape": tensor["shape"], "dtype": tensor["precision"]})
    return found


# ---- the report ----------------------------------------------------------------------------------------------------


def latency_report_from_trtexec(times_path, profile_path=None, layer_info_path=None, *, model_path=None,
                                engine_path=None, target=None, precision=None, batch=None,
                                warmup_ms=TRTEXEC_DEFAULT_WARMUP_MS, stage=None):
    """A latency report from trtexec's ``--exportTimes`` file, plus per-layer times (``--exportProfile``) and
    precisions (``--exportLayerInfo``) when given.

    Host latency is trtexec's ``latencyMs`` (H2D + compute + D2H), GPU compute its ``computeMs``; ``batch`` is the
    images per inference (trtexec counts an explicit-batch inference as one query) and scales the throughput.
    """
    if engine_path is None and model_path is None:
        raise TrtexecReportError("name what trtexec timed: pass the engine (--engine) or the ONNX it was built from (--model)")
    if layer_info_path is not None and profile_path is None:
        raise TrtexecReportError("--layers adds precisions to the per-layer times of --profile; pass trtexec's "
                                 "--exportProfile file too")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise TrtexecReportError("batch must be a whole number >= 1 (got {!r})".format(batch))
    records, warmups = read_times(times_path, warmup_ms)
    profile = read_profile(profile_path) if profile_path is not None else None
    info_layers, bindings = read_layer_info(layer_info_path) if layer_info_path is not None else ([], None)

    span_ms = max(record["endD2hMs"] for record in records) - min(record["startH2dMs"] for record in records)
    if span_ms <= 0:
        raise TrtexecReportError("the records of {} span no time; it is not a trtexec --exportTimes file".format(times_path))
    transfers = any(record.get("h2dMs") or record.get("d2hMs") for record in records)
    flags = ["--exportTimes"] + (["--exportProfile"] if profile else []) + (["--exportLayerInfo"] if info_layers else [])
    source = "trtexec " + " ".join(flags) + ("" if transfers else " (no data transfers: host latency = GPU compute)")

    if engine_path is not None:
        model = model_entry(engine_path, "engine", stage)
    else:
        model = model_entry(model_path, "engine" if str(model_path).endswith((".engine", ".plan", ".trt")) else "onnx", stage)
    return make_report(
        model=model,
        runtime={"name": "trtexec", "version": None, "device": "GPU", "precision": precision},
        machine={"target": target},
        inputs=engine_inputs(info_layers, bindings),
        settings={"warmup": warmups or None, "iterations": len(records), "duration_s": None, "batch": batch},
        host_ms=[record["latencyMs"] for record in records],
        gpu_compute_ms=[record["computeMs"] for record in records],
        throughput_ips=(batch or 1) * len(records) / (span_ms / 1000.0),
        memory_mb={"peak_host": None, "gpu": None},
        layers=_merge_layers(profile, info_layers) if profile is not None else None,
        source=source,
        created=utc_timestamp(os.path.getmtime(str(times_path))),
    )


def _merge_layers(profile, info_layers):
    """Per-layer times with the type and precision of the same-named layer in the layer info (None if absent)."""
    by_name = dict((layer["name"], layer) for layer in info_layers)
    merged = []
    for timed in profile:
        info = by_name.get(timed["name"], {})
        merged.append({"name": timed["name"], "time_ms": timed["time_ms"], "percent": timed["percent"],
                       "type": info.get("type"), "precision": info.get("precision")})
    return merged


def write_report(report, path):
    """Write ``report`` as JSON atomically: a reader sees the old file or the whole new one."""
    directory = os.path.dirname(os.path.abspath(str(path)))
    if not os.path.isdir(directory):
        os.makedirs(directory)
    handle, temporary = tempfile.mkstemp(prefix="." + os.path.basename(str(path)) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(report, stream, indent=2)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, str(path))
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def main(argv=None):
    """Command line: read the exports, write the report, print one summary line; exit 2 on a user error."""
    parser = argparse.ArgumentParser(prog="trtexec_reports.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--times", required=True, help="trtexec --exportTimes file")
    parser.add_argument("--profile", help="trtexec --exportProfile file (per-layer times)")
    parser.add_argument("--layers", help="trtexec --exportLayerInfo file, built with --profilingVerbosity=detailed")
    parser.add_argument("--engine", help="the engine trtexec timed")
    parser.add_argument("--model", help="the ONNX the engine was built from")
    parser.add_argument("--target", help="edgecompress target name")
    parser.add_argument("--precision", help="int8, fp16 or fp32")
    parser.add_argument("--batch", type=int, help="images per inference (default 1)")
    parser.add_argument("--warmup-ms", type=float, default=TRTEXEC_DEFAULT_WARMUP_MS,
                        help="the --warmUp trtexec ran with (default %(default)g, trtexec's); TensorRT 8.4 and older keep the "
                        "warm-up in the times file and this drops it (0 keeps every record)")
    parser.add_argument("--out", required=True, help="where to write the latency report (JSON)")
    args = parser.parse_args(argv)
    try:
        report = latency_report_from_trtexec(
            args.times, args.profile, args.layers, model_path=args.model, engine_path=args.engine, target=args.target,
            precision=args.precision, batch=args.batch, warmup_ms=args.warmup_ms)
        write_report(report, args.out)
    except TrtexecReportError as error:
        sys.stderr.write("trtexec_reports.py: error: {}\n".format(error))
        return 2
    except OSError as error:
        sys.stderr.write("trtexec_reports.py: error: cannot write {} ({})\n".format(args.out, error.strerror or error))
        return 2
    host = report["latency_ms"]["host"]
    dropped = report["settings"]["warmup"]
    sys.stdout.write("{}: {} inferences{}, host latency median {:.3f} ms (p99 {:.3f}), {:.1f} inferences/s\n".format(
        args.out, host["count"], " ({} warm-up records dropped)".format(dropped) if dropped else "", host["median"],
        host["p99"], report["throughput_ips"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
