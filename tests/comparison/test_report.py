"""`edgecompress report`: two real quick runs and latency reports in comparison.md, .json and one self-contained .html."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from edgecompress.comparison import compare_runs, read_run
from edgecompress.errors import EdgeCompressError

from .conftest import CPU_RUN, DATA, JETSON_RUN


def test_rows_are_the_runs_reports(comparison):
    data = json.loads(comparison["comparison.json"].read_text())
    assert [(row["run"], row["model"]) for row in data["rows"]] == [(run, model) for run in (CPU_RUN, JETSON_RUN) for model in ("baseline", "pruned", "int8")]
    for run in (CPU_RUN, JETSON_RUN):
        report = json.loads((DATA / run / "report.json").read_text())
        rows = [row for row in data["rows"] if row["run"] == run]
        for row, model in zip(rows, report["models"]):
            assert (row["params"], row["macs"], row["onnx_bytes"]) == (model["params"], model["macs"], model["file_size_bytes"])
            assert row["metric_name"] == "map50" and row["metric"] == model["metrics_onnx"]["map50"]
            for runtime, stats in model["latency_by_runtime"].items():
                assert row["latency"][f"{runtime} (build)"]["median_ms"] == stats["median_ms"]
                base = report["models"][0]["latency_by_runtime"][runtime]["median_ms"]
                assert row["speedup"][f"{runtime} (build)"] == pytest.approx(base / stats["median_ms"])
    runs = {run["name"]: run for run in data["runs"]}
    assert runs[JETSON_RUN]["runtimes"] == ["onnxruntime", "openvino"] and runs[CPU_RUN]["target"] == "cpu"
    assert set(runs[CPU_RUN]["stages"]) == {"baseline", "sparse", "prune", "finetune", "qat", "export", "engine", "report"}


def test_latency_reports_join_the_rows_they_timed(comparison):
    data = json.loads(comparison["comparison.json"].read_text())
    timed, device = data["latency_reports"]
    assert (timed["run"], timed["model"], timed["label"]) == (CPU_RUN, "pruned", "onnxruntime CPU")  # its file is in that run's folder
    assert (device["run"], device["model"], device["label"]) == (JETSON_RUN, "int8", "tensorrt GPU int8")  # built for that run's target
    rows = {(row["run"], row["model"]): row for row in data["rows"]}
    assert rows[(JETSON_RUN, "int8")]["latency"]["tensorrt GPU int8"]["median_ms"] == device["host_ms"]["median"]
    assert rows[(CPU_RUN, "pruned")]["latency"]["onnxruntime CPU"]["p90_ms"] == timed["host_ms"]["p90"]
    assert len(device["slowest_layers"]) == 15 and device["slowest_layers"][0]["time_ms"] >= device["slowest_layers"][-1]["time_ms"]


def test_markdown_and_html(comparison):
    markdown = comparison["comparison.md"].read_text()
    assert markdown.startswith("# edgecompress comparison") and f"| {CPU_RUN} | pruned | " in markdown
    assert "## Slowest layers" in markdown and "tensorrt GPU int8" in markdown and "Quick runs" in markdown
    page = comparison["comparison.html"].read_text()
    assert re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page) is None and "http" not in page and "url(" not in page  # self-contained
    assert page.count('<img alt="') == 3 and page.count("data:image/png;base64,") == 3  # accuracy/latency, distribution, layers
    assert page.count("<table") == 2 + 1 + 2  # models, latency reports, slowest layers, the stages of each run


def test_bad_input_is_one_line_and_writes_nothing(runs, tmp_path):
    out = tmp_path / "comparison"
    (tmp_path / "latency.json").write_text(json.dumps({"schema": "edgecompress.latency/1", "model": {"path": "m.onnx"}}))
    unfinished = tmp_path / "unfinished"
    shutil.copytree(runs / CPU_RUN, unfinished)
    (unfinished / "report.json").unlink()
    cases = [
        (([tmp_path],), "is not an edgecompress run folder .*pass a run folder written by `edgecompress build`"),
        (([tmp_path / "nope"],), "nope is not a folder"),
        (([unfinished],), "unfinished has no report.json .*edgecompress build --name unfinished"),
        (([runs / CPU_RUN], [tmp_path / "latency.json"]), "latency.json is not a latency report .*model.bytes|latency.json is not a latency report"),
        (([runs / CPU_RUN, runs / CPU_RUN],), "share the name"),
        (([],), "nothing to compare"),
    ]
    for args, message in cases:
        with pytest.raises(EdgeCompressError, match=message) as error:
            compare_runs(*args, out=out)
        assert "\n" not in str(error.value)
    assert not out.exists()


def test_a_garbled_report_json_names_the_file(runs, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(runs / CPU_RUN, broken)
    (broken / "report.json").write_text("{")
    with pytest.raises(EdgeCompressError, match=r"broken/report.json: cannot read the run's report.json"):
        read_run(broken)
