"""Our onnxruntime int8 layout before and after SiLU quantization vs onnxruntime's own ``quantize_static``, on a SiLU model.

    python bench/int8_layout_bench.py                        # the zoo's yolov8n at 320 px, pruned 50%
    python bench/int8_layout_bench.py --prune 0 --openvino   # dense, and OpenVINO timings too

The zoo's yolov8n (C2f blocks, SiLU activations; random weights, BatchNorm statistics of the calibration
images), optionally pruned (L1, ``--prune`` of the channels), exported in fp32, then quantized five ways:
ours before (the ``openvino`` layout: the onnxruntime layout without its SiLU and split rules, which is
the onnxruntime layout as it was before them, bit for bit: no QuantizeLinear between a conv and its SiLU),
ours (the onnxruntime layout, the ``cpu`` target's), ours with the prediction convs in int8 too (``float_layers=()``), and the peer, ``quantize_static`` of the same fp32 ONNX
(QDQ, per-channel int8 weights, uint8 activations, MinMax on the same calibration images), as is (it also
quantizes the prediction convs and the output concats) and with those nodes excluded, as ours keeps them.

Table 1 counts the ops of the graph onnxruntime actually runs (``optimized_model_filepath``, ORT_ENABLE_ALL,
CPU): which convs became QLinearConv, whether Sigmoid/Mul run as QLinearSigmoid/QLinearMul or in float.
Table 2: differences on images calibration never saw, as the RMS over all output values of the difference
divided by that output channel's spread (std of the fp32 output): against fp32 with onnxruntime's graph
optimisations off (the Q/DQ graph's own arithmetic) and on (fused integer kernels, which on x86 without VNNI
also saturate), and for ours the fake-quant model against fp32 and against its unfused ONNX. Random weights
make these a proxy: compare rows, not with a trained model's figures. Table 3: median latency over
interleaved rounds, batch 1, ``--threads`` intra-op threads, speed relative to fp32 and to the peer as is.
The timings are only as good as the machine is quiet: the CPU and its load average are printed beside them.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's edgecompress, not an installed one

import edgecompress as ec  # noqa: E402
from edgecompress.data.calib import load_calibration_images  # noqa: E402
from edgecompress.export import openvino_conv_precisions  # noqa: E402
from edgecompress.models import build_model  # noqa: E402
from edgecompress.quant import calibrate, quantize_model  # noqa: E402

OURS = (("ours before = openvino layout", "openvino", None), ("ours", "onnxruntime", None), ("ours, prediction convs int8", "onnxruntime", ()))
COLUMNS = ("QLinearConv", "Conv", "QLinearSigmoid", "QLinearMul", "Sigmoid", "Mul", "QuickGelu", "QLinearAdd", "QLinearConcat", "Concat",
           "QuantizeLinear", "DequantizeLinear", "Transpose")


class _Images(CalibrationDataReader):
    def __init__(self, batches: list[torch.Tensor]):
        self._batches = iter([{"images": batch.numpy()} for batch in batches])

    def get_next(self) -> dict | None:
        return next(self._batches, None)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def calibrated_yolov8n(calib: torch.Tensor, args: argparse.Namespace) -> nn.Module:
    """The zoo's yolov8n with BN statistics of the calibration images (so every BN output is normalised), pruned if asked."""
    torch.manual_seed(0)
    model = build_model("yolov8n", num_classes=args.classes).train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative averages over the batches below
    with torch.no_grad():
        for batch in calib.split(8):
            model(batch)
    model.eval()
    return ec.prune(model, calib[:1], ratio=args.prune, criterion="l1").eval() if args.prune else model


def build(folder: Path, args: argparse.Namespace) -> tuple[dict[str, Path], dict[str, nn.Module], torch.Tensor]:
    """The fp32 ONNX and the int8 variants' files, our fake-quant models by label, and held-out test images."""
    images = load_calibration_images(Path(args.calib), args.image_size, limit=args.calib_images + 4)
    calib, test = images[:args.calib_images], images[args.calib_images:]
    model = calibrated_yolov8n(calib, args)
    paths = {"fp32": ec.export_onnx(model, calib[:1], folder / "fp32.onnx")}
    fake_quant = {}
    for label, backend, float_layers in OURS:
        fake_quant[label] = quantize_model(model, calib[:1], backend=backend, float_layers=float_layers)
        calibrate(fake_quant[label], list(calib.split(8)), method=args.method)
        paths[label] = ec.export_onnx(fake_quant[label], calib[:1], folder / f"ours{len(paths)}.onnx", int8=True)
    for label, excluded in (("peer: quantize_static", []), ("peer, prediction convs float", _prediction_nodes(paths["fp32"]))):
        paths[label] = folder / f"peer{len(paths)}.onnx"
        quantize_static(str(paths["fp32"]), str(paths[label]), _Images(list(calib.split(8))), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=excluded)
    return paths, fake_quant, test


def _prediction_nodes(path: Path) -> list[str]:
    """The output Concats and the Convs feeding them, which our layout keeps float (the head's raw maps)."""
    graph = onnx.load(str(path)).graph
    outputs = {output.name for output in graph.output}
    concats = [node for node in graph.node if node.op_type == "Concat" and node.output[0] in outputs]
    feeding = {name for concat in concats for name in concat.input}
    return [node.name for node in concats] + [node.name for node in graph.node if node.op_type == "Conv" and node.output[0] in feeding]


def session(path: Path, threads: int, optimized: bool = True, save_to: Path | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if save_to is not None:
        options.optimized_model_filepath = str(save_to)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def structure_table(paths: dict[str, Path], folder: Path, args: argparse.Namespace) -> None:
    openvino = ["OpenVINO conv precisions"] if args.openvino else []
    print("| model | " + " | ".join([*COLUMNS, "other", *openvino]) + " |\n" + "|---" * (len(COLUMNS) + 2 + len(openvino)) + "|")
    for label, path in paths.items():
        optimized = folder / f"{path.stem}_optimized.onnx"
        session(path, 1, save_to=optimized)
        ops = Counter(node.op_type for node in onnx.load(str(optimized)).graph.node)
        cells = [str(ops.get(op, 0)) for op in COLUMNS] + [", ".join(f"{op} {count}" for op, count in sorted(ops.items()) if op not in COLUMNS)]
        if args.openvino:
            cells.append(", ".join(f"{precision} {count}" for precision, count in openvino_conv_precisions(path).items()))
        print(f"| {label} | " + " | ".join(cells) + " |")


def noise_table(paths: dict[str, Path], fake_quant: dict[str, nn.Module], test: torch.Tensor) -> None:
    """Output differences in units of each output channel's spread (std of the fp32 output over images and positions)."""
    feed = {"images": test.numpy()}
    reference = session(paths["fp32"], 1).run(None, feed)
    spread = [output.std(axis=(0, 2, 3), keepdims=True) for output in reference]

    def rms(outputs: list[np.ndarray], against: list[np.ndarray]) -> float:
        return float(np.sqrt(np.mean(np.concatenate([((got - want) / std).ravel() ** 2 for got, want, std in zip(outputs, against, spread)]))))

    print("\n| model | vs fp32, onnxruntime unfused | vs fp32, fused | fake-quant torch vs fp32 | unfused ONNX vs fake-quant torch |\n"
          "|---|---|---|---|---|")
    for label, path in paths.items():
        if label == "fp32":
            continue
        unfused, fused = (session(path, 1, optimized).run(None, feed) for optimized in (False, True))
        cells = [rms(unfused, reference), rms(fused, reference)]
        if label in fake_quant:
            with torch.no_grad():
                torch_outputs = [output.numpy() for output in fake_quant[label](test)]
            cells += [rms(torch_outputs, reference), rms(unfused, torch_outputs)]
        print(f"| {label} | " + " | ".join(f"{cell:.4f}" for cell in cells) + " |" + " - | - |" * (len(cells) == 2))


def median_ms(run, runs: int) -> float:
    run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def runners(paths: dict[str, Path], image: np.ndarray, args: argparse.Namespace) -> dict[str, object]:
    found = {}
    for label, path in paths.items():
        ort_session = session(path, args.threads)
        found[f"onnxruntime | {label}"] = lambda s=ort_session: s.run(None, {"images": image})
    if args.openvino:
        import openvino as ov

        core = ov.Core()
        for label, path in paths.items():
            compiled = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": args.threads, "INFERENCE_PRECISION_HINT": "f32"})
            request = compiled.create_infer_request()
            found[f"openvino | {label}"] = lambda r=request: r.infer({0: image})
    return found


def timing_table(paths: dict[str, Path], test: torch.Tensor, args: argparse.Namespace) -> None:
    image = test[:1].numpy()
    timed = runners(paths, image, args)
    samples: dict[str, list[float]] = {label: [] for label in timed}
    for _ in range(args.rounds):
        for label, run in timed.items():
            samples[label].append(median_ms(run, args.runs))
    medians = {label: statistics.median(values) for label, values in samples.items()}
    print(f"\nCPU: {cpu_model()} ({os.cpu_count()} logical cores); onnxruntime {ort.__version__}; {args.threads} intra-op thread(s), "
          f"batch 1, median of {args.rounds} interleaved rounds of {args.runs} runs; load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("\n| runtime | model | median ms | speed vs fp32 | speed vs peer |\n|---|---|---|---|---|")
    for label, ms in medians.items():
        runtime = label.split(" | ")[0]
        fp32, peer = medians[f"{runtime} | fp32"], medians[f"{runtime} | peer: quantize_static"]
        print(f"| {label} | {ms:.2f} | {fp32 / ms:.2f}x | {peer / ms:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--prune", type=float, default=0.5, help="share of channels pruned (L1) before export; 0 keeps the model dense")
    parser.add_argument("--calib", default="calib_data", help="folder of calibration images")
    parser.add_argument("--calib-images", type=int, default=32)
    parser.add_argument("--method", default="mse", help="our calibration method (the peer uses MinMax)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--openvino", action="store_true", help="time OpenVINO's CPU plugin on the same files too")
    parser.add_argument("--no-timing", action="store_true", help="tables 1 and 2 only (deterministic)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"yolov8n, {args.image_size} px, {args.prune:.0%} of channels pruned, random weights; ours calibrated with {args.method}\n")
    with tempfile.TemporaryDirectory(prefix="int8-layout-") as folder:
        paths, fake_quant, test = build(Path(folder), args)
        structure_table(paths, Path(folder), args)
        noise_table(paths, fake_quant, test)
        if not args.no_timing:
            timing_table(paths, test, args)


if __name__ == "__main__":
    main()
