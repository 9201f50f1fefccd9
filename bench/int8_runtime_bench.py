"""Does the int8 model score in the runtime what its fake-quant model scores? Per Q/DQ layout and weight width (issue 15).

    bench/.venv-ultralytics/bin/python bench/int8_runtime_bench.py          # yolo_bench's trained YOLOv8n, digits, 320 px
    python bench/int8_runtime_bench.py --model yolo-mbv2 --weights W.pt --data D/data.yaml --image-size 128

A trained float detector is calibrated (mse, 256 training images spread over the set, as ``build`` does) in each
Q/DQ layout (``onnxruntime``, ``openvino``, ``tensorrt``) with 8-bit and with 7-bit weights, exported to int8
ONNX, and scored on the validation set four ways: the float model and the fake-quant model in PyTorch, the int8
ONNX in onnxruntime (graph optimisations on: the fused integer kernels users run) and in OpenVINO (CPU, f32
inference precision). Beside them the peer, onnxruntime's ``quantize_static`` of the float ONNX (QDQ, per-channel
int8 weights, uint8 activations, MinMax on the same images): as is, with the head's prediction convs and the box decoding
after them excluded (float, as ours keeps them), and that with its ``reduce_range`` (7-bit weights).
Then batch-1 latency of every int8 ONNX and the float one in both runtimes, medians of interleaved rounds.

On x86 CPUs without VNNI, int8 kernels add two uint8 x int8 products in a saturating 16-bit lane; the CPU
line says whether this one does. Rows are cached in ``--out``/results.json (delete it to measure again).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from edgecompress.data import image_paths, load_images, spread  # noqa: E402
from edgecompress.data.calib import calib_batches  # noqa: E402
from edgecompress.eval.predict import onnx_predict, openvino_predict, torch_predict  # noqa: E402
from edgecompress.export import export_onnx  # noqa: E402
from edgecompress.models import resolve_model  # noqa: E402
from edgecompress.profile.cpu import int8_dot_products_saturate  # noqa: E402
from edgecompress.quant.api import calibrated_model  # noqa: E402
from edgecompress.tasks import get_task  # noqa: E402

YOLO_RUN = BENCH / "runs/yolo320"
VARIANTS = [(layout, bits) for layout in ("onnxruntime", "openvino", "tensorrt") for bits in (8, 7)]
PEERS = {"quantize_static, all nodes": (False, False), "quantize_static, head and decoding float": (False, True),
         "quantize_static, head and decoding float, reduce_range": (True, True)}


def cpu_line() -> str:
    name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?")
    return (f"{name}, {os.cpu_count()} cores; int8 dot products saturate: {int8_dot_products_saturate()}; torch {torch.__version__}, "
            f"onnxruntime {ort.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")


class _Images(CalibrationDataReader):
    def __init__(self, batches: list[torch.Tensor]):
        self._batches = iter(batches)

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {"images": batch.numpy()}


def head_and_decoding(path: Path) -> list[str]:
    """The nodes ours keeps float, for the peer to exclude too: the prediction convs (convs no other conv reads from,
    directly or not) and every node after them (the box decoding and the output concat, which mixes pixel boxes with
    [0, 1] scores: quantized to one uint8 scale, the scores round to 0)."""
    graph = onnx.load(str(path)).graph
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def downstream(node) -> list:
        seen, stack, found = set(), [node], []
        while stack:
            for output in stack.pop().output:
                for reader in readers.get(output, []):
                    if id(reader) not in seen:
                        seen.add(id(reader))
                        found.append(reader)
                        stack.append(reader)
        return found

    heads = [node for node in graph.node if node.op_type == "Conv" and not any(n.op_type == "Conv" for n in downstream(node))]
    tail = {node.name for head in heads for node in [head, *downstream(head)]}
    return [node.name for node in graph.node if node.name in tail]


def _scores(task, predict, model, val) -> dict[str, float]:
    return {name: round(float(value), 4) for name, value in task.evaluate(predict, model, val).items()}


def measure_accuracy(args: argparse.Namespace, results: dict) -> dict[str, Path]:
    """Every variant's scores into ``results`` (cached rows are kept); the ONNX files by label."""
    task = get_task("detect")
    data = task.load(args.data, args.image_size, args.batch_size)
    model = resolve_model(str(args.model), num_classes=data.num_classes, weights=str(args.weights) if args.weights else None,
                          trust=args.trust_model).eval()
    images = load_images(spread(image_paths(data.train.dataset), args.calib_images), args.image_size)
    example, folder = images[:1], args.out
    rows, paths = results.setdefault("rows", {}), {"float": folder / "float.onnx"}
    exported = task.export_module(model)
    if not paths["float"].exists():
        export_onnx(exported, example, paths["float"])
    if "float" not in rows:
        rows["float"] = {"torch": _scores(task, torch_predict(model), model, data.val),
                         "onnxruntime": _scores(task, onnx_predict(paths["float"]), model, data.val),
                         "openvino": _scores(task, openvino_predict(paths["float"]), model, data.val)}
        _save(results, args)
    for layout, bits in VARIANTS:
        label = f"ours, {layout} layout, {bits}-bit weights"
        paths[label] = folder / f"{layout}-{bits}.onnx"
        if label in rows and paths[label].exists():
            continue
        print(f"[{label}]", flush=True)
        quantized = calibrated_model(model, calib_batches(images, args.batch_size), method="mse", backend=layout, example_input=example,
                                     weight_bits=bits)
        export_onnx(task.export_module(quantized), example, paths[label], int8=True)
        rows[label] = {"fake-quant": _scores(task, torch_predict(quantized), quantized, data.val),
                       "onnxruntime": _scores(task, onnx_predict(paths[label]), quantized, data.val),
                       "openvino": _scores(task, openvino_predict(paths[label]), quantized, data.val)}
        _save(results, args)
    for label, (reduce_range, head_float) in PEERS.items():
        paths[label] = folder / f"peer-{int(reduce_range)}{int(head_float)}.onnx"
        if label in rows and paths[label].exists():
            continue
        print(f"[{label}]", flush=True)
        quantize_static(str(paths["float"]), str(paths[label]), _Images(list(images.split(args.batch_size))), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=head_and_decoding(paths["float"]) if head_float else [])
        rows[label] = {"onnxruntime": _scores(task, onnx_predict(paths[label]), model, data.val),
                       "openvino": _scores(task, openvino_predict(paths[label]), model, data.val)}
        _save(results, args)
    return paths


def measure_latency(paths: dict[str, Path], args: argparse.Namespace, results: dict) -> None:
    """Batch-1 median ms of every ONNX in both runtimes, over ``--rounds`` interleaved rounds of ``--runs`` runs."""
    import openvino as ov

    image = np.random.default_rng(0).random((1, 3, args.image_size, args.image_size), dtype=np.float32)
    runs = {}
    for label, path in paths.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        runs[("onnxruntime", label)] = lambda s=session: s.run(None, {"images": image})
        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": args.threads, "INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        runs[("openvino", label)] = lambda r=request: r.infer({0: image})
    samples = {key: [] for key in runs}
    for _ in range(args.rounds):
        for key, run in runs.items():
            run()
            for _ in range(args.runs):
                started = time.perf_counter()
                run()
                samples[key].append((time.perf_counter() - started) * 1e3)
    results["latency"] = {f"{runtime} | {label}": statistics.median(values) for (runtime, label), values in samples.items()}
    results["latency_settings"] = {"threads": args.threads, "rounds": args.rounds, "runs": args.runs, "cpu": cpu_line()}
    _save(results, args)


def _save(results: dict, args: argparse.Namespace) -> None:
    (args.out / "results.json").write_text(json.dumps(results, indent=1))


def tables(results: dict) -> str:
    rows, latency = results["rows"], results.get("latency", {})
    lines = [f"CPU: {results['cpu']}", "", "| model | torch (fake-quant) mAP50 / mAP50-95 | onnxruntime | OpenVINO | onnxruntime - torch (mAP50) "
             "| OpenVINO - torch (mAP50) | onnxruntime ms | OpenVINO ms |", "|---|---|---|---|---|---|---|---|"]
    for label, row in rows.items():
        reference = row.get("fake-quant", row.get("torch"))
        cells = [f"{s['map50']:.4f} / {s['map50_95']:.4f}" if s else "-" for s in (reference, row["onnxruntime"], row["openvino"])]
        gaps = [f"{row[rt]['map50'] - reference['map50']:+.4f}" if reference else "-" for rt in ("onnxruntime", "openvino")]
        times = [f"{latency[f'{rt} | {label}']:.2f}" if f"{rt} | {label}" in latency else "-" for rt in ("onnxruntime", "openvino")]
        lines.append(f"| {label} | {' | '.join(cells)} | {' | '.join(gaps)} | {' | '.join(times)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=YOLO_RUN / "ultralytics/train/weights/best.pt", help="zoo name or model file")
    parser.add_argument("--weights", type=Path, default=YOLO_RUN / "ultralytics/train/bench-state-dict.pt")
    parser.add_argument("--trust-model", action=argparse.BooleanOptionalAction, default=True,
                        help="load a pickled model file (yolo_bench's own Ultralytics checkpoint by default)")
    parser.add_argument("--data", type=Path, default=YOLO_RUN / "data/digits-1000-200-320/data.yaml")
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--calib-images", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of the latency table")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=BENCH / "runs/int8-runtime")
    args = parser.parse_args()
    for path in (args.model, args.data):
        if path.suffix and not path.exists():
            raise SystemExit(f"{path} does not exist; run bench/yolo_bench.py first, or pass --model/--weights/--data")
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results["cpu"] = cpu_line()
    paths = measure_accuracy(args, results)
    measure_latency(paths, args, results)
    print(tables(results))


if __name__ == "__main__":
    main()
