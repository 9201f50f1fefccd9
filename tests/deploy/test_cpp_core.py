"""deploy/'s TensorRT-free C++ core: configured, built and unit-tested with CMake and ctest, then its latency
report checked against the schema and numpy's percentiles, and its image preprocessing against edgecompress's.

The TensorRT runner itself is not built here (no TensorRT, no GPU); see deploy/README.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMA = ROOT / "edgecompress" / "profile" / "latency_report.schema.json"
BUILD_TIMEOUT_S = 600  # a loaded 2-core machine; the build takes about 30 s of CPU at -O0

CMAKE = shutil.which("cmake")
CTEST = shutil.which("ctest")
COMPILER = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")

pytestmark = [
    pytest.mark.skipif(CMAKE is None or CTEST is None, reason="cmake/ctest not found: install cmake >= 3.18 (make setup does) to build deploy/"),
    pytest.mark.skipif(COMPILER is None, reason="no C++ compiler (c++, g++ or clang++) found: install g++ (make setup does) to build deploy/"),
]


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, **kwargs)


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    """The core, its test programs and tools, built once at -O0, the fastest to compile (CI's ctest step builds optimised); the TensorRT runner is switched off."""
    folder = tmp_path_factory.mktemp("deploy-build")
    configure = _run([CMAKE, "-S", str(DEPLOY), "-B", str(folder), "-DCMAKE_BUILD_TYPE=Release", "-DCMAKE_CXX_FLAGS_RELEASE=-O0",
                      "-DEC_BUILD_RUNNER=OFF", "-DEC_WARNINGS_AS_ERRORS=ON", f"-DCMAKE_CXX_COMPILER={COMPILER}"])
    assert configure.returncode == 0, configure.stdout + configure.stderr
    compiled = _run([CMAKE, "--build", str(folder), "-j2"])
    assert compiled.returncode == 0, compiled.stdout[-4000:] + compiled.stderr[-4000:]
    return folder


def test_ctest_passes_every_core_test(build):
    tested = _run([CTEST, "--output-on-failure"], cwd=build)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "100% tests passed, 0 tests failed out of 7" in tested.stdout


def test_report_follows_the_schema_and_numpy(build, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    # Synthetic timings: an uneven spread with a slow tail, and ties, as real latencies have.
    rng = np.random.default_rng(12)
    host = np.concatenate([rng.lognormal(1.2, 0.25, 97), [3.3, 3.3, 19.75]]).round(6)
    gpu = (host * 0.8).round(6)
    (tmp_path / "host.txt").write_text("\n".join(repr(float(t)) for t in host) + "\n")
    (tmp_path / "gpu.txt").write_text(" ".join(repr(float(t)) for t in gpu))
    model = tmp_path / "synthetic.engine"  # gives the report a path and a size; the times above are what is summarised
    model.write_bytes(b"\0" * 4096)
    out = tmp_path / "latency.json"

    done = _run([str(build / "ec-latency-report"), "--times", str(tmp_path / "host.txt"), "--gpu-times", str(tmp_path / "gpu.txt"),
                 "--model", str(model), "--input", "images:2x3x320x320", "--warmup", "10", "--json", str(out)])
    assert done.returncode == 0, done.stderr

    report = json.loads(out.read_text())
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(report)
    assert report["schema"] == "edgecompress.latency/1"
    for key, times in (("host", host), ("gpu_compute", gpu)):
        stats = report["latency_ms"][key]
        assert stats["median"] == float(np.percentile(times, 50))
        assert stats["p90"] == float(np.percentile(times, 90))
        assert stats["p99"] == float(np.percentile(times, 99))
        assert stats["mean"] == pytest.approx(float(times.mean()), rel=1e-12)
        assert (stats["min"], stats["max"], stats["count"]) == (float(times.min()), float(times.max()), len(times))
    assert report["times_ms"] == [float(t) for t in host]
    assert report["throughput_ips"] == pytest.approx(len(host) * 2 / (host.sum() / 1e3), rel=1e-12)
    assert report["inputs"] == [{"name": "images", "shape": [2, 3, 320, 320], "dtype": "float32"}]
    assert report["model"] == {"path": str(model), "bytes": 4096, "format": "engine", "stage": None}
    assert report["settings"]["iterations"] == len(host) and report["settings"]["batch"] == 2 and report["settings"]["warmup"] == 10


def test_bad_arguments_exit_2_with_the_fix(build, tmp_path):
    done = _run([str(build / "ec-latency-report"), "--times", str(tmp_path / "missing.txt"), "--model", str(tmp_path), "--json", "x.json"])
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"ec-latency-report: error: model file {tmp_path} is a folder, not a file; "
                                                "pass the timed model with --model PATH"]
    done = _run([str(build / "ec-latency-report"), "--time", "t.txt"])
    assert done.returncode == 2 and "unknown option '--time'; did you mean --times?" in done.stderr


def test_image_preprocessing_matches_edgecompress_letterbox(build, tmp_path):
    """The runner's letterbox (size, padding, triangle filter) gives edgecompress.data.letterbox's tensor, within PIL's 8-bit rounding."""
    from PIL import Image

    from edgecompress.data import letterbox

    rng = np.random.default_rng(3)
    for width, height, size in ((50, 31, 64), (97, 41, 32), (33, 77, 40)):  # enlarged, shrunk, portrait
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)  # noise: the hardest case for resampling
        image = tmp_path / f"{width}x{height}.ppm"
        image.write_bytes(f"P6\n{width} {height}\n255\n".encode() + pixels.tobytes())
        out = tmp_path / f"{width}x{height}.npy"
        done = _run([str(build / "ec-image-to-npy"), "--image", str(image), "--shape", f"1x3x{size}x{size}", "--out", str(out)])
        assert done.returncode == 0, done.stderr
        ours = np.load(out)
        expected = letterbox(Image.fromarray(pixels), size)[0].numpy()
        assert ours.shape == (1, 3, size, size) and ours.dtype == np.float32
        assert np.abs(ours[0] - expected).max() <= 1.0 / 255 + 1e-6
