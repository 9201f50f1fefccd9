"""TensorRT latency tables: the latency bundle writes a one-layer model per grid point the planner asks for, its
script times each and collects the results, and the import puts them into the table cache where the planner reads
them as runtime tensorrt; bad results are refused before anything is saved.

No machine of ours has TensorRT: the script runs here with tests/engine/ort_trtexec.py as trtexec, which times each
model for real in onnxruntime and writes trtexec's --exportTimes records, so the collector and the import see
measured numbers (CPU ones). The last test runs the real trtexec where one is installed."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from edgecompress.cli import app
from edgecompress.engine import check_onnx
from edgecompress.engine.latency_bundle import import_layer_latency, model_file, write_latency_bundle
from edgecompress.errors import EdgeCompressError
from edgecompress.profile import LayerShape, measure_latency_tables, measure_layer_table
from edgecompress.profile.layer_latency import table_requests
from edgecompress.run import Run
from edgecompress.prune import plan_pruning
from edgecompress.settings import BuildConfig
from edgecompress.targets import get_target, list_targets
from tests.engine.test_bundle_device_flow import DEVICE_PYTHON

ORT_TRTEXEC = Path(__file__).with_name("ort_trtexec.py")
TIMING = {"warmup_ms": 20, "iterations": 30}  # a short run per model: the stand-in times in onnxruntime


def _small_net() -> nn.Module:
    """A conv, a depthwise conv, two 1x1 convs and a linear: every kind of curve (out, tied in/out, in and out, in); the
    second 1x1 conv's shape is a point of the first's."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU(),
                         nn.Conv2d(16, 16, 1), nn.ReLU(), nn.Conv2d(16, 8, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4)).eval()


X = torch.randn(1, 3, 12, 12)


def _bundle(tmp_path: Path, target: str = "jetson-orin-nano", **options) -> tuple:
    bundle = write_latency_bundle(_small_net(), X, get_target(target), tmp_path / "bundle", step=8, model_name="small", **TIMING, **options)
    return bundle, json.loads(bundle.paths["manifest"].read_text())


def _run_script(bundle_dir: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    tools = tmp_path / "bin"
    tools.mkdir(exist_ok=True)
    (tools / "trtexec").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ORT_TRTEXEC}" "$@"\n')
    (tools / "trtexec").chmod(0o755)
    log = tmp_path / "trtexec.log"
    log.unlink(missing_ok=True)
    env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}", "PYTHON": DEVICE_PYTHON, "FAKE_TRTEXEC_LOG": str(log)}
    done = subprocess.run(["bash", str(bundle_dir / "time_layers.sh")], env=env, capture_output=True, text=True, timeout=300)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return done, [call for call in calls if any(arg.startswith("--onnx=") for arg in call)]


@pytest.mark.parametrize(("target", "precision"), [("jetson-orin-nano", "int8"), ("jetson-nano", "fp16")])
def test_the_bundle_has_one_model_per_point_of_the_planners_grid(target: str, precision: str, tmp_path: Path) -> None:
    bundle, manifest = _bundle(tmp_path, target)
    assert bundle.precision == manifest["precision"] == precision
    requests = {r for calls in table_requests(_small_net(), X, step=8).values() for r in calls}
    assert {(LayerShape.from_record(t["shape"]), tuple((p["in"], p["out"]) for p in t["points"])) for t in manifest["tables"]} == requests
    wanted = {model_file(shape.at(i, o)): shape.at(i, o) for shape, points in requests for i, o in points}
    assert {entry["file"] for entry in manifest["files"]} == set(wanted) == {f"layers/{p.name}" for p in (tmp_path / "bundle/layers").iterdir()}
    assert bundle.points == sum(len(points) for _, points in requests) > bundle.models == len(wanted)  # a point of one shape is another's dense
    element = np.float16 if precision == "fp16" else np.float32
    for name, shape in wanted.items():
        path = tmp_path / "bundle" / name
        assert onnx.load(str(path)).opset_import[0].version == get_target(target).export_opset
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (x,), (y,) = session.get_inputs(), session.get_outputs()
        assert tuple(x.shape) == shape.input_shape and tuple(y.shape) == shape.output_shape
        (result,) = session.run(None, {x.name: np.ones(shape.input_shape, dtype=element)})
        assert result.shape == shape.output_shape and result.dtype == element
        if precision == "int8":  # TensorRT's Q/DQ rules hold: no finding at all
            assert check_onnx(path, get_target(target)).findings == []
    script = (tmp_path / "bundle/time_layers.sh").read_text()
    timed = [line.split()[1] for line in script.splitlines() if line.startswith("time_layer ")]
    assert sorted(timed) == sorted(wanted)
    flags = {"int8": "--int8 --fp16", "fp16": "--fp16"}[precision]
    assert f'--onnx="$1" {flags} ' in script and "--warmUp=20 --iterations=30 --duration=0" in script


@pytest.fixture(scope="module")
def timed_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[list[str]]]:
    """A bundle of the small net whose script ran (with the onnxruntime stand-in): its folder, manifest and trtexec calls."""
    folder = tmp_path_factory.mktemp("timed")
    _, manifest = _bundle(folder)
    done, calls = _run_script(folder / "bundle", folder)
    assert done.returncode == 0, done.stderr
    return folder, manifest, calls


def test_the_script_times_every_model_and_the_import_round_trips_into_the_planner(timed_bundle: tuple, tmp_path: Path) -> None:
    folder, manifest, calls = timed_bundle
    assert sorted(arg[7:] for call in calls for arg in call if arg.startswith("--onnx=")) == sorted(e["file"] for e in manifest["files"])
    assert all({"--int8", "--fp16", "--memPoolSize=workspace:1024"} <= set(call) for call in calls)
    results = json.loads((folder / "bundle/layer_latency.json").read_text())
    assert results["missing"] == [] and results["target"] == "jetson-orin-nano" and "device" in results
    # Each point's time, computed here from the times file trtexec (the stand-in) wrote: the median of its computeMs.
    measured = {}
    for entry in manifest["files"]:
        records = json.loads((folder / "bundle/times" / (Path(entry["file"]).stem + ".json")).read_text())
        assert len(records) == TIMING["iterations"]
        measured[entry["file"]] = statistics.median(record["computeMs"] for record in records)

    cache = tmp_path / "cache"
    imported = import_layer_latency(folder / "bundle/layer_latency.json", cache_dir=cache)
    assert (imported.device, imported.precision, imported.points) == ("jetson-orin-nano", "int8", sum(len(t["points"]) for t in manifest["tables"]))
    tables = measure_latency_tables(_small_net(), X, runtime="tensorrt", device="jetson-orin-nano", precision="int8", step=8, cache_dir=cache)
    assert (tables.runtime, tables.measured_points, tables.cached_points) == ("tensorrt", 0, imported.points)
    assert tables.describe().startswith("tensorrt int8 on jetson-orin-nano")
    for calls_of_layer in tables.tables.values():
        for table in calls_of_layer:
            assert table.points == {(i, o): measured[model_file(table.shape.at(i, o))] for i, o in table.points}
    # The planner reads them: its dense prediction is their sum (a budget there: these tiny layers' CPU times are overhead).
    dense = sum(table.dense_ms for calls_of_layer in tables.tables.values() for table in calls_of_layer)
    plan = plan_pruning(_small_net(), X, latency_ms=dense, latency_tables=tables, round_to=8)
    assert plan.latency.dense_ms == pytest.approx(dense) and plan.latency.tables == tables.describe()

    again, calls = _run_script(folder / "bundle", tmp_path)  # every model is timed: a rerun times none again
    assert again.returncode == 0 and calls == []
    assert json.loads((folder / "bundle/layer_latency.json").read_text())["files"] == results["files"]


def test_bad_results_are_refused_before_anything_is_saved(timed_bundle: tuple, tmp_path: Path) -> None:
    folder, _, _ = timed_bundle
    results, edited = json.loads((folder / "bundle/layer_latency.json").read_text()), tmp_path / "edited.json"
    cache = tmp_path / "cache"

    def refused(record: dict | str, message: str) -> None:
        edited.write_text(record if isinstance(record, str) else json.dumps(record))
        with pytest.raises(EdgeCompressError, match=message):
            import_layer_latency(edited, cache_dir=cache)
        assert not cache.exists()

    refused("{not json", "is not JSON")
    refused(json.loads((folder / "bundle/layers.json").read_text()), "run time_layers.sh on the device first")
    refused({**results, "schema": "edgecompress.latency/1"}, "is not layer-latency results")
    untimed = json.loads(json.dumps(results))
    untimed["files"][0]["ms"] = None
    refused(untimed, "1 of the .* one-layer models have no time .*rerun time_layers.sh")
    swapped = json.loads(json.dumps(results))
    first, second = swapped["tables"][0]["points"][:2]
    first["file"], second["file"] = second["file"], first["file"]
    refused(swapped, "mismatched shapes")
    no_dense = json.loads(json.dumps(results))
    table = no_dense["tables"][0]
    shape = LayerShape.from_record(table["shape"])
    table["points"] = [p for p in table["points"] if (p["in"], p["out"]) != (shape.in_channels, shape.out_channels)]
    refused(no_dense, "needs the dense point")
    refused({key: value for key, value in results.items() if key != "tables"}, "is not complete layer-latency results")
    refused({**results, "device": {**results["device"], "gpu_arch": "sm_72"}}, "measured on a sm_72 GPU")
    refused({**results, "precision": "int4"}, "tensorrt tables are in fp32, fp16, int8")
    with pytest.raises(EdgeCompressError, match="cannot read"):
        import_layer_latency(tmp_path / "nope.json", cache_dir=cache)


def test_tensorrt_tables_are_never_timed_here_and_missing_ones_say_how_to_measure_them(tmp_path: Path) -> None:
    with pytest.raises(EdgeCompressError, match=r"lack (\d+) of the \1 points .*TensorRT does not run here: .*latency-bundle"):
        measure_latency_tables(_small_net(), X, runtime="tensorrt", device="jetson-orin-nano", precision="int8", cache_dir=tmp_path)
    with pytest.raises(EdgeCompressError, match="imported per device"):
        measure_latency_tables(_small_net(), X, runtime="tensorrt", precision="int8", cache_dir=tmp_path)
    with pytest.raises(EdgeCompressError, match="not measured in this process; TensorRT does not run here"):
        measure_layer_table(LayerShape("linear", 4, 4, (1, 4)), runtime="tensorrt")
    with pytest.raises(EdgeCompressError, match="--target cpu has no TensorRT"):
        BuildConfig(target="cpu", target_latency=0.5, latency_runtime="tensorrt").check()
    config = BuildConfig(target="orin-nano", target_latency=0.5, latency_runtime="tensorrt", round_to=1)
    config.check()  # the build reads the board's tables in the board's precision, on the grid the bundle's defaults write
    assert Run(config.resolved()).latency_table_options() == {"ignore": (), "runtime": "tensorrt", "step": 8, "precision": "int8",
                                                              "device": "jetson-orin-nano"}
    with pytest.raises(EdgeCompressError, match="does not run TensorRT"):
        write_latency_bundle(_small_net(), X, get_target("cpu"), tmp_path / "b")
    with pytest.raises(EdgeCompressError, match="no fast int8"):
        write_latency_bundle(_small_net(), X, get_target("jetson-nano"), tmp_path / "b", precision="int8")
    (tmp_path / "other").mkdir()
    (tmp_path / "other/notes.txt").write_text("mine")
    with pytest.raises(EdgeCompressError, match="holds other files"):
        write_latency_bundle(_small_net(), X, get_target("orin-nano"), tmp_path / "other")


def test_the_commands_refuse_bad_input_with_exit_status_2(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["latency-import", str(tmp_path / "nope.json")])
    assert result.exit_code == 2 and "cannot read" in result.output
    result = runner.invoke(app, ["latency-bundle", "--model", "yolo-mbv2", "--target", "cpu", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "does not run TensorRT" in result.output


def _installed_trtexec() -> str | None:
    fallback = "/usr/src/tensorrt/bin/trtexec"
    return shutil.which("trtexec") or (fallback if os.access(fallback, os.X_OK) else None)


@pytest.mark.skipif(_installed_trtexec() is None, reason="trtexec is not installed here (TensorRT runs on the device); "
                                                         "the script is tested above with an onnxruntime stand-in")
def test_real_trtexec_measures_tables_the_planner_reads(tmp_path: Path) -> None:
    from edgecompress.engine.engine_meta import detect_device

    trtexec = _installed_trtexec()
    device = detect_device(trtexec)
    major = (device.get("tensorrt") or "0").split(".")[0]
    targets = [t for t in list_targets() if t.gpu_arch == device.get("gpu_arch") and str(t.tensorrt_major) == major]
    if not targets:
        pytest.skip(f"no edgecompress target for this {device.get('gpu_arch')} GPU with TensorRT {device.get('tensorrt')}")
    target = targets[0]
    write_latency_bundle(_small_net(), X, target, tmp_path / "bundle", step=8, **TIMING)
    done = subprocess.run(["bash", str(tmp_path / "bundle/time_layers.sh")], env={**os.environ, "TRTEXEC": trtexec},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    imported = import_layer_latency(tmp_path / "bundle/layer_latency.json", cache_dir=tmp_path / "cache")
    tables = measure_latency_tables(_small_net(), X, runtime="tensorrt", device=target.name, precision=imported.precision, step=8,
                                    cache_dir=tmp_path / "cache")
    assert all(ms > 0 for calls in tables.tables.values() for table in calls for ms in table.points.values())
