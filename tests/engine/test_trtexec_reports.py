"""trtexec's --exportTimes/--exportProfile/--exportLayerInfo files into the latency schema.

The files are written here the way samples/common/sampleReporting.cpp of NVIDIA/TensorRT writes them (its line layout,
six significant digits, unescaped names), one variant per TensorRT release family, with fresh random timings.
"""

from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from edgecompress.engine import trtexec_reports
from edgecompress.engine.trtexec_reports import TrtexecReportError, latency_report_from_trtexec, main

MODULE = Path(trtexec_reports.__file__)
SCHEMA = json.loads((MODULE.parents[1] / "profile" / "latency_report.schema.json").read_text())


@dataclass(frozen=True)
class Release:
    """What differs between the exports of TensorRT releases (read in each release branch's sampleReporting.cpp)."""

    name: str
    warmups_in_times: bool  # up to 8.4 the times file keeps the warm-up inferences
    end_to_end_key: bool  # 8.2 writes endToEndMs
    median_in_profile: bool  # 8.4 on
    data_transfers: bool  # off by default from 11.0
    bindings_in_info: bool
    formats: dict[str, str]  # precision -> a Format/Datatype string that release writes


RELEASES = [
    Release("8.2", True, True, False, True, False,
            {"int8": "Thirty-two wide channel vectorized row major Int8 format.", "fp16": "Row major linear FP16 format.",
             "fp32": "Row major linear FP32."}),
    Release("8.5", False, False, True, True, True,
            {"int8": "Four wide channel vectorized row major Int8 format", "fp16": "Channel major FP16 format where channel % 8 == 0",
             "fp32": "Row major linear FP32"}),
    Release("10", False, False, True, True, True,
            {"int8": "Row major linear INT8 format", "fp16": "Channel major FP16 format where channel % 8 == 0",
             "fp32": "Row major linear FP32"}),
    Release("11", False, False, True, False, True, {"int8": "Int8", "fp16": "Half", "fp32": "Float"}),
]

# name (10.x joins fused ops' metadata with \x1e, written raw), layer type, precision
LAYERS = [
    ("images_quantize", "Reformat", "fp32"),
    ("conv1 + bn1 + relu1\x1econv1_meta", "Convolution", "int8"),
    ("conv2 + bn2 + relu2", "Convolution", "int8"),
    ("Reformatting CopyNode for Output Tensor 0 to head", "Reformat", "int8"),
    ("head", "Convolution", "fp16"),
]


@pytest.fixture
def rng() -> np.random.Generator:
    seed = int(np.random.SeedSequence().entropy % 2**32)
    print(f"timings seed {seed}")  # shown when a test fails
    return np.random.default_rng(seed)


def _g(value: float) -> str:
    """A float as C++'s default ostream prints it (six significant digits)."""
    return f"{value:.6g}"


def write_times(path: Path, release: Release, rng: np.random.Generator, runs: int, warmup_ms: float) -> None:
    """A trace as trtexec's exportJSONTrace writes it: back-to-back inferences from time 0, warm-up kept up to 8.4."""
    lines, clock, sep = ["["], float(rng.uniform(0.05, 0.3)), "  "
    while True:
        h2d = float(rng.uniform(0.02, 0.08)) if release.data_transfers else 0.0
        compute = float(rng.gamma(20.0, 0.05))
        d2h = float(rng.uniform(0.01, 0.05)) if release.data_transfers else 0.0
        start_compute = clock + h2d
        warmup = start_compute < warmup_ms
        if not warmup:
            runs -= 1
        if not warmup or release.warmups_in_times:
            values = {
                "startEnqMs": clock - 0.01, "endEnqMs": clock + 0.03, "startH2dMs": clock, "endH2dMs": clock + h2d,
                "startComputeMs": start_compute, "endComputeMs": start_compute + compute,
                "startD2hMs": start_compute + compute, "endD2hMs": start_compute + compute + d2h,
                "h2dMs": h2d, "computeMs": compute, "d2hMs": d2h, "latencyMs": h2d + compute + d2h,
            }
            if release.end_to_end_key:
                values["endToEndMs"] = values["latencyMs"] + 0.02
            lines.append(sep + "{ " + ", ".join(f'"{key}" : {_g(value)}' for key, value in values.items()) + " }")
            sep = ", "
        clock = start_compute + compute + d2h + float(rng.uniform(0.0, 0.02))
        if runs == 0:
            break
    path.write_text("\n".join(lines + ["]"]) + "\n")


def write_profile(path: Path, release: Release, rng: np.random.Generator, count: int) -> dict[str, float]:
    """exportJSONProfile's layout; returns each layer's mean time (ms) as written."""
    per_run = {name: rng.gamma(4.0, 0.02, size=count) for name, _, _ in LAYERS}
    total = sum(times.sum() for times in per_run.values())
    lines = ["[", f'  {{ "count" : {count} }}']
    written = {}
    for name, times in per_run.items():
        record = f', {{ "name" : "{name}", "timeMs" : {_g(times.sum())}, "averageMs" : {_g(times.mean())}'
        if release.median_in_profile:
            record += f', "medianMs" : {_g(float(np.median(times)))}'
        lines.append(record + f', "percentage" : {_g(times.sum() / total * 100)} }}')
        written[name] = float(_g(times.mean()))
    path.write_text("\n".join(lines + ["]"]) + "\n")
    return written


def write_layer_info(path: Path, release: Release, input_shape: list[int]) -> None:
    """IEngineInspector's kJSON layout with detailed verbosity: layers with their tensors' Format/Datatype."""
    layers, previous = [], {"Name": "images", "Location": "Device", "Dimensions": input_shape,
                            "Format/Datatype": release.formats["fp32"]}
    for index, (name, layer_type, precision) in enumerate(LAYERS):
        output = {"Name": f"tensor_{index}", "Location": "Device", "Dimensions": [input_shape[0], 8, 16, 16],
                  "Format/Datatype": release.formats[LAYERS[index + 1][2] if index + 1 < len(LAYERS) else "fp32"]}
        layers.append({"Name": name, "LayerType": "Cask" + layer_type, "Inputs": [previous], "Outputs": [output],
                       "ParameterType": layer_type, "TacticValue": "0x0000000000000000"})
        previous = output
    # the first layer reads the engine input in fp32, the next ones read what the previous wrote
    for layer, (_, _, precision) in zip(layers[1:], LAYERS[1:]):
        layer["Inputs"] = [{**layer["Inputs"][0], "Format/Datatype": release.formats[precision]}]
    info = {"Layers": layers, **({"Bindings": ["images", previous["Name"]]} if release.bindings_in_info else {})}
    path.write_text(json.dumps(info, indent=1, ensure_ascii=False))


def exports(tmp_path: Path, release: Release, rng: np.random.Generator, runs: int = 64, warmup_ms: float = 200.0):
    """Times, profile and layer info of one trtexec run (warm-up: trtexec's default 200 ms unless given)."""
    times, profile, layers = tmp_path / "times.json", tmp_path / "profile.json", tmp_path / "layers.json"
    write_times(times, release, rng, runs, warmup_ms)
    means = write_profile(profile, release, rng, count=int(rng.integers(5, 20)))
    write_layer_info(layers, release, [1, 3, 32, 32])
    return times, profile, layers, means


@pytest.mark.parametrize("release", RELEASES, ids=lambda release: f"trt{release.name}")
def test_report_matches_numpy_and_the_schema(tmp_path: Path, release: Release, rng: np.random.Generator) -> None:
    runs, warmup_ms = int(rng.integers(40, 120)), float(rng.uniform(2.0, 6.0))
    times, profile, layers, means = exports(tmp_path, release, rng, runs, warmup_ms)
    engine = tmp_path / "model.engine"
    engine.write_bytes(os.urandom(128))

    report = latency_report_from_trtexec(times, profile, layers, engine_path=engine, target="jetson-orin-nano",
                                         precision="int8", batch=2, warmup_ms=warmup_ms)
    jsonschema.validate(report, SCHEMA)

    written = json.loads(times.read_text())
    timed = [record for record in written if record["startComputeMs"] >= warmup_ms]
    assert len(timed) == runs
    assert report["settings"]["iterations"] == runs
    assert report["settings"]["warmup"] == ((len(written) - runs) if release.warmups_in_times else None)
    for key, field in (("host", "latencyMs"), ("gpu_compute", "computeMs")):
        values = np.array([record[field] for record in timed])
        stats = report["latency_ms"][key]
        assert stats["median"] == np.median(values)
        assert stats["p90"] == np.percentile(values, 90)
        assert stats["p99"] == np.percentile(values, 99)
        assert stats["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert (stats["min"], stats["max"], stats["count"]) == (values.min(), values.max(), runs)
    span_s = (timed[-1]["endD2hMs"] - timed[0]["startH2dMs"]) / 1e3
    assert report["throughput_ips"] == pytest.approx(2 * runs / span_s, rel=1e-12)
    assert report["times_ms"] == [record["latencyMs"] for record in timed]
    assert ("no data transfers" in report["source"]) is not release.data_transfers

    assert report["model"] == {"path": str(engine), "bytes": 128, "format": "engine", "stage": None}
    assert report["runtime"]["precision"] == "int8" and report["machine"]["target"] == "jetson-orin-nano"
    assert report["inputs"] == [{"name": "images", "shape": [1, 3, 32, 32], "dtype": "fp32"}]
    assert [(layer["name"], layer["type"], layer["precision"]) for layer in report["layers"]] == LAYERS
    assert [layer["time_ms"] for layer in report["layers"]] == [means[name] for name, _, _ in LAYERS]
    assert sum(layer["percent"] for layer in report["layers"]) == pytest.approx(100, abs=1e-3)


def test_times_alone_give_a_report_without_layers(tmp_path: Path, rng: np.random.Generator) -> None:
    times, *_ = exports(tmp_path, RELEASES[2], rng)
    report = latency_report_from_trtexec(times, model_path=tmp_path / "absent.onnx")
    jsonschema.validate(report, SCHEMA)
    assert "layers" not in report and report["inputs"] == []
    assert report["model"]["format"] == "onnx" and report["model"]["bytes"] is None
    assert report["settings"]["batch"] is None


def test_profile_without_layer_info_and_names_only_layer_info(tmp_path: Path, rng: np.random.Generator) -> None:
    times, profile, layers, means = exports(tmp_path, RELEASES[1], rng)
    report = latency_report_from_trtexec(times, profile, engine_path=tmp_path / "e.engine")
    assert [(layer["name"], layer["precision"]) for layer in report["layers"]] == [(n, None) for n, _, _ in LAYERS]
    layers.write_text(json.dumps({"Layers": [name for name, _, _ in LAYERS], "Bindings": ["images", "out"]}))
    report = latency_report_from_trtexec(times, profile, layers, engine_path=tmp_path / "e.engine")
    jsonschema.validate(report, SCHEMA)
    assert all(layer["type"] is None and layer["precision"] is None for layer in report["layers"])
    assert report["inputs"] == []


def test_nan_percentage_of_an_all_zero_profile_is_unknown(tmp_path: Path, rng: np.random.Generator) -> None:
    times, *_ = exports(tmp_path, RELEASES[2], rng)
    profile = tmp_path / "zero.json"
    profile.write_text('[\n  { "count" : 3 }\n, { "name" : "conv", "timeMs" : 0, "averageMs" : 0, "medianMs" : 0, '
                       '"percentage" : -nan }\n]\n')
    report = latency_report_from_trtexec(times, profile, engine_path=tmp_path / "e.engine")
    jsonschema.validate(report, SCHEMA)
    assert report["layers"] == [{"name": "conv", "time_ms": 0.0, "percent": None, "type": None, "precision": None}]


@pytest.mark.parametrize("text, precision", [
    ("Row major linear INT8 format", "int8"), ("Channel major FP16 format where channel % 8 == 0", "fp16"),
    ("Thirty-two wide channel vectorized row major Int8 format.", "int8"), ("Row major linear FP32", "fp32"),
    ("Half", "fp16"), ("Float", "fp32"), ("Row major linear BFloat16 format", "bf16"), ("Row major linear FP8 format", "fp8"),
    ("Row major linear Int32", "int32"), ("N/A due to dynamic shapes", None), ("", None),
])
def test_tensor_precision(text: str, precision: str | None) -> None:
    assert trtexec_reports.tensor_precision(text) == precision


@pytest.mark.parametrize("values", [[3.0], [1.0, 2.0], [5.0, 1.0, 4.0, 2.0, 3.0]])
def test_percentiles_of_small_samples_equal_numpy(values: list[float], rng: np.random.Generator) -> None:
    values = values + list(rng.exponential(2.0, size=int(rng.integers(0, 50))))
    for q in (0, 1, 10, 25, 50, 75, 90, 95, 99, 99.9, 100):
        assert trtexec_reports.percentile(values, q) == np.percentile(values, q)
    assert trtexec_reports.median(values) == np.median(values)


def _errors(tmp_path: Path, rng: np.random.Generator) -> dict[str, tuple[list[str], str]]:
    times, profile, layers, _ = exports(tmp_path, RELEASES[2], rng)
    garbled = tmp_path / "garbled.json"
    garbled.write_text(times.read_text()[: len(times.read_text()) // 2])
    not_times = tmp_path / "profile_as_times.json"
    not_times.write_text(profile.read_text())
    out = ["--out", str(tmp_path / "latency.json")]
    return {
        "missing file": (["--times", str(tmp_path / "nope.json"), "--engine", "e", *out], "cannot read"),
        "garbled": (["--times", str(garbled), "--engine", "e", *out], "is not the JSON trtexec --exportTimes writes"),
        "wrong file": (["--times", str(not_times), "--engine", "e", *out], "it is not a trtexec --exportTimes file"),
        "no model": (["--times", str(times), *out], "pass the engine (--engine)"),
        "layers alone": (["--times", str(times), "--layers", str(layers), "--engine", "e", *out], "--exportProfile file too"),
        "all warm-up": (["--times", str(times), "--engine", "e", "--warmup-ms", "1e9", *out], "warm-up"),
        "bad layer info": (["--times", str(times), "--profile", str(profile), "--layers", str(profile), "--engine", "e", *out],
                           'no "Layers" list'),
    }


def test_cli_errors_are_one_line_with_exit_2(tmp_path: Path, rng: np.random.Generator,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    for case, (argv, expected) in _errors(tmp_path, rng).items():
        assert main(argv) == 2, case
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("trtexec_reports.py: error: ") and expected in err, (case, err)
    assert not (tmp_path / "latency.json").exists()


def test_api_errors_are_trtexec_report_errors(tmp_path: Path) -> None:
    with pytest.raises(TrtexecReportError, match="batch must be"):
        latency_report_from_trtexec(tmp_path / "t.json", engine_path="e", batch=0)


def _python36() -> str | None:
    """A Python 3.6 interpreter here (the Nano's), if any."""
    candidates = [shutil.which("python3.6"), *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.6*/bin/python3.6")))]
    for candidate in filter(None, candidates):
        done = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip() == "(3, 6)":
            return candidate
    return None


@pytest.mark.parametrize("interpreter", ["current", "python3.6"])
def test_cli_runs_standalone(tmp_path: Path, rng: np.random.Generator, interpreter: str) -> None:
    """The file alone, outside the package, as the bundle runs it on the device."""
    python = sys.executable if interpreter == "current" else _python36()
    if python is None:
        pytest.skip("no Python 3.6 interpreter on this machine (the Jetson Nano's JetPack 4 Python)")
    standalone = tmp_path / "bundle" / "trtexec_reports.py"
    standalone.parent.mkdir()
    shutil.copy(MODULE, standalone)
    times, profile, layers, _ = exports(tmp_path, RELEASES[0], rng, warmup_ms=3.0)
    out = tmp_path / "out" / "latency.json"
    done = subprocess.run([python, str(standalone), "--times", str(times), "--profile", str(profile), "--layers", str(layers),
                           "--engine", "model.engine", "--precision", "int8", "--warmup-ms", "3", "--out", str(out)],
                          capture_output=True, text=True, cwd=standalone.parent, env={"PATH": os.environ["PATH"]})
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    jsonschema.validate(report, SCHEMA)
    assert done.stdout.count("\n") == 1 and f"{report['latency_ms']['host']['count']} inferences" in done.stdout
    assert [layer["precision"] for layer in report["layers"]] == [precision for _, _, precision in LAYERS]
    missing = subprocess.run([python, str(standalone), "--times", "nope.json", "--engine", "e", "--out", str(out)],
                             capture_output=True, text=True, cwd=standalone.parent)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1


def test_module_is_python36_standard_library_code() -> None:
    source = MODULE.read_text()
    tree = ast.parse(source, feature_version=(3, 6))  # rejects walrus, f"{x=}", positional-only parameters
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(tree)), "relative import"
    assert imported <= set(sys.stdlib_module_names) - {"dataclasses", "__future__"}, imported
    annotations = [node for node in ast.walk(tree) if isinstance(node, (ast.AnnAssign, ast.arg)) and node.annotation]
    assert not annotations, "annotations such as list[str] fail at run time before Python 3.9"
