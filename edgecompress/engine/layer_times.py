"""Collect the times trtexec measured for a latency bundle's one-layer models into one results file.

Standard library only and Python 3.6 syntax: the latency bundle (:mod:`edgecompress.engine.latency_bundle`) copies
this file to the device next to ``trtexec_reports.py`` and its ``time_layers.sh`` runs it there::

    python3 layer_times.py --manifest layers.json --device device.json --times times --out layer_latency.json

A model's time is the median of trtexec's per-inference ``computeMs`` in its ``--exportTimes`` file (the "GPU
Compute Time" of trtexec's summary: the engine's kernels, without host transfers), the warm-up records dropped as
``trtexec_reports.read_times`` drops them. The results are the manifest with each model's ``ms`` and ``runs`` added
and the device record; a model without a times file (trtexec failed on it) gets ``ms: null``, is listed in
``missing``, and the exit status is 1.
"""

import argparse
import json
import os
import sys

if __package__:  # imported from edgecompress
    from .trtexec_reports import TrtexecReportError, median, read_times, utc_timestamp, write_report
else:  # run on the device, beside the bundle's copy of trtexec_reports.py
    from trtexec_reports import TrtexecReportError, median, read_times, utc_timestamp, write_report

MANIFEST_SCHEMA = "edgecompress.layer-latency-bundle/1"
RESULTS_SCHEMA = "edgecompress.layer-latency-results/1"


def times_path(times_dir, model_file):
    """``layers/conv-8-16-ab12.onnx`` -> ``<times_dir>/conv-8-16-ab12.json``: where the script has trtexec export its times."""
    return os.path.join(times_dir, os.path.splitext(os.path.basename(model_file))[0] + ".json")


def _read_json(path, what):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError) as error:
        raise TrtexecReportError("cannot read the {} {} ({})".format(what, path, error))


def collect(manifest, device, times_dir):
    """The results record: ``manifest`` with every model's median GPU compute ms (None where it has no times file)."""
    if manifest.get("schema") != MANIFEST_SCHEMA:
        raise TrtexecReportError("the manifest is not a latency bundle's layers.json (schema {!r}, expected {})".format(
            manifest.get("schema"), MANIFEST_SCHEMA))
    warmup_ms = manifest["timing"]["warmup_ms"]
    files, missing = [], []
    for entry in manifest["files"]:
        path = times_path(times_dir, entry["file"])
        timed = dict(entry, ms=None, runs=0)
        if os.path.isfile(path):
            try:
                records, _ = read_times(path, warmup_ms)
            except TrtexecReportError as error:
                raise TrtexecReportError("{}; delete it and rerun time_layers.sh".format(error))
            compute = [record["computeMs"] for record in records]
            timed.update(ms=median(compute), runs=len(compute))
        else:
            missing.append(entry["file"])
        files.append(timed)
    results = dict(manifest, schema=RESULTS_SCHEMA, device=device, created=utc_timestamp(), files=files, missing=missing)
    results["statistic"] = "median of trtexec's per-inference computeMs (GPU compute time)"
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(prog="layer_times.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", required=True, help="the bundle's layers.json")
    parser.add_argument("--device", required=True, help="engine_meta.py detect's device.json")
    parser.add_argument("--times", required=True, help="the folder of trtexec's --exportTimes files")
    parser.add_argument("--out", required=True, help="the results file to write (JSON)")
    args = parser.parse_args(argv)
    try:
        results = collect(_read_json(args.manifest, "manifest"), _read_json(args.device, "device record"), args.times)
        write_report(results, args.out)
    except TrtexecReportError as error:
        sys.stderr.write("layer_times.py: error: {}\n".format(error))
        return 2
    timed = len(results["files"]) - len(results["missing"])
    sys.stdout.write("{}: {} of {} one-layer models timed\n".format(args.out, timed, len(results["files"])))
    if results["missing"]:
        sys.stderr.write("layer_times.py: no times for {} models ({}{}): trtexec failed on them (see times/*.log); "
                         "rerun time_layers.sh to retry them\n".format(len(results["missing"]), ", ".join(results["missing"][:3]),
                                                                       ", ..." if len(results["missing"]) > 3 else ""))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
