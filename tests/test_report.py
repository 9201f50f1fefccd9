"""report.md / report.json from typed stage outcomes, without running any stage."""

from __future__ import annotations

import json

import numpy as np

from edgecompress.outcomes import (EngineOutcome, ExportedModel, ExportOutcome, GammaHistogram, ModelOutcome, PruneOutcome,
                                   QuantOutcome, SparseOutcome)
from edgecompress.report import write_report
from edgecompress.run import Run
from edgecompress.settings import BuildConfig


def _run(tmp_path, *, quantized: bool = True, runtimes=("onnxruntime",), **settings) -> Run:
    target = "cpu" if quantized else "jetson-nano"
    run = Run(BuildConfig(target=target, name="unit", runs_dir=str(tmp_path), profile_runtimes=runtimes, **settings).resolved())
    gammas = np.abs(np.random.default_rng(0).normal(0, 0.3, 100))
    exported = {"baseline": ExportedModel(1e-6, 1e-6, {"map50": 0.90}), "pruned": ExportedModel(2e-6, 2e-6, {"map50": 0.88})}
    if quantized:
        exported["int8"] = ExportedModel(3e-3, 1e-2, {"map50": 0.87}, {"conv": 5})
        qat = QuantOutcome(outputs={"model": "model.pt"}, scores={"map50": 0.86}, ptq={"map50": 0.80}, backend="onnxruntime",
                           calibration_images=64, kept_float=["head.2"])
    else:
        exported["fp16"] = ExportedModel(5e-4, 1e-3, {"map50": 0.88})
        qat = QuantOutcome(skipped="jetson-nano has no int8 support in TensorRT 8.2")
    run.outcomes = {
        "baseline": ModelOutcome(outputs={"model": "model.pt"}, scores={"map50": 0.9, "map50_95": 0.5}, params=2_000_000, macs=400_000_000),
        "sparse": SparseOutcome(outputs={"model": "model.pt", "gamma_plot": "gamma_histogram.png"}, scores={"map50": 0.89}, gamma_before=GammaHistogram.of(gammas),
                                gamma_after=GammaHistogram.of(gammas * 0.02)),
        "prune": PruneOutcome(outputs={"model": "model.pt"}, scores={"map50": 0.4}, params=700_000, macs=150_000_000,
                              plan={"channels_removed": 300, "channels_total": 500, "target_macs": None}),
        "finetune": ModelOutcome(outputs={"model": "model.pt"}, scores={"map50": 0.88, "map50_95": 0.48}, params=700_000, macs=150_000_000),
        "qat": qat,
        "export": ExportOutcome(outputs={label: f"{label}.onnx" for label in exported}, models=exported, opset=17),
        "engine": EngineOutcome(outputs={"model": "m.onnx"}, kind="onnxruntime", precision="int8", notes=["optimised for the CPU"]),
    }
    run.manifests = {name: {"status": "skipped" if outcome.skipped else "done", "reason": outcome.skipped, "wall_s": 1.5,
                            "metrics": outcome.metrics()} for name, outcome in run.outcomes.items()}
    return run


def _latency(labels, medians, runtime="onnxruntime"):
    return {runtime: {label: {"median_ms": m, "p90_ms": m * 1.1, "peak_memory_mb": 10.0, "file_size_bytes": 1_000_000} for label, m in zip(labels, medians)}}


def test_report_rows_come_from_the_outcomes(tmp_path):
    run = _run(tmp_path)
    write_report(run, tmp_path / "report", _latency(["baseline", "pruned", "int8"], [4.0, 2.0, 1.0]))
    markdown = (run.dir / "report.md").read_text()
    assert "| baseline | 0.9000 | 0.9000 | 2,000,000 | 400.0 M | 1.00 MB | 4.00 ms | 4.40 ms | 1.00x | 10.0 MB |" in markdown
    assert "| int8 | 0.8600 | 0.8700 | 700,000 | 150.0 M |" in markdown and "| 4.00x |" in markdown  # int8 size is the pruned model's
    assert "sensitivity analysis kept 1 layer in float (head.2)" in markdown and "PTQ): map50 0.8000" in markdown
    assert "removed 300 of 500 prunable channels" in markdown and "QLinearConv" in markdown  # onnxruntime layout note
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [row["model"] for row in report["models"]] == ["baseline", "pruned", "int8"]
    assert report["models"][2]["metrics_torch"] == {"map50": 0.86} and report["models"][2]["onnx_max_abs_error"] == 3e-3
    assert report["stages"]["qat"]["metrics"]["kept_float"] == ["head.2"] and report["total_wall_s"] == 10.5


def test_skipped_quantization_reports_the_fp16_row_and_the_reason(tmp_path):
    run = _run(tmp_path, quantized=False, runtimes=("onnxruntime", "openvino"))
    latency = {**_latency(["baseline", "pruned", "fp16"], [4.0, 2.0, 3.0]), **_latency(["baseline", "pruned", "fp16"], [2.0, 1.0, 1.0], "openvino")}
    write_report(run, tmp_path / "report", latency)
    markdown = (run.dir / "report.md").read_text()
    assert "| qat | skipped | 1.5 s | jetson-nano has no int8 support in TensorRT 8.2 |" in markdown
    assert "| fp16 | 0.8800 | 0.8800 |" in markdown and "The fp16 row is the pruned model converted to fp16" in markdown
    assert "Latency in openvino" in markdown and "| pruned | 1.00 ms | 1.10 ms | 2.00x | 10.0 MB |" in markdown
    assert "Result: **onnxruntime** at int8." in markdown


def test_quick_run_says_its_scores_are_meaningless(tmp_path):
    latency = _latency(["baseline", "pruned", "int8"], [4.0, 2.0, 1.0])
    run = _run(tmp_path, quick=True)
    write_report(run, run.dir / "report", latency)
    lines = (run.dir / "report.md").read_text().splitlines()
    assert lines[0] == "# edgecompress report: unit" and lines[2].startswith("> **Quick run** (--quick)") and "map50 figures are meaningless" in lines[2]
    assert "1 interleaved round of 20 runs" in lines[4]  # --quick profiles one round
    write_report(_run(tmp_path / "full"), tmp_path / "full" / "report", latency)
    assert "Quick run" not in (tmp_path / "full" / "unit" / "report.md").read_text()


def test_unsteady_latency_is_named(tmp_path):
    run = _run(tmp_path, profile_rounds=3)
    latency = _latency(["baseline", "pruned", "int8"], [4.0, 2.0, 1.0])
    write_report(run, run.dir / "report", latency)
    assert "Unsteady latency" not in (run.dir / "report.md").read_text()  # p90 = 1.1x the median
    latency["onnxruntime"]["int8"]["p90_ms"] = 10.0  # 10x its median
    write_report(run, run.dir / "report", latency)
    markdown = (run.dir / "report.md").read_text()
    note = next(line for line in markdown.splitlines() if "Unsteady latency" in line)
    assert "int8 in onnxruntime (p90 10.00 ms, 10.0x its median 1.00 ms)" in note and "--profile-rounds" in note and "quieter machine" in note
    assert "baseline in" not in note and "3 interleaved rounds of 100 runs" in markdown


def test_gamma_histogram_link_resolves_from_each_report(tmp_path):
    run = _run(tmp_path)
    partial = run.dir / ".partial" / "report"  # the pipeline moves the stage's folder to run.dir/report when done
    write_report(run, partial, _latency(["baseline", "pruned", "int8"], [4.0, 2.0, 1.0]))
    assert "![BN gamma distribution](sparse/gamma_histogram.png)" in (run.dir / "report.md").read_text()
    assert "![BN gamma distribution](../sparse/gamma_histogram.png)" in (partial / "report.md").read_text()
    for text, final in (((run.dir / "report.md").read_text(), run.dir), ((partial / "report.md").read_text(), run.dir / "report")):
        link = text.split("![BN gamma distribution](")[1].split(")")[0]
        assert (final / link).resolve() == (run.dir / "sparse" / "gamma_histogram.png").resolve()


def test_fp16_note_says_what_the_nano_ships(tmp_path):
    from dataclasses import replace

    labels = ["baseline", "pruned", "fp16"]
    run = _run(tmp_path, quantized=False)
    write_report(run, run.dir / "report", _latency(labels, [4.0, 2.0, 3.0]))
    note = next(line for line in (run.dir / "report.md").read_text().splitlines() if line.startswith("The fp16 row"))
    assert "converted to fp16 (`fp16.onnx`" in note  # the file name comes from the export outcome
    assert "jetson-nano ships `pruned.onnx` instead: its TensorRT 8.2 builds the float ONNX with --fp16" in note
    run.target = replace(run.target, tensorrt="11.4")  # strongly typed: the fp16 ONNX is what ships
    write_report(run, run.dir / "report", _latency(labels, [4.0, 2.0, 3.0]))
    note = next(line for line in (run.dir / "report.md").read_text().splitlines() if line.startswith("The fp16 row"))
    assert "ships" not in note and "strongly typed (TensorRT 11)" in note


def _epochs(losses: list[float], **metrics: list[float]) -> list[dict]:
    """Per-epoch rows as a training stage's manifest holds them."""
    return [{"epoch": i + 1, "loss": loss, "lr": 0.01, "seconds": 2.0, **{name: values[i] for name, values in metrics.items()}}
            for i, loss in enumerate(losses)]


def _with_training(run: Run, qat_map50: list[float], kept_epoch: int) -> Run:
    log = {"train_log": "train.csv"}
    for name, losses in (("baseline", [3.0, 2.0, 1.5]), ("sparse", [1.6, 1.4]), ("finetune", [1.2, 1.0])):
        outcome = run.outcomes[name]
        outcome.outputs, outcome.epochs = {**outcome.outputs, **log}, _epochs(losses)
    kept = [0.427, *qat_map50][kept_epoch]
    run.outcomes["qat"] = QuantOutcome(outputs={"model": "model.pt", **log}, scores={"map50": kept}, ptq={"map50": 0.427}, backend="onnxruntime",
                                       calibration_images=64, epochs=_epochs([0.9, 0.8, 0.7][: len(qat_map50)], map50=qat_map50), kept_epoch=kept_epoch)
    return run


def test_report_plots_the_training_and_says_which_int8_weights_were_kept(tmp_path):
    run = _with_training(_run(tmp_path), [0.420, 0.413], kept_epoch=0)
    partial = run.dir / ".partial" / "report"
    outputs = write_report(run, partial, _latency(["baseline", "pruned", "int8"], [4.0, 2.0, 1.0]))
    assert outputs["training_plot"] == "training.png" and (partial / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (run.dir / "report.md").read_text()
    assert "kept the PTQ model: QAT lowered map50 0.4270 -> 0.4130 (2 epochs)" in markdown
    assert "![training loss and map50 per epoch](report/training.png)" in markdown
    assert "[baseline](baseline/train.csv), [sparse](sparse/train.csv), [finetune](finetune/train.csv), [qat](qat/train.csv)" in markdown
    assert "![training loss and map50 per epoch](training.png)" in (partial / "report.md").read_text()  # linked from run.dir/report

    run = _with_training(_run(tmp_path / "better"), [0.430, 0.441, 0.436], kept_epoch=2)
    write_report(run, run.dir / "report", _latency(["baseline", "pruned", "int8"], [4.0, 2.0, 1.0]))
    assert "kept epoch 2 of 3: map50 0.4410 (PTQ 0.4270, last epoch 0.4360)" in (run.dir / "report.md").read_text()
    assert run.outcomes["qat"].kept_note("map50") == "kept epoch 2 of 3: map50 0.4410 (PTQ 0.4270, last epoch 0.4360)"


def test_no_training_no_plot(tmp_path):
    run = _run(tmp_path)  # --weights given: nothing trained, no epochs recorded
    outputs = write_report(run, run.dir / "report", _latency(["baseline", "pruned", "int8"], [4.0, 2.0, 1.0]))
    assert "training_plot" not in outputs and not (run.dir / "report" / "training.png").exists()
    assert "## Training" not in (run.dir / "report.md").read_text()


def _layer_profile(runtime: str, device: str, rows: list[tuple[str, str, str, str, float]]) -> dict:
    """A stored per-layer table (``layers.json``'s entry for one model), slowest first as profile_layers writes it."""
    from edgecompress.profile import LayerProfile, LayerTime

    total = sum(row[-1] for row in rows)
    layers = tuple(LayerTime(name, type_, kernel, precision, ms, 100 * ms / total) for name, type_, kernel, precision, ms in rows)
    return LayerProfile(f"{runtime}.onnx", runtime, "1.0", device, None, 3, 10, layers).to_dict()


def test_where_the_time_goes_lists_each_models_slowest_layers(tmp_path, monkeypatch):
    from edgecompress.profile import RUNTIMES, Runtime

    monkeypatch.setitem(RUNTIMES, "whole-only", Runtime("whole-only", "edgecompress.profile.runners:onnxruntime_runner", "onnxruntime"))
    run = _run(tmp_path, runtimes=("onnxruntime", "whole-only"), profile_layers=2)
    latency = {**_latency(["baseline", "pruned", "int8"], [4.0, 2.0, 1.0]), **_latency(["baseline", "pruned", "int8"], [5.0, 3.0, 2.0], "whole-only")}
    float_rows = [("/stem/Conv", "Conv", "Conv", "f32", 1.5), ("/head/Conv", "Conv", "Conv", "f32", 1.0), ("/Concat", "Concat", "Concat", "f32", 0.5)]
    int8_rows = [("/stem/Conv", "Conv", "QLinearConv", "u8", 0.6), ("ReorderOutput_token_5", "ReorderOutput", "ReorderOutput", "f32", 0.3),
                 ("/head|Conv", "Conv", "Conv", "f32", 0.1)]
    layers = {"onnxruntime": {"baseline": _layer_profile("onnxruntime", "CPUExecutionProvider", float_rows),
                              "int8": _layer_profile("onnxruntime", "CPUExecutionProvider", int8_rows)}}
    write_report(run, run.dir / "report", latency, layers)
    markdown = (run.dir / "report.md").read_text()
    section = markdown.split("## Where the time goes")[1].split("## Stages")[0]
    assert "slowest 2 layers" in section and "median of 10 runs after 3 warm-up runs" in section
    assert "whole-only: no layer profiler registered" in section
    assert "### onnxruntime (CPUExecutionProvider)" in section and "pruned" not in section  # only the models with a table
    baseline, int8 = section.split("**baseline**")[1].split("**int8**")
    assert "3 layers, 3.000 ms in all (whole model: 4.000 ms median)" in baseline
    assert "| /stem/Conv | Conv | Conv | f32 | 1.500 | 50.0% |\n| /head/Conv | Conv | Conv | f32 | 1.000 | 33.3% |" in baseline
    assert "/Concat" not in baseline  # beyond --profile-layers 2
    assert "| /stem/Conv | Conv | QLinearConv | u8 | 0.600 | 60.0% |\n| ReorderOutput_token_5 |" in int8 and "head" not in int8
    write_report(run, run.dir / "report", latency)
    assert "Where the time goes" not in (run.dir / "report.md").read_text()  # no tables, no section


def test_where_the_time_goes_escapes_table_cells(tmp_path):
    run = _run(tmp_path, profile_layers=1)
    rows = [("/head|Conv", "Conv", None, None, 1.0)]
    write_report(run, run.dir / "report", _latency(["baseline", "pruned", "int8"], [4.0, 2.0, 1.0]),
                 {"onnxruntime": {"baseline": _layer_profile("onnxruntime", "CPUExecutionProvider", rows)}})
    assert "| /head\\|Conv | Conv | – | – | 1.000 | 100.0% |" in (run.dir / "report.md").read_text()
