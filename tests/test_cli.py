"""The CLI: targets table, and bad input gives one line and exit status 2."""

from typer.testing import CliRunner

from edgecompress.cli import app

runner = CliRunner()


def test_targets_lists_the_registry():
    result = runner.invoke(app, ["targets"])
    assert result.exit_code == 0
    assert "jetson-nano" in result.output and "sm_53" in result.output and "jetson-agx-orin" in result.output


def test_unknown_target_exits_2(tmp_path):
    result = runner.invoke(app, ["build", "--target", "jetson-banana", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "jetson-banana" in result.output and "edgecompress targets" in result.output


def test_missing_data_exits_2_and_writes_nothing(tmp_path):
    result = runner.invoke(app, ["build", "--target", "cpu", "--data", str(tmp_path / "nope.yaml"), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "nope.yaml" in result.output
    assert not list((tmp_path / "runs").rglob("*.pt"))


def test_empty_calibration_folder_exits_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["build", "--target", "cpu", "--quick", "--calib", str(empty), "--runs-dir", str(tmp_path / "runs"), "--from", "qat"])
    assert result.exit_code == 2
    assert "no images" in result.output


def test_unknown_stage_for_from_exits_2(tmp_path):
    result = runner.invoke(app, ["build", "--from", "polish", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2 and "polish" in result.output


def test_untraceable_model_exits_2_before_training(tmp_path):
    source = tmp_path / "dynamic.py"
    source.write_text(
        "import torch.nn as nn\n"
        "class Dynamic(nn.Module):\n"
        "    def __init__(self, num_classes=10):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 8, 3)\n"
        "    def forward(self, x):\n"
        "        return self.conv(x) if x.sum() > 0 else x\n"
    )
    # --no-distill: with distillation on, preflight refuses it sooner, as no detector the detect task can distil
    result = runner.invoke(app, ["build", "--quick", "--no-distill", "--model", f"{source}:Dynamic", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "trace" in result.output.lower()
    assert not list((tmp_path / "runs").rglob("model.pt"))


def test_malformed_label_exits_2_naming_file_and_line(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
        Image.new("RGB", (64, 64)).save(tmp_path / "images" / split / "a.jpg")
        (tmp_path / "labels" / split / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n" + ("3 0.5 0.5 0.2\n" if split == "val" else ""))
    (tmp_path / "data.yaml").write_text(f"path: {tmp_path}\ntrain: images/train\nval: images/val\nnames: ['a', 'b', 'c', 'd']\n")
    result = runner.invoke(app, ["build", "--quick", "--data", str(tmp_path / "data.yaml"), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "a.txt:2" in result.output


def test_bad_settings_fail_before_any_stage_runs(tmp_path):
    for option, value, message in [("--prune-ratio", "1.5", "ratio"), ("--calib-method", "foo", "calib-method"), ("--criterion", "entropy", "criterion")]:
        result = runner.invoke(app, ["build", option, value, "--runs-dir", str(tmp_path / "runs")])
        assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "runs").exists()


def test_a_setting_on_by_default_can_be_turned_off(tmp_path, monkeypatch):
    import edgecompress.cli as cli

    built = []
    monkeypatch.setattr(cli, "run_build", built.append)  # the settings _build receives, without building
    for flags, ema in (([], True), (["--no-ema"], False), (["--ema"], True)):
        runner.invoke(app, ["build", *flags, "--runs-dir", str(tmp_path)])
        assert built.pop().ema is ema
    assert "--no-ema" in runner.invoke(app, ["build", "--help"], env={"COLUMNS": "200"}).output


def _int8_onnx(tmp_path, *, skip=()):
    import torch
    from torch import nn

    from edgecompress.export import export_onnx
    from edgecompress.quant import calibrate, quantize_model

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1)).eval()
    x = torch.rand(1, 3, 8, 8)
    quantized = quantize_model(model, x, skip=skip)
    calibrate(quantized, [torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))], method="max")
    return export_onnx(quantized, x, tmp_path / "int8.onnx")


def test_check_clean_export_exits_0_and_json_lists_findings(tmp_path):
    import json

    path = _int8_onnx(tmp_path)
    result = runner.invoke(app, ["check", str(path), "--target", "jetson-orin-nano"])
    assert result.exit_code == 0, result.output
    assert "ok: 0 errors" in result.output
    result = runner.invoke(app, ["check", str(path), "--target", "jetson-nano", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["target"] == "jetson-nano" and {f["rule"] for f in report["findings"]} >= {"no-int8"}


def test_check_errors_exit_1_with_a_table(tmp_path):
    import numpy as np
    import onnx
    from onnx import numpy_helper

    path = _int8_onnx(tmp_path)
    model = onnx.load(str(path))
    for init in model.graph.initializer:  # make every activation zero point non-zero: asymmetric, which TensorRT rejects
        if init.data_type == onnx.TensorProto.INT8 and not init.dims:
            init.CopyFrom(numpy_helper.from_array(np.array(5, np.int8), init.name))
    onnx.save(model, str(tmp_path / "asym.onnx"))
    result = runner.invoke(app, ["check", str(tmp_path / "asym.onnx"), "--target", "agx-orin"])
    assert result.exit_code == 1
    assert "zero-point" in result.output and "errors found" in result.output


def test_check_bad_input_exits_2(tmp_path):
    (tmp_path / "junk.onnx").write_text("not a model at all")
    path = _int8_onnx(tmp_path)
    for args, message in [
        ([str(tmp_path / "missing.onnx"), "--target", "cpu"], "not found"),
        ([str(tmp_path / "junk.onnx"), "--target", "cpu"], "junk.onnx"),
        ([str(path), "--target", "jetson-banana"], "unknown target"),
        ([str(path), "--target", "orin"], "ambiguous"),
    ]:
        result = runner.invoke(app, ["check", *args])
        assert result.exit_code == 2 and message in result.output, result.output


def _tiny_imagefolder(root):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 4)):
        for label, colour in enumerate((40, 210)):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(rng.normal(colour, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


TINY_MODEL = (
    "import torch.nn as nn\n"
    "def tiny(num_classes=10):\n"
    "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),\n"
    "                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))\n"
)


def test_quantize_end_to_end_with_sensitivity_and_qat(tmp_path):
    import json

    data = _tiny_imagefolder(tmp_path / "data")
    (tmp_path / "tiny.py").write_text(TINY_MODEL)
    out = tmp_path / "out"
    result = runner.invoke(app, [
        "quantize", f"{tmp_path / 'tiny.py'}:tiny", "--data", str(data), "--task", "classify", "--calib", str(data / "train"),
        "--image-size", "16", "--batch-size", "4", "--sensitivity", "--max-drop", "0.0", "--qat-epochs", "1", "--method", "max", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"model.pt", "model.onnx", "manifest.json", "sensitivity.json", "sensitivity.md"}
    report = json.loads((out / "sensitivity.json").read_text())
    assert {row["layer"] for row in report["layers"]} == {"0", "3", "7"} and report["metric_name"] == "top1"
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["metrics"]) == {"float", "int8", "mixed", "kept_float", "qat", "qat_kept_epoch", "qat_epochs"}
    metrics = manifest["metrics"]  # the best of the calibrated weights and the QAT epoch: QAT never makes int8 worse
    assert metrics["qat_kept_epoch"] in (0, 1) and metrics["qat"] == max(metrics["mixed"], *metrics["qat_epochs"])
    assert manifest["weight_bits"] == 8  # the tensorrt layout's default: GPUs do not saturate
    lint = runner.invoke(app, ["check", str(out / "model.onnx"), "--target", "cpu"])
    assert lint.exit_code == 0, lint.output


def test_quantize_bad_input_exits_2_and_writes_nothing(tmp_path):
    data = _tiny_imagefolder(tmp_path / "data")
    for args, message in [
        (["resnet20", "--data", str(tmp_path / "nope"), "--task", "classify"], "nope"),
        (["resnet20", "--data", str(data), "--task", "segment"], "segment"),
        ([str(tmp_path / "model.pt"), "--data", str(data), "--task", "classify", "--image-size", "16"], "model.pt"),
        (["resnet20", "--data", str(data), "--task", "classify", "--qat-epochs", "-1"], "qat-epochs"),
        (["resnet20", "--data", str(data), "--task", "classify", "--calib", str(tmp_path / "empty")], "empty"),
        (["resnet20", "--data", str(data), "--task", "classify", "--method", "median"], "median"),
        (["resnet20", "--data", str(data), "--task", "classify", "--weight-bits", "9"], "weight-bits"),
    ]:
        result = runner.invoke(app, ["quantize", *args, "--out", str(tmp_path / "out")])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert not (tmp_path / "out").exists()


def _one_line_error(result, *fragments: str) -> None:
    """Exit status 2 and a single line naming the problem (no traceback)."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert all(fragment in lines[0] for fragment in fragments), lines[0]


def test_a_negative_worker_count_exits_2_with_one_line_before_any_work(tmp_path):
    _one_line_error(runner.invoke(app, ["build", "--workers", "-1", "--runs-dir", str(tmp_path / "runs")]), "--workers must be >= 0, got -1")
    data = _tiny_imagefolder(tmp_path / "data")
    result = runner.invoke(app, ["quantize", "resnet20", "--data", str(data), "--task", "classify", "--workers", "-1", "--out", str(tmp_path / "out")])
    _one_line_error(result, "--workers must be >= 0, got -1")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def test_profile_bad_input_exits_2_with_one_line(tmp_path):
    import json

    (tmp_path / "model.pt").write_bytes(b"x")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "stale.json").write_text(json.dumps({"schema": "edgecompress.latency/1", "model": {"path": "m.onnx"}}))
    _one_line_error(runner.invoke(app, ["profile", str(tmp_path / "nope.onnx")]), "nope.onnx not found")
    _one_line_error(runner.invoke(app, ["profile", str(tmp_path / "model.pt")]), "cannot time a .pt file", ".onnx, .xml, .engine, .plan")
    _one_line_error(runner.invoke(app, ["profile", "--import", str(tmp_path / "bad.json")]), "bad.json is not valid JSON")
    _one_line_error(runner.invoke(app, ["profile", "--import", str(tmp_path / "stale.json")]), "stale.json is not a latency report")
    _one_line_error(runner.invoke(app, ["profile", str(tmp_path / "bad.json")]), "use --import")
    _one_line_error(runner.invoke(app, ["profile", str(tmp_path / "model.pt"), "--shape", "1,three"]), "--shape must be")
    _one_line_error(runner.invoke(app, ["profile"]), "pass a MODEL")
    _one_line_error(runner.invoke(app, ["profile", str(tmp_path / "model.onnx"), "--layers", "-1"]), "--layers must be 0")
    _one_line_error(runner.invoke(app, ["profile", str(tmp_path / "model.engine"), "--layers", "5"]), "--layers profiles layers on the CPU", "--exportProfile")
    _one_line_error(runner.invoke(app, ["profile", str(tmp_path / "model.onnx"), "--device", "cuda", "--layers", "5"]), "--layers profiles layers on the CPU")


def test_profile_times_an_onnx_model_and_writes_the_report(tmp_path):
    import json

    import jsonschema
    import torch
    from torch import nn

    from edgecompress.profile.latency_report import schema

    model = tmp_path / "tiny.onnx"
    torch.onnx.export(nn.Conv2d(3, 8, 3).eval(), (torch.randn(1, 3, 32, 32),), str(model), input_names=["x"], dynamo=False)
    result = runner.invoke(app, ["profile", str(model), "--iterations", "20", "--warmup", "1", "--threads", "1", "--json", str(tmp_path / "out.json")])
    assert result.exit_code == 0, result.output
    assert "tiny.onnx: onnxruntime" in result.output and "p99 ms" in result.output
    data = json.loads((tmp_path / "out.json").read_text())
    jsonschema.validate(data, schema())
    assert data["latency_ms"]["host"]["count"] == 20
    again = runner.invoke(app, ["profile", "--import", str(tmp_path / "out.json")])
    assert again.exit_code == 0 and "tiny.onnx: onnxruntime" in again.output
    layers = runner.invoke(app, ["profile", str(model), "--iterations", "5", "--threads", "1", "--layers", "1", "--json", str(tmp_path / "layers.json")])
    assert layers.exit_code == 0, layers.output
    assert "slowest layers (1 of" in layers.output and "kernel" in layers.output and "median of 10 runs" in layers.output
    data = json.loads((tmp_path / "layers.json").read_text())
    jsonschema.validate(data, schema())
    conv = next(layer for layer in data["layers"] if layer["name"] == "/Conv")  # with the layout reorders onnxruntime adds around it
    assert (conv["type"], conv["kernel"], conv["precision"]) == ("Conv", "Conv", "f32") and conv["time_ms"] > 0
    assert abs(sum(layer["percent"] for layer in data["layers"]) - 100) < 1e-6 and data["settings"]["layer_runs"] == 10


def test_report_bad_input_exits_2_and_writes_nothing(tmp_path):
    out = tmp_path / "comparison"
    _one_line_error(runner.invoke(app, ["report", str(tmp_path), "--out", str(out)]), "is not an edgecompress run folder")
    _one_line_error(runner.invoke(app, ["report", "--out", str(out)]), "nothing to compare")
    assert not out.exists()


def test_report_compares_a_run_folder(tmp_path):
    import shutil
    from pathlib import Path

    run = shutil.copytree(Path(__file__).parent / "comparison" / "data" / "quick_builds" / "yolo-mbv2-cpu-quick", tmp_path / "run")
    result = runner.invoke(app, ["report", str(run), "--out", str(tmp_path / "comparison")])
    assert result.exit_code == 0, result.output
    assert "| yolo-mbv2-cpu-quick | int8 |" in result.output  # comparison.md on stdout
    assert sorted(path.name for path in (tmp_path / "comparison").iterdir()) == ["comparison.html", "comparison.json", "comparison.md"]


def test_engine_writes_a_device_bundle_here_and_refuses_bad_input(tmp_path):
    import json
    from pathlib import Path

    path = _int8_onnx(tmp_path)
    result = runner.invoke(app, ["engine", str(path), "--target", "agx-orin", "--out", str(tmp_path / "bundle")])
    assert result.exit_code == 0, result.output
    assert "int8 bundle" in result.output and "jetson-agx-orin" in result.output
    bundle = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert bundle["precision"] == "int8" and bundle["target"]["name"] == "jetson-agx-orin"
    script = (tmp_path / "bundle" / "build_engine.sh").read_text()
    assert "--exportLayerInfo=layers.json" in script and "int8_proof.py" in script and "--useDLACore=0" in script
    for args, message in [
        ([str(path), "--target", "jetson-nano", "--out", str(tmp_path / "nano")], "has no int8"),  # Q/DQ on a GPU without int8
        ([str(tmp_path / "missing.onnx"), "--target", "orin-nano", "--out", str(tmp_path / "missing")], "not found"),
        ([str(path), "--target", "orin-nano", "--dla-core", "0", "--out", str(tmp_path / "dla")], "DLA"),
    ]:
        result = runner.invoke(app, ["engine", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert not Path(args[-1]).exists()
