"""Run the full default build for one or more targets and print the side-by-side table of each report.

    python bench/pipeline_bench.py --target jetson-orin-nano --target jetson-nano

All targets share one run folder (--name), so the model is trained, sparsified, pruned and
fine-tuned once and each target reruns only what depends on it (qat, export, engine, report).
Every figure comes from the run's report.json (onnxruntime CPU latency, median and p90 over
--profile-runs timed runs after warm-up); copy the printed tables into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import onnxruntime
import torch

import edgecompress as ec


def _table(report: dict, metric: str) -> str:
    base = report["models"][0]
    lines = [
        f"| model | {metric} torch | {metric} onnxruntime | mAP@0.5:0.95 torch | params | MACs | ONNX MB | median ms | p90 ms | speed-up | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["models"]:
        lines.append(
            f"| {row['model']} | {row['metrics_torch'].get(metric, float('nan')):.4f} | {row['metrics_onnx'].get(metric, float('nan')):.4f} "
            f"| {row['metrics_torch'].get('map50_95', float('nan')):.4f} | {row['params']:,} | {row['macs'] / 1e6:.1f} M "
            f"| {row['file_size_bytes'] / 1e6:.2f} | {row['latency_median_ms']:.3f} | {row['latency_p90_ms']:.3f} "
            f"| {base['latency_median_ms'] / row['latency_median_ms']:.2f}x | {row['peak_memory_mb']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", default=None, help="repeatable; default jetson-orin-nano")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--name", default="bench")
    parser.add_argument("--profile-runs", type=int, default=200)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")
    for target in args.target or ["jetson-orin-nano"]:
        started = time.time()
        run_dir = ec.build(target=target, runs_dir=args.runs_dir, name=args.name, profile_runs=args.profile_runs)
        report = json.loads((run_dir / "report.json").read_text())
        print(f"\n### {target} (build wall time {time.time() - started:.0f} s, stage total {report['total_wall_s']:.0f} s)\n")
        print(_table(report, "map50"))


if __name__ == "__main__":
    main()
