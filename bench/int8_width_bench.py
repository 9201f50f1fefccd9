"""Where onnxruntime's CPU int8 kernels pay off: int8 vs fp32 latency by channel width.

    python bench/int8_width_bench.py                       # layers, then the detector (needs `make demo`)
    python bench/int8_width_bench.py --run runs/yolo-mbv2-jetson-orin-nano

Part 1 times single layers (depthwise 3x3 or pointwise 1x1 conv, then ReLU and a 1x1 conv) at several
channel counts, fp32 vs the same graph quantized by onnxruntime's own ``quantize_static`` (QDQ, per-channel
int8 weights, uint8 activations). Part 2 quantizes the run's baseline (unpruned) and fine-tuned (pruned)
detectors with ``edgecompress.quantize(backend="onnxruntime")`` and times both against fp32. Part 3
splits the pruned detector's kernel time (onnxruntime's profiler, after its graph optimisations) into
depthwise convs, other convs and the rest, fp32 vs int8. Every table interleaves its variants over
``--rounds`` rounds in one process and reports medians, so the ratios hold even while the VM's speed drifts.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from torch import nn

import edgecompress as ec
from edgecompress.data.calib import calib_batches, load_calibration_images


class _RandomBatches(CalibrationDataReader):
    def __init__(self, shape: tuple[int, ...], count: int = 4):
        self._batches = iter([{"x": np.random.rand(*shape).astype(np.float32)} for _ in range(count)])

    def get_next(self) -> dict | None:
        return next(self._batches, None)


def median_ms(path: Path, shape: tuple[int, ...], runs: int, threads: int) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.random.rand(*shape).astype(np.float32)
    for _ in range(10):
        session.run(None, {name: x})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {name: x})
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def interleaved(paths: dict[str, Path], shape: tuple[int, ...], runs: int, rounds: int, threads: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {label: [] for label in paths}
    for _ in range(rounds):
        for label, path in paths.items():
            samples[label].append(median_ms(path, shape, runs, threads))
    return {label: float(np.median(values)) for label, values in samples.items()}


def layer_table(folder: Path, args: argparse.Namespace) -> None:
    print("| layer | channels | map | fp32 ms | int8 ms | int8 speed-up |\n|---|---|---|---|---|---|")
    for kind in ("depthwise 3x3", "pointwise 1x1"):
        for channels in args.channels:
            first = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels) if kind.startswith("depthwise") else nn.Conv2d(channels, channels, 1)
            model = nn.Sequential(first, nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU()).eval()
            shape = (1, channels, args.map_size, args.map_size)
            fp32, int8 = folder / "layer_fp32.onnx", folder / "layer_int8.onnx"
            torch.onnx.export(model, (torch.rand(shape),), str(fp32), input_names=["x"], dynamo=False, opset_version=17)
            quantize_static(str(fp32), str(int8), _RandomBatches(shape), quant_format=QuantFormat.QDQ, per_channel=True,
                            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
            times = interleaved({"fp32": fp32, "int8": int8}, shape, args.runs, args.rounds, args.threads)
            print(f"| {kind} | {channels} | {args.map_size}x{args.map_size} | {times['fp32']:.4f} | {times['int8']:.4f} | {times['fp32'] / times['int8']:.2f}x |")


def detector_table(folder: Path, args: argparse.Namespace) -> None:
    images = load_calibration_images(Path("calib_data"), args.image_size, limit=128)
    paths: dict[str, Path] = {}
    widths = {}
    for stage in ("baseline", "finetune"):
        model = ec.load_model(Path(args.run) / stage / "model.pt").eval()
        widths[stage] = np.median([m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)])
        paths[f"{stage} fp32"] = ec.export_onnx(model, images[:1], folder / f"{stage}_fp32.onnx")
        quantized = ec.quantize(model, calib_batches(images, 32), backend="onnxruntime")
        paths[f"{stage} int8"] = ec.export_onnx(quantized, images[:1], folder / f"{stage}_int8.onnx", int8=True)
    print("\n| detector | median conv width | batch | fp32 ms | int8 ms | int8 speed-up |\n|---|---|---|---|---|---|")
    for batch, runs in ((1, args.runs), (16, max(args.runs // 10, 10))):
        times = interleaved(paths, (batch, 3, args.image_size, args.image_size), runs, args.rounds, args.threads)
        for stage, label in (("baseline", "baseline (unpruned)"), ("finetune", "pruned 60%, fine-tuned")):
            fp32, int8 = times[f"{stage} fp32"], times[f"{stage} int8"]
            print(f"| {label} | {widths[stage]:.0f} | {batch} | {fp32:.3f} | {int8:.3f} | {fp32 / int8:.2f}x |")
    breakdown_table(folder, {"fp32": paths["finetune fp32"], "int8": paths["finetune int8"]}, args)


def kernel_microseconds(path: Path, folder: Path, shape: tuple[int, ...], runs: int, threads: int) -> Counter:
    """Mean kernel time per run (us) of ``path``'s optimised graph, by depthwise conv / other conv / other op."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / path.stem)
    options.optimized_model_filepath = str(folder / f"{path.stem}_optimized.onnx")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    depthwise = {node.name for node in onnx.load(options.optimized_model_filepath).graph.node
                 if any(a.name == "group" and a.i > 1 for a in node.attribute)}
    x = {session.get_inputs()[0].name: np.random.rand(*shape).astype(np.float32)}
    for _ in range(runs):
        session.run(None, x)
    totals: Counter = Counter()
    for event in json.loads(Path(session.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            node, op = event["name"].removesuffix("_kernel_time"), event["args"]["op_name"]
            kind = "depthwise conv" if node in depthwise else "other conv" if "Conv" in op else "other ops"
            totals[kind] += event["dur"] / runs  # includes warm-up: the first run's share is 1/runs
    return totals


def breakdown_table(folder: Path, paths: dict[str, Path], args: argparse.Namespace) -> None:
    shape = (1, 3, args.image_size, args.image_size)
    times = {label: kernel_microseconds(path, folder, shape, args.runs, args.threads) for label, path in paths.items()}
    print("\n| pruned detector, batch 1 | fp32 us/run | int8 us/run | int8 speed-up |\n|---|---|---|---|")
    for kind in ("depthwise conv", "other conv", "other ops"):
        fp32, int8 = times["fp32"][kind], times["int8"][kind]
        print(f"| {kind} | {fp32:.0f} | {int8:.0f} | {fp32 / int8:.2f}x |")
    fp32, int8 = sum(times["fp32"].values()), sum(times["int8"].values())
    print(f"| all kernels | {fp32:.0f} | {int8:.0f} | {fp32 / int8:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/yolo-mbv2-jetson-orin-nano", help="a finished build's run folder")
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--map-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"onnxruntime {ort.__version__}, {args.threads} intra-op threads, medians of {args.rounds} interleaved rounds\n")
    with tempfile.TemporaryDirectory(prefix="int8-width-") as folder:
        layer_table(Path(folder), args)
        if (Path(args.run) / "finetune" / "model.pt").is_file():
            detector_table(Path(folder), args)
        else:
            print(f"\n(no trained detector in {args.run}: run `make demo` for the detector table)")


if __name__ == "__main__":
    main()
