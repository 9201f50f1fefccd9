"""What int8 does to a detector's prediction convs (issue 15): kept float, quantized on their inputs only, or quantized
through their outputs, scored as fake-quant models and as int8 ONNX in onnxruntime and OpenVINO.

    .venv/bin/python bench/prediction_convs_bench.py              # after bench/train_bench.py: its fine-tuned models
    .venv/bin/python bench/prediction_convs_bench.py --models bench/runs/train/finetuned-0.6-0-plain.pt

Each model (an ``edgecompress`` model file of the bundled detector, fine-tuned on the digits set by
``bench/train_bench.py``) is quantized three ways for the ``cpu`` target (its Q/DQ layout and weight bits, BN folded,
MSE calibration on the bundled ``calib_data/``), identical but for the three prediction convs (``prediction_layers()``):

- ``float``: kept float, the build's default (``quantize_prediction_layers`` off);
- ``inputs only``: their inputs and weights quantized, their outputs float: the layout the onnxruntime backend gave a
  quantized conv whose output leaves the model before issue 15's change (onnxruntime then ran it in float on its
  dequantized input: int8's rounding for no speed);
- ``through outputs``: their outputs quantized too (uint8, a scale of their own), as the onnxruntime backend now does
  for a quantized conv no quantized consumer reads, so onnxruntime runs it as QLinearConv
  (``quantize_prediction_layers`` on).

Columns: mAP50 and mAP50-95 on the 400 validation images of the set the model was trained on, for the float model,
each fake-quant model, and its int8 ONNX in onnxruntime and in OpenVINO (the graph each runtime runs, integer
kernels included), and how many convs onnxruntime ran as QLinearConv (of the model's convs, given above the table).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgecompress.artifacts import load_model  # noqa: E402
from edgecompress.data import calibration_paths, load_images, spread  # noqa: E402
from edgecompress.data.calib import calib_batches  # noqa: E402
from edgecompress.eval.predict import onnx_predict, openvino_predict  # noqa: E402
from edgecompress.export import export_onnx, ort_optimized_ops  # noqa: E402
from edgecompress.profile.machine import cpu_model  # noqa: E402
from edgecompress.quant import calibrate, placement, quantize_model  # noqa: E402
from edgecompress.run import DEFAULT_CALIB  # noqa: E402
from edgecompress.targets import get_target  # noqa: E402
from edgecompress.tasks import get_task, torch_predict  # noqa: E402

TASK = get_task("detect")
IMAGE_SIZE, BATCH_SIZE = 128, 32
TRAIN_RUNS = ROOT / "bench/runs/train"


def quantized(model: torch.nn.Module, variant: str, example: torch.Tensor, calibration: torch.Tensor) -> torch.nn.Module:
    """``model`` quantized for the cpu target with its prediction convs as ``variant`` says, MSE-calibrated."""
    target = get_target("cpu")
    float_layers = model.prediction_layers() if variant == "float" else []
    layout = placement.BACKENDS[target.qdq_backend]
    placement.BACKENDS[target.qdq_backend] = dataclasses.replace(layout, quantize_last_conv_outputs=variant == "through outputs")
    try:
        result = quantize_model(model, example, float_layers=float_layers, backend=target.qdq_backend, weight_bits=target.weight_bits)
    finally:
        placement.BACKENDS[target.qdq_backend] = layout
    calibrate(result, calib_batches(calibration, BATCH_SIZE), method="mse")
    return result.eval()


def row(label: str, scores: list[dict], qlinear: str) -> str:
    return f"| {label} | " + " | ".join(f"{s['map50']:.4f} / {s['map50_95']:.4f}" if s else "" for s in scores) + f" | {qlinear} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", type=Path, help="fine-tuned model files (default: train_bench's seed-0 plain ones)")
    parser.add_argument("--data", type=Path, default=TRAIN_RUNS / "data/data.yaml", help="their training set's data.yaml")
    args = parser.parse_args()
    models = args.models or sorted(TRAIN_RUNS.glob("finetuned-*-0-plain.pt"))
    if not models or not all(path.is_file() for path in models) or not args.data.is_file():
        parser.error(f"models {[str(m) for m in models]} or data {args.data} not found; run bench/train_bench.py first or pass --models/--data")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    data = TASK.load(args.data, IMAGE_SIZE, BATCH_SIZE)
    calibration = load_images(spread(calibration_paths(DEFAULT_CALIB), 256), IMAGE_SIZE)
    example = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_model()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}; cpu target: {get_target('cpu').qdq_backend} layout, {get_target('cpu').weight_bits}-bit weights\n")
    for path in models:
        model = load_model(path).eval()
        convs = sum(isinstance(module, torch.nn.Conv2d) for module in model.modules())
        print(f"{path.name}, {convs} convs (mAP50 / mAP50-95)\n\n| prediction convs | fake-quant | onnxruntime int8 | OpenVINO int8 | "
              "QLinearConv in onnxruntime |\n|---|---|---|---|---|")
        print(row("float model", [TASK.evaluate(torch_predict(model), model, data.val), {}, {}], ""), flush=True)
        with tempfile.TemporaryDirectory() as folder:
            for variant in ("float", "inputs only", "through outputs"):
                int8 = quantized(model, variant, example, calibration)
                onnx_path = export_onnx(int8, example, Path(folder) / "int8.onnx", int8=True)
                scores = [TASK.evaluate(predict, int8, data.val) for predict in (torch_predict(int8), onnx_predict(onnx_path), openvino_predict(onnx_path))]
                ops = ort_optimized_ops(onnx_path)
                print(row(variant, scores, str(ops.get("QLinearConv", 0))), flush=True)
        print()


if __name__ == "__main__":
    main()
