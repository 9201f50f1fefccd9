"""YOLOv8n trained by Ultralytics, then through ``edgecompress build`` at two MACs targets (issue 11).

What it measures, in one table per target board: an Ultralytics YOLOv8n trained by Ultralytics (``yolo
detect train``, from its yaml, no download) on the bundled digits detection set, then compressed by the
``edgecompress build`` command users run (each stage a subprocess of the CLI), once per ``--target-macs``:
mAP50 and mAP50-95 in PyTorch and onnxruntime for the baseline, the pruned and fine-tuned model, PTQ (after
calibration) and QAT; params, MACs, ONNX bytes and batch-1 latency in onnxruntime and OpenVINO, side by side.
Every figure comes from the builds' ``report.json``; Ultralytics' own ``YOLO(best.pt).val()`` on the same
val set is printed beside edgecompress's mAP of the unpruned model, as an agreement check.

``--peer`` runs the same chain with Torch-Pruning's YOLOv8 recipe as the pruner: every C2f is replaced by an
equivalent block whose first conv is two convs (one per half) instead of a ``chunk``, the Detect head is
ignored, and TP's MagnitudePruner (L2 magnitude) steps until the MACs target is met; then the same
``edgecompress build`` fine-tunes (for the sparse plus fine-tune epochs of ours, as TP's recipe has no
sparse training), quantizes, exports and times it, pruning nothing more (``--prune-ratio 0``).

The environment (Ultralytics is AGPL-3.0: installed here to train and validate, never vendored or copied)::

    bash bench/setup_ultralytics_env.sh   # bench/.venv-ultralytics: torch, ultralytics, edgecompress, OpenVINO, Torch-Pruning (--peer)

Run (resumable: a finished Ultralytics training and the builds' finished stages are reused)::

    bench/.venv-ultralytics/bin/python bench/yolo_bench.py                       # 320 px, both MACs targets
    bench/.venv-ultralytics/bin/python bench/yolo_bench.py --peer                # and the Torch-Pruning peer
    bench/.venv-ultralytics/bin/python bench/yolo_bench.py --image-size 64 --epochs 1 --train-images 64 \
        --val-images 16 --quick --out bench/runs/yolo-smoke                      # smoke run: every part once

``--control`` runs the unpruned model through the same build with the same training (``--prune-ratio 0``, no
sparse training, the sparse plus fine-tune epochs as fine-tuning), so the pruned rows can be read against an
unpruned model trained as long, not only against the Ultralytics model the chain started from.

Note: ``--target-macs`` is the build's option, the fraction of MACs *removed* (0.3 = 30% fewer MACs).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BIN = Path(sys.executable).parent
ROWS = (("baseline", "baseline"), ("pruned", "pruned (fine-tuned)"), ("ptq", "PTQ int8"), ("int8", "QAT int8"), ("fp16", "fp16 ONNX"))


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere), and the core count."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


class StepFailed(Exception):
    """A subprocess exited non-zero; the message is its last output line (the CLI's one-line error) and the log's path."""


def run_logged(command: list[str], log: Path, env: dict[str, str] | None = None, append: bool = False) -> float:
    """Run ``command`` (its output to ``log``, appended when ``append``, and to the console); its wall seconds, or
    StepFailed on a non-zero exit."""
    print("$ " + " ".join(str(part) for part in command), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "a" if append else "w") as out:
        process = subprocess.Popen([str(part) for part in command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, **(env or {})}, cwd=ROOT)
        for line in process.stdout:
            out.write(line)
            sys.stdout.write(line)
        code = process.wait()
    if code:
        tail = [line for line in log.read_text().splitlines() if line.strip()][-1:] or ["(no output)"]
        raise StepFailed(f"exit {code} after {time.perf_counter() - started:.0f} s: {tail[0]} (log: {log})")
    return time.perf_counter() - started


class Timings:
    """Wall seconds of each step, kept in a JSON file so a resumed run still reports the steps it reused."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}

    def record(self, key: str, seconds: float) -> None:
        self.data[key] = round(seconds, 1)
        self.path.write_text(json.dumps(self.data, indent=1))


# ---------------------------------------------------------------------------------------------- Ultralytics: data, train, val


def make_data(args: argparse.Namespace) -> Path:
    from edgecompress.data.digits import make_digits_detection

    root = args.out / "data" / f"digits-{args.train_images}-{args.val_images}-{args.image_size}"
    return make_digits_detection(root, n_train=args.train_images, n_val=args.val_images, image_size=args.image_size, seed=0)


def train_ultralytics(args: argparse.Namespace, data: Path, timings: Timings) -> Path:
    """``yolo detect train`` of yolov8n.yaml from scratch; a finished training with the same settings is reused and an
    interrupted one with the same settings resumes from its ``last.pt`` (Ultralytics' own resume), so a run that spans
    several sessions loses at most one epoch."""
    project = args.out / "ultralytics"
    folder = project / "train"
    settings = {"model": "yolov8n.yaml", "data": str(data), "epochs": args.epochs, "imgsz": args.image_size, "batch": args.batch_size}
    marker, started = folder / "bench-finished.json", folder / "bench-settings.json"
    if marker.is_file() and json.loads(marker.read_text()) == settings and (folder / "weights" / "best.pt").is_file():
        print(f"reusing the Ultralytics training in {folder}")
        return folder / "weights" / "best.pt"
    last = folder / "weights" / "last.pt"
    if started.is_file() and json.loads(started.read_text()) == settings and last.is_file():
        print(f"resuming the Ultralytics training from {last}")
        command = [BIN / "yolo", "detect", "train", "resume", f"model={last.resolve()}"]
    else:
        if folder.exists():
            shutil.rmtree(folder)  # other settings, or stopped before its first epoch: start again
        folder.mkdir(parents=True)
        started.write_text(json.dumps(settings))
        command = [BIN / "yolo", "detect", "train", f"model={settings['model']}", f"data={data}", f"epochs={args.epochs}",
                   f"imgsz={args.image_size}", f"batch={args.batch_size}", "device=cpu", "workers=0", "plots=False", "amp=False",
                   "pretrained=False", "seed=0", "deterministic=True", f"project={project.resolve()}", "name=train", "exist_ok=True"]
    seconds = run_logged(command, args.out / "logs" / "ultralytics-train.log", _ultralytics_env(args), append="resume" in command)
    timings.record("ultralytics_train_s", timings.data.get("ultralytics_train_s", 0.0) + seconds)
    marker.write_text(json.dumps(settings))
    return folder / "weights" / "best.pt"


def _ultralytics_env(args: argparse.Namespace) -> dict[str, str]:
    """Ultralytics' settings file inside --out (not the user's home), and no telemetry."""
    return {"YOLO_CONFIG_DIR": str((args.out / "ultralytics-config").resolve()), "YOLO_OFFLINE": "1"}


VAL_SCRIPT = """
import json, sys
from ultralytics import YOLO
weights, data, size, batch = sys.argv[1:5]
metrics = YOLO(weights).val(data=data, imgsz=int(size), batch=int(batch), device="cpu", workers=0, plots=False, split="val")
print("BENCH-RESULT " + json.dumps({"map50": float(metrics.box.map50), "map50_95": float(metrics.box.map)}))
"""


def validate_ultralytics(args: argparse.Namespace, weights: Path, data: Path, timings: Timings) -> dict[str, float]:
    """``YOLO(best.pt).val()`` on the same val set (Ultralytics' own mAP), cached beside the training."""
    cache = weights.parent.parent / "bench-val.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    log = args.out / "logs" / "ultralytics-val.log"
    timings.record("ultralytics_val_s", run_logged([sys.executable, "-c", VAL_SCRIPT, weights, data, args.image_size, args.batch_size],
                                                   log, _ultralytics_env(args)))
    line = next(line for line in log.read_text().splitlines() if line.startswith("BENCH-RESULT "))
    result = json.loads(line.split(" ", 1)[1])
    cache.write_text(json.dumps(result))
    return result


# ---------------------------------------------------------------------------------------------- edgecompress builds


def evaluate_checkpoint(args: argparse.Namespace, checkpoint: Path, data: Path) -> dict[str, float]:
    """edgecompress's mAP of the unpruned checkpoint in PyTorch: what the build's baseline stage measures with --weights."""
    from edgecompress.eval.predict import torch_predict
    from edgecompress.models import resolve_model
    from edgecompress.tasks import get_task

    task = get_task("detect")
    model = resolve_model(str(checkpoint), trust=True).eval()
    return task.evaluate(torch_predict(model), model, task.load(data, args.image_size, args.batch_size).val)


def build_command(args: argparse.Namespace, model: Path, weights: Path, data: Path, name: str, extra: list[str]) -> list:
    command = [BIN / "edgecompress", "build", "--model", model, "--trust-model", "--weights", weights, "--data", data,
               "--image-size", args.image_size, "--batch-size", args.batch_size, "--target", args.target,
               "--runs-dir", args.out / "runs", "--name", name, "--profile-runtime", "onnxruntime", "--profile-runtime", "openvino"]
    if args.quick:
        command.append("--quick")
    for option in ("sparse_epochs", "finetune_epochs", "qat_epochs", "profile_runs", "profile_rounds"):
        if getattr(args, option) is not None:
            command += [f"--{option.replace('_', '-')}", getattr(args, option)]
    return command + extra


def build_weights(checkpoint: Path) -> Path:
    """``--weights`` of the builds: the trained model's state dict, so the baseline stage loads it instead of training it again."""
    from edgecompress.models import resolve_model

    weights = checkpoint.parent.parent / "bench-state-dict.pt"
    if not weights.is_file() or weights.stat().st_mtime < checkpoint.stat().st_mtime:
        torch.save(resolve_model(str(checkpoint), trust=True).state_dict(), weights)
    return weights


def run_build(args: argparse.Namespace, name: str, command: list, timings: Timings, seed_from: str | None = None) -> dict:
    """One ``edgecompress build``; a new run folder starts as a copy of ``seed_from``'s (its baseline and sparse stages are reused)."""
    folder = args.out / "runs" / name
    if seed_from and not folder.exists() and (args.out / "runs" / seed_from).is_dir():
        shutil.copytree(args.out / "runs" / seed_from, folder)
    timings.record(f"build {name}_s", run_logged(command, args.out / "logs" / f"{name}.log"))
    return json.loads((folder / "report.json").read_text())


def rows_of(report: dict) -> dict[str, dict]:
    """The table's rows from one build's report.json: baseline, pruned, PTQ (scores after calibration, PyTorch only) and QAT."""
    models = {row["model"]: row for row in report["models"]}
    rows = {}
    for label in ("baseline", "pruned", "int8", "fp16"):
        row = models.get(label)
        if row is None:
            continue
        timing = row.get("latency_by_runtime", {})
        rows[label] = {
            "map50_torch": row["metrics_torch"].get("map50"), "map50_onnx": row["metrics_onnx"].get("map50"),
            "map50_95_torch": row["metrics_torch"].get("map50_95"), "map50_95_onnx": row["metrics_onnx"].get("map50_95"),
            "params": row["params"], "macs": row["macs"], "onnx_bytes": row["file_size_bytes"],
            "onnxruntime_ms": timing.get("onnxruntime", {}).get("median_ms"), "openvino_ms": timing.get("openvino", {}).get("median_ms"),
            "onnx_max_abs_error": row.get("onnx_max_abs_error"),
        }
    qat = report["stages"].get("qat", {}).get("metrics", {})
    if qat.get("ptq") and "pruned" in rows:
        rows["ptq"] = {**{key: None for key in rows["pruned"]}, "map50_torch": qat["ptq"].get("map50"), "map50_95_torch": qat["ptq"].get("map50_95"),
                       "params": rows["pruned"]["params"], "macs": rows["pruned"]["macs"]}
    prune = report["stages"].get("prune", {}).get("metrics", {})
    rows["_stages"] = {name: stage["wall_s"] for name, stage in report["stages"].items()}
    rows["_plan"] = prune.get("plan", {})
    return {label: rows[label] for label in ("baseline", "pruned", "ptq", "int8", "fp16", "_stages", "_plan") if label in rows}


def rows_of_finished_stages(folder: Path) -> dict[str, dict]:
    """For a build that stopped: baseline and pruned rows (PyTorch scores, params, MACs) from the stages that finished."""
    rows = {}
    for label, stage in (("baseline", "baseline"), ("pruned", "finetune")):
        manifest = folder / stage / "manifest.json"
        if manifest.is_file():
            metrics = json.loads(manifest.read_text()).get("metrics", {})
            rows[label] = {"map50_torch": metrics.get("map50"), "map50_onnx": None, "map50_95_torch": metrics.get("map50_95"),
                           "map50_95_onnx": None, "params": metrics.get("params", 0), "macs": metrics.get("macs", 0), "onnx_bytes": None,
                           "onnxruntime_ms": None, "openvino_ms": None, "onnx_max_abs_error": None}
    return rows


# ---------------------------------------------------------------------------------------------- the peer: Torch-Pruning's YOLOv8 recipe


class C2fSplit(nn.Module):
    """A C2f whose first conv is two convs, one per half of its output, instead of one conv and ``chunk(2, 1)``.

    Same weights, same outputs; the two halves are then separate layers a dependency-graph pruner can cut
    independently (Torch-Pruning's YOLOv8 recipe does this rewrite before pruning). Ultralytics' routing
    attributes (``f``, ``i``, ``np``) are kept, so the model's own layer loop still runs it.
    """

    def __init__(self, block: nn.Module):
        super().__init__()
        half = block.c
        self.first = _conv_unit_rows(block.cv1, slice(0, half))
        self.second = _conv_unit_rows(block.cv1, slice(half, 2 * half))
        self.m = block.m
        self.cv2 = block.cv2
        for attribute in ("f", "i", "np"):
            if hasattr(block, attribute):
                setattr(self, attribute, getattr(block, attribute))

    def forward(self, x: Tensor) -> Tensor:
        outputs = [self.first(x), self.second(x)]
        for bottleneck in self.m:
            outputs.append(bottleneck(outputs[-1]))
        return self.cv2(torch.cat(outputs, 1))


def _conv_unit_rows(unit: nn.Module, rows: slice) -> nn.Module:
    """A copy of a conv + BN + activation unit that keeps only output channels ``rows``."""
    part = copy.deepcopy(unit)
    conv, bn = part.conv, part.bn
    conv.weight = nn.Parameter(conv.weight.detach()[rows].clone())
    if conv.bias is not None:
        conv.bias = nn.Parameter(conv.bias.detach()[rows].clone())
    conv.out_channels = conv.weight.shape[0]
    bn.weight = nn.Parameter(bn.weight.detach()[rows].clone())
    bn.bias = nn.Parameter(bn.bias.detach()[rows].clone())
    bn.running_mean = bn.running_mean[rows].clone()
    bn.running_var = bn.running_var[rows].clone()
    bn.num_features = conv.out_channels
    return part


def peer_prune(args: argparse.Namespace, checkpoint: Path, macs_removed: float, path: Path) -> dict:
    """Prune the trained model with Torch-Pruning (C2f rewritten, Detect ignored, L2 magnitude, steps until the MACs target); save it."""
    import torch_pruning as tp

    from edgecompress import save_model
    from edgecompress.models import resolve_model
    from edgecompress.stats import model_stats

    split_block = _importable_c2f_split()
    detector = resolve_model(str(checkpoint), trust=True).eval()
    example = torch.randn(1, 3, args.image_size, args.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = detector(example)
    layers = detector.model.model
    for index, layer in enumerate(layers):
        if type(layer).__name__ == "C2f":  # YOLOv8's block only (YOLO11's C3k2 subclasses it and is not rewritten)
            layers[index] = split_block(layer)
    with torch.no_grad():
        after = detector(example)
    rewrite_error = max(float((a - b).abs().max()) for a, b in zip(after, before))
    if rewrite_error > 1e-3:
        raise RuntimeError(f"the C2f rewrite changed the outputs (max abs difference {rewrite_error:.2e}); the peer cannot run on this model")

    stats = model_stats(detector, example)
    target = stats.macs * (1 - macs_removed)
    pruner = tp.pruner.MagnitudePruner(detector, example, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=1.0,
                                       iterative_steps=100, ignored_layers=[detector.head], round_to=args.round_to)
    started = time.perf_counter()
    while pruner.current_step < pruner.iterative_steps and model_stats(detector, example).macs > target:
        pruner.step()
    seconds = time.perf_counter() - started
    pruned = model_stats(detector, example)
    with torch.no_grad():
        shapes_ok = [tuple(o.shape) for o in detector(example)] == [tuple(o.shape) for o in before]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(detector, path)
    info = {"steps": pruner.current_step, "prune_s": round(seconds, 2), "rewrite_max_abs_error": rewrite_error,
            "params": pruned.params, "macs": pruned.macs, "macs_before": stats.macs, "outputs_keep_shape": shapes_ok}
    path.with_suffix(".json").write_text(json.dumps(info, indent=1))
    return info


def _importable_c2f_split() -> type:
    """C2fSplit as ``yolo_bench.C2fSplit`` (not ``__main__``), so the build subprocess can load the saved model (PYTHONPATH=bench)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    import yolo_bench

    return yolo_bench.C2fSplit


# ---------------------------------------------------------------------------------------------- table


def _f(value, spec=".4f") -> str:
    return "-" if value is None else format(value, spec)


def table(results: dict, args: argparse.Namespace) -> str:
    lines = [f"CPU: {results['cpu']}; torch {results['versions']['torch']}, onnxruntime {results['versions']['onnxruntime']}, "
             f"OpenVINO {results['versions']['openvino']}, ultralytics {results['versions']['ultralytics']}; target {args.target}; "
             f"{args.image_size} px, {args.train_images} train / {args.val_images} val images; batch-1 latency, medians of each build's "
             "interleaved rounds; speed-ups against the baseline timed in the same build", ""]
    lines += ["| pruner, MACs removed | model | mAP50 torch | mAP50 ORT | mAP50-95 torch | mAP50-95 ORT | params | MACs (share of baseline) | ONNX bytes "
              "| onnxruntime ms | speed-up | OpenVINO ms | speed-up |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, build in results["builds"].items():
        first = True
        if "error" in build:
            lines.append(f"| {key} | failed: {build['error']} |" + " |" * 11)
            first = False
        base = build.get("rows", {}).get("baseline", {})
        for label, title in ROWS:
            row = build.get("rows", {}).get(label)
            if row is None:
                continue
            speed = {rt: f"{base[f'{rt}_ms'] / row[f'{rt}_ms']:.2f}x" if row.get(f"{rt}_ms") and base.get(f"{rt}_ms") else "-"
                     for rt in ("onnxruntime", "openvino")}
            macs_before = base.get("macs") or build.get("tp", {}).get("macs_before")
            share = f" ({row['macs'] / macs_before:.0%})" if macs_before else ""
            lines.append(f"| {key if first else ''} | {title} | {_f(row['map50_torch'])} | {_f(row['map50_onnx'])} | {_f(row['map50_95_torch'])} "
                         f"| {_f(row['map50_95_onnx'])} | {row['params']:,} | {row['macs'] / 1e6:.1f} M{share} | {_f(row['onnx_bytes'], ',')} "
                         f"| {_f(row['onnxruntime_ms'], '.2f')} | {speed['onnxruntime']} | {_f(row['openvino_ms'], '.2f')} | {speed['openvino']} |")
            first = False
    ultra = results["ultralytics_val"]
    ours = results.get("edgecompress_baseline", {})
    lines += ["", f"Unpruned model, same val set: Ultralytics `YOLO(best.pt).val()` mAP50 {ultra['map50']:.4f}, mAP50-95 {ultra['map50_95']:.4f}; "
                  f"edgecompress's baseline stage (torch) mAP50 {_f(ours.get('map50'))}, mAP50-95 {_f(ours.get('map50_95'))}."]
    if results.get("peer_note"):
        lines += ["", results["peer_note"]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=50, help="Ultralytics training epochs")
    parser.add_argument("--batch-size", type=int, default=16, help="Ultralytics training batch and the builds' --batch-size")
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--val-images", type=int, default=400)
    parser.add_argument("--target-macs", type=float, nargs="+", default=[0.3, 0.5],
                        help="fractions of MACs removed, as the build's --target-macs (0.3 = 30%% fewer MACs)")
    parser.add_argument("--target", default="jetson-orin-nano")
    parser.add_argument("--out", type=Path, default=Path("bench/runs/yolo"))
    parser.add_argument("--peer", action="store_true", help="also Torch-Pruning's YOLOv8 recipe through the same build")
    parser.add_argument("--control", action="store_true",
                        help="also the unpruned model through the same build with the same training (--prune-ratio 0)")
    parser.add_argument("--round-to", type=int, default=8, help="the peer's channel rounding (the build's --round-to default)")
    parser.add_argument("--agreement-only", action="store_true",
                        help="train and validate with Ultralytics, evaluate the same checkpoint with edgecompress, and stop (no builds)")
    parser.add_argument("--quick", action="store_true", help="pass --quick to the builds (smoke runs: one epoch per stage, tiny data)")
    for option in ("sparse-epochs", "finetune-epochs", "qat-epochs", "profile-runs", "profile-rounds"):
        parser.add_argument(f"--{option}", type=int, default=None, help="passed to the builds (default: the build's)")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    if any(not 0 < m < 1 for m in args.target_macs):
        parser.error("--target-macs takes fractions of MACs removed in (0, 1), e.g. 0.3 0.5")

    import onnxruntime
    import ultralytics

    try:
        import openvino
        openvino_version = openvino.__version__
    except ImportError:
        raise SystemExit("OpenVINO is not installed in this environment: bench/.venv-ultralytics/bin/pip install openvino==2026.4.1")
    timings = Timings(args.out / "timings.json")
    results: dict = {"cpu": cpu_model(), "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                     "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "openvino": openvino_version,
                                  "ultralytics": ultralytics.__version__, "python": platform.python_version()}, "builds": {}}

    started = time.perf_counter()
    data = make_data(args)
    timings.record("data_s", time.perf_counter() - started)
    checkpoint = train_ultralytics(args, data, timings)
    results["ultralytics_val"] = validate_ultralytics(args, checkpoint, data, timings)
    if args.agreement_only:
        ours = evaluate_checkpoint(args, checkpoint, data)
        print(f"mAP50 / mAP50-95 of {checkpoint} on the same val set: Ultralytics {results['ultralytics_val']['map50']:.4f} / "
              f"{results['ultralytics_val']['map50_95']:.4f}, edgecompress {ours['map50']:.4f} / {ours['map50_95']:.4f}")
        return
    model, weights = checkpoint, build_weights(checkpoint)

    first = None
    for macs in args.target_macs:
        name = f"yolov8n-{args.target}-macs{round(macs * 100)}"
        try:
            report = run_build(args, name, build_command(args, model, weights, data, name, ["--target-macs", macs]), timings, seed_from=first)
            results["builds"][f"edgecompress, {macs:.0%}"] = {"run": name, "rows": rows_of(report)}
        except StepFailed as error:
            results["builds"][f"edgecompress, {macs:.0%}"] = {"run": name, "error": str(error),
                                                               "rows": rows_of_finished_stages(args.out / "runs" / name)}
        first = first or name
    baseline_manifest = args.out / "runs" / first / "baseline" / "manifest.json"
    if baseline_manifest.is_file():  # there even when a later stage of the build failed
        metrics = json.loads(baseline_manifest.read_text()).get("metrics", {})
        results["edgecompress_baseline"] = {key: metrics.get(key) for key in ("map50", "map50_95", "params", "macs")}

    if args.control:
        name = f"yolov8n-{args.target}-unpruned"
        command = _replace_option(_equal_training(args, build_command(args, model, weights, data, name, ["--prune-ratio", 0])), "--round-to", 1)
        try:
            results["builds"]["unpruned, same training"] = {"run": name, "rows": rows_of(run_build(args, name, command, timings))}
        except StepFailed as error:
            results["builds"]["unpruned, same training"] = {"run": name, "error": str(error),
                                                             "rows": rows_of_finished_stages(args.out / "runs" / name)}

    if args.peer:
        try:
            import torch_pruning
        except ImportError:
            raise SystemExit("--peer needs Torch-Pruning: bench/.venv-ultralytics/bin/pip install --no-deps torch-pruning==1.6.1")
        results["versions"]["torch_pruning"] = torch_pruning.__version__
        for macs in args.target_macs:
            name = f"yolov8n-{args.target}-tp-macs{round(macs * 100)}"
            peer_model = args.out / "peer" / f"tp-macs{round(macs * 100)}.pt"
            key = f"Torch-Pruning, {macs:.0%}"
            if not peer_model.is_file():
                started = time.perf_counter()
                try:
                    peer_prune(args, checkpoint, macs, peer_model)
                except Exception as error:  # the peer's own failure is a result, not the bench's
                    results["builds"][key] = {"run": name, "error": f"Torch-Pruning failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"}
                    continue
                timings.record(f"peer prune {name}_s", time.perf_counter() - started)
            info = json.loads(peer_model.with_suffix(".json").read_text())
            command = _equal_training(args, build_command(args, peer_model, peer_model, data, name, ["--prune-ratio", 0, "--round-to", 1]))
            try:
                timings.record(f"build {name}_s", run_logged(command, args.out / "logs" / f"{name}.log", {"PYTHONPATH": str(BENCH)}))
            except StepFailed as error:
                results["builds"][key] = {"run": name, "error": str(error), "tp": info}
                continue
            rows = rows_of(json.loads((args.out / "runs" / name / "report.json").read_text()))
            ours = results["builds"].get(f"edgecompress, {macs:.0%}", {}).get("rows", {})
            rows.pop("baseline", None)  # the peer build's "baseline" is TP's pruned model before fine-tuning, not the trained model
            if "baseline" in ours:
                rows = {"baseline": ours["baseline"], **rows}
            results["builds"][key] = {"run": name, "rows": rows, "tp": info}
        results["peer_note"] = ("Torch-Pruning rows: its YOLOv8 recipe (C2f rewritten without chunk, Detect head ignored, MagnitudePruner "
                                "with L2 magnitude, stepped until the MACs target), then the same build with --prune-ratio 0, "
                                "--sparse-epochs 0 and the sparse plus fine-tune epochs as fine-tuning; its baseline row is ours.")
    results["timings_s"] = timings.data
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print("\n" + table(results, args))
    print(f"\nall figures: {args.out / 'results.json'}; step times: {args.out / 'timings.json'}")


def _equal_training(args: argparse.Namespace, command: list) -> list:
    """``command`` without sparse training and with our sparse plus fine-tune epochs as fine-tuning: the same training as ours."""
    sparse = args.sparse_epochs if args.sparse_epochs is not None else (1 if args.quick else 8)
    finetune = args.finetune_epochs if args.finetune_epochs is not None else (1 if args.quick else 8)
    return _replace_option(_replace_option(command, "--finetune-epochs", sparse + finetune), "--sparse-epochs", 0)


def _replace_option(command: list, option: str, value) -> list:
    """``command`` with ``option``'s value set to ``value`` (added when absent)."""
    command = list(command)
    if option in command:
        command[command.index(option) + 1] = value
        while command.count(option) > 1:
            index = len(command) - 1 - command[::-1].index(option)
            del command[index:index + 2]
        return command
    return command + [option, value]


if __name__ == "__main__":
    try:
        main()
    except StepFailed as failure:
        raise SystemExit(f"failed: {failure}") from None
