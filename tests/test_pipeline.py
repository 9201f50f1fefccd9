"""End to end: `build --quick` writes a complete run folder, reuses finished stages, and plans per target."""

import json
import os
import shutil

import onnx
import pytest

import edgecompress as ec
from edgecompress.errors import EdgeCompressError
from edgecompress.engine import check_onnx
from edgecompress.targets import get_target
from edgecompress.pipeline import BuildConfig

os.environ.setdefault("EDGECOMPRESS_QUIET", "1")
STAGES = ["baseline", "sparse", "prune", "finetune", "qat", "export", "engine", "report"]


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    run_dir = ec.build(BuildConfig(target="cpu", quick=True, runs_dir=str(runs), name="e2e"))
    return runs, run_dir


def _manifests(run_dir):
    return {stage: json.loads((run_dir / stage / "manifest.json").read_text()) for stage in STAGES}


def test_run_folder_holds_every_stage(cpu_run):
    _, run_dir = cpu_run
    manifests = _manifests(run_dir)
    assert all(m["status"] == "done" for m in manifests.values())
    for stage in ("baseline", "sparse", "prune", "finetune", "qat"):
        assert (run_dir / stage / "model.pt").is_file()
    for name in ("baseline.onnx", "pruned.onnx", "int8.onnx"):
        onnx.checker.check_model(str(run_dir / "export" / name))
    assert (run_dir / "sparse" / "gamma_histogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run_dir / "report.md").read_text().startswith("# edgecompress report")
    assert not (run_dir / ".partial").exists()


def test_pruned_model_is_smaller_and_exports_match_pytorch(cpu_run):
    _, run_dir = cpu_run
    report = json.loads((run_dir / "report.json").read_text())
    rows = {row["model"]: row for row in report["models"]}
    assert rows["pruned"]["params"] < rows["baseline"]["params"]
    assert rows["pruned"]["macs"] < rows["baseline"]["macs"]
    export = _manifests(run_dir)["export"]["metrics"]
    assert export["baseline"]["max_rel_error"] < 1e-3 and export["pruned"]["max_rel_error"] < 1e-3
    assert export["int8"]["qdq"]["conv_quantized"] == export["int8"]["qdq"]["conv"] - 3 > 0  # the detector's three prediction convs stay float
    assert all(rows[m]["latency_median_ms"] > 0 for m in rows)
    assert rows["int8"]["file_size_bytes"] < rows["pruned"]["file_size_bytes"]


def test_pruned_model_reloads_in_a_fresh_process(cpu_run):
    import subprocess
    import sys

    _, run_dir = cpu_run
    code = (
        "import torch, edgecompress as ec;"
        f"m = ec.load_model(r'{run_dir / 'finetune' / 'model.pt'}').eval();"
        "print(sum(p.numel() for p in m.parameters()), [tuple(o.shape) for o in m(torch.randn(1, 3, 128, 128))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    report = json.loads((run_dir / "report.json").read_text())
    assert out.startswith(str(report["models"][1]["params"]))


def test_rerun_reuses_finished_stages_and_from_reruns(cpu_run):
    runs, run_dir = cpu_run
    before = _manifests(run_dir)
    ec.build(BuildConfig(target="cpu", quick=True, runs_dir=str(runs), name="e2e"))
    assert _manifests(run_dir) == before
    ec.build(BuildConfig(target="cpu", quick=True, runs_dir=str(runs), name="e2e", from_stage="engine"))
    after = _manifests(run_dir)
    assert after["export"] == before["export"]
    assert after["engine"]["finished"] >= before["engine"]["finished"] and after["engine"] != before["engine"]


def test_jetson_nano_plan_skips_qat_and_bundles_fp16(cpu_run):
    runs, _ = cpu_run
    run_dir = ec.build(BuildConfig(target="jetson-nano", quick=True, runs_dir=str(runs), name="e2e-nano"))
    manifests = _manifests(run_dir)
    assert manifests["qat"]["status"] == "skipped" and "int8" in manifests["qat"]["reason"]
    engine = manifests["engine"]["metrics"]
    assert engine["kind"] == "bundle" and engine["precision"] == "fp16"
    assert "--fp16" in engine["command"] and "--int8" not in engine["command"]
    assert not (run_dir / "export" / "int8.onnx").exists()
    fp16 = manifests["export"]["metrics"]["fp16"]  # the fp16 ONNX a TensorRT 11 (strongly typed) build would take
    assert fp16["max_rel_error"] < 1e-2 and (run_dir / "export" / "pruned_fp16.onnx").is_file()
    assert "| fp16 |" in (run_dir / "report.md").read_text()
    assert manifests["export"]["metrics"]["opset"] == 13  # TensorRT 8.2 (JetPack 4) parses opsets up to 13
    assert onnx.load(str(run_dir / "export" / "pruned.onnx")).opset_import[0].version == 13
    assert check_onnx(run_dir / "export" / "pruned.onnx", get_target("jetson-nano")).errors == []
    script = next((run_dir / "engine").rglob("build_engine.sh"))
    assert os.access(script, os.X_OK)


def test_mac_target_layer_pruning_and_taylor_scores(cpu_run):
    """The prune stage's options: drop the weakest residual block, then remove half the MACs by taylor scores."""
    import shutil

    runs, run_dir = cpu_run
    shutil.copytree(run_dir, runs / "options")  # reuse the trained baseline and sparse stages
    config = BuildConfig(target="cpu", quick=True, runs_dir=str(runs), name="options", target_macs=0.5, prune_layers=1, criterion="taylor")
    manifests = _manifests(ec.build(config))
    assert manifests["sparse"]["fingerprint"] == _manifests(run_dir)["sparse"]["fingerprint"]
    prune = manifests["prune"]["metrics"]
    assert len(prune["removed_blocks"]) == 1 and prune["plan"]["target_macs"] == 0.5
    assert prune["macs"] <= 0.55 * manifests["baseline"]["metrics"]["macs"]
    assert manifests["export"]["metrics"]["pruned"]["max_rel_error"] < 1e-3


def test_report_times_the_models_in_openvino_too(cpu_run):
    pytest.importorskip("openvino", reason="openvino (the dev extra) is not installed")
    runs, run_dir = cpu_run
    shutil.copytree(run_dir, runs / "e2e-openvino")
    copy = ec.build(BuildConfig(target="cpu", quick=True, runs_dir=str(runs), name="e2e-openvino", profile_runtimes=("onnxruntime", "openvino")))
    manifests = _manifests(copy)
    assert {k: v for k, v in manifests.items() if k != "report"} == {k: v for k, v in _manifests(run_dir).items() if k != "report"}
    rows = json.loads((copy / "report.json").read_text())["models"]
    assert all(row["latency_by_runtime"]["openvino"]["median_ms"] > 0 for row in rows)
    assert "Latency in openvino" in (copy / "report.md").read_text()
    layers = json.loads((copy / "report" / manifests["report"]["outputs"]["layers"]).read_text())  # each model's layers in each runtime's profiler
    assert {runtime: set(by_model) for runtime, by_model in layers.items()} == {runtime: {"baseline", "pruned", "int8"} for runtime in ("onnxruntime", "openvino")}
    assert {layer["precision"] for layer in layers["openvino"]["int8"]["layers"] if layer["type"] == "Convolution"} & {"i8", "u8"}
    section = (copy / "report.md").read_text().split("## Where the time goes")[1]
    assert "### onnxruntime (CPUExecutionProvider)" in section and "### openvino (CPU)" in section and "**int8**" in section
    ec.build(BuildConfig(target="cpu", quick=True, runs_dir=str(runs), name="e2e-openvino", profile_runtimes=("openvino",), profile_batch=4))
    report = (copy / "report.md").read_text()
    assert "Latency: openvino on this machine's CPU, batch 4" in report and "OpenVINO's CPU plugin" in report
    assert "onnxruntime's layout" not in report


def test_unknown_profile_runtime_fails_before_training(tmp_path):
    with pytest.raises(EdgeCompressError, match="--profile-runtime"):
        ec.build(BuildConfig(target="cpu", quick=True, runs_dir=str(tmp_path), profile_runtimes=("tvm",)))
    assert not any(tmp_path.iterdir())
