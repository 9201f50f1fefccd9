"""Issue 15's evidence: what pruning and int8 buy in onnxruntime and OpenVINO, and latency-targeted vs MACs-targeted pruning.

    python bench/latency_bench.py                 # both tables, on a quiet machine (an hour or more: Table 2 trains)
    python bench/latency_bench.py --tables 1      # Table 1 only (minutes)
    OMP_NUM_THREADS=1 nice python bench/latency_bench.py --quick   # smoke run: tiny images, few runs, one epoch

Table 1, speed per variant: the zoo's ``yolov8n`` layout at 640 px (80 classes, random weights with BatchNorm
statistics of the bundled calibration images: latency does not depend on the weights' values) and ``yolo-mbv2`` at
its default size (128 px, 10 classes, random weights alike), each as dense fp32; pruned fp32 (``ec.prune``,
``--prune-ratio`` of the channels by L1 norm, rounded to 8); pruned int8, ours (``quantize_model`` in the ``cpu``
target's Q/DQ layout and weight bits, ``calibrate`` with mse, ``export_onnx(int8=True)``); and the peer,
onnxruntime's ``quantize_static`` of the same pruned fp32 ONNX (QDQ, per-channel QInt8 weights, QUInt8
activations, MinMax on the same images; it quantizes every conv, where ours keeps the prediction convs float as
``build`` does; "ours, every conv" quantizes them too, like the peer). Every file is timed in onnxruntime and
OpenVINO (CPU, f32 precision hint) at batch 1 and at a throughput batch; speed is the dense fp32 model's ms over
the variant's in the same runtime and batch, and "ours vs peer" the peer's ms over ours.

Table 2, latency-targeted vs MACs-targeted pruning of the bundled detector (``yolo-mbv2`` on the bundled digits set):
four ``python -m edgecompress build`` runs under ``--out``/table2, identical but for the pruning goal. At each budget
b of ``--budgets`` one keeps b of the dense MACs (``--target-macs 1-b``) and one b of the dense latency predicted
from per-layer tables measured in ``--latency-runtime`` (``--target-latency b``); the pairing is by the fraction
kept, not by measured latency. The defaults, 0.6 and 0.45 (0.9 and 0.8 in the smoke run), stay above the planner's
floor: with 8 channels left in every group the tables still predict ~41% of the dense latency at 128 px (~70% at 64
px) on the 2-core EPYC; a budget the planner cannot meet stops the benchmark before any training. The first run
trains the baseline and sparse stages; the others start from its sparse model (``--weights``, no further training
before pruning), so all four prune the same model (the table shows its mAP50 as each run saw it), and each fine-tunes
``--finetune-epochs`` alike. Columns: mAP50 after fine-tuning, measured batch-1 latency of the pruned fp32 ONNX in
both runtimes, and for latency-targeted runs the planner's predicted fraction of dense latency next to the measured
one. Below it, per budget and runtime, whether latency-aware pruning wins (faster and at least as accurate), loses,
or trades, and its mAP50 against the MACs-targeted runs' interpolated at its measured latency.

Timing: every variant of a table runs once per round (batch and runtime included) in a fresh worker process
(``edgecompress.profile.run_worker``), in turn, the order reversed every other round; a figure is the median of all
its runs. The CPU, runtimes and load average during the rounds are printed beside each table.
Results are cached in ``--out``/results.json: a rerun skips the files built, the builds finished and the rounds
timed, and prints the tables again. Latency tables of Table 2 are cached under ``--out``/layer-latency.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort
import openvino
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from torch import nn

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))  # this checkout's edgecompress, not an installed one

import edgecompress as ec  # noqa: E402
from edgecompress.data.calib import load_calibration_images  # noqa: E402
from edgecompress.models import ZOO, build_model  # noqa: E402
from edgecompress.outcomes import ExportOutcome, ModelOutcome, PruneOutcome, SparseOutcome  # noqa: E402
from edgecompress.prune import plan_pruning  # noqa: E402
from edgecompress.profile import measure_latency_tables, run_worker  # noqa: E402
from edgecompress.profile.machine import cpu_model  # noqa: E402
from edgecompress.quant import calibrate, quantize_model  # noqa: E402
from edgecompress.targets import get_target  # noqa: E402
from edgecompress.tasks import get_task  # noqa: E402

RUNTIMES = ("onnxruntime", "openvino")
TABLE1_MODELS = {"yolov8n": 80, "yolo-mbv2": 10}  # zoo name -> classes (COCO's layout; the bundled digits)
DENSE, PRUNED, OURS, PEER = "dense fp32", "pruned fp32", "pruned int8, ours", "pruned int8, peer quantize_static"
OURS_EVERY_CONV = "pruned int8, ours, every conv"  # like the peer, the prediction convs quantized too: the like-for-like comparison
VARIANTS = (DENSE, PRUNED, OURS, OURS_EVERY_CONV, PEER)
DETECTOR = "yolo-mbv2"
BUILD_ROUND_TO, BUILD_MIN_CHANNELS = 8, 8  # build's defaults, which Table 2's runs keep
FULL = dict(rounds=5, runs=20, warmup=5, threads=0, throughput_batch=8, calib_images=32, image_size=None, budgets=(0.6, 0.45), epochs=20,
            sparse_epochs=8, finetune_epochs=8, out=BENCH / "runs/latency-bench")
QUICK = dict(rounds=2, runs=3, warmup=1, threads=1, throughput_batch=2, calib_images=4, image_size=64, budgets=(0.9, 0.8), epochs=1,
             sparse_epochs=1, finetune_epochs=1, out=BENCH / "runs/latency-bench-quick")


class Results:
    """The JSON cache under ``--out``: one section per table, saved after every part."""

    def __init__(self, folder: Path):
        self.path = folder / "results.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {}

    def section(self, name: str) -> dict:
        return self.data.setdefault(name, {})

    def save(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.data, indent=1))
        temporary.replace(self.path)


# ---- timing --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """One timed model: its ONNX, the runtime it runs in and its input shape."""

    path: str
    runtime: str
    shape: tuple[int, ...]


def time_interleaved(jobs: dict[str, Job], state: dict, args: argparse.Namespace, save: Callable[[], None], label: str) -> dict[str, float]:
    """Median ms of every job over ``args.rounds`` rounds; each round runs every job once, in turn, in a fresh worker process.

    ``state`` (a section of the cache) keeps the rounds done, so an interrupted timing resumes; other jobs or settings restart it."""
    settings = {"jobs": {key: [job.path, job.runtime, list(job.shape)] for key, job in jobs.items()},
                "runs": args.runs, "warmup": args.warmup, "threads": args.threads}
    if state.get("settings") != settings:
        state.clear()
        state.update(settings=settings, samples={key: [] for key in jobs}, loads=[], rounds_done=0, machine=machine_line(args.threads))
    for round_index in range(state["rounds_done"], args.rounds):
        order = list(jobs) if round_index % 2 == 0 else list(reversed(jobs))
        for key in order:
            job = jobs[key]
            measured = run_worker(job.path, job.shape, warmup=args.warmup, runs=args.runs, threads=args.threads or None, runtime=job.runtime)
            state["samples"][key] += measured["times_ms"]
        state["loads"].append(os.getloadavg()[0])
        state["rounds_done"] = round_index + 1
        save()
        print(f"  {label}: round {round_index + 1}/{args.rounds} timed (load average {state['loads'][-1]:.1f})", flush=True)
    return {key: statistics.median(times) for key, times in state["samples"].items()}


def machine_line(threads: int) -> str:
    return (f"{cpu_model()}, {os.cpu_count()} logical cores; onnxruntime {ort.__version__}, OpenVINO {openvino.__version__.split('-')[0]}; "
            f"{threads or 'the runtime default number of'} intra-op thread(s)")


def timing_note(state: dict) -> str:
    loads = state["loads"]
    return (f"CPU: {state['machine']}. Median of {len(loads)} interleaved rounds x {state['settings']['runs']} runs per variant; "
            f"load average (1 min) during the rounds {min(loads):.1f}-{max(loads):.1f}.")


# ---- Table 1: dense, pruned, int8 ours and the peer -----------------------------------------------------------------

class _CalibrationImages(CalibrationDataReader):
    """The same calibration images for onnxruntime's quantize_static, in batches."""

    def __init__(self, images: torch.Tensor, batch_size: int):
        self._feeds = iter([{"images": batch.numpy()} for batch in images.split(batch_size)])

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


def settle_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int = 8) -> None:
    """BatchNorm running statistics of ``images`` for a randomly initialised model, so that activation ranges (what
    int8 calibrates) stay like a trained model's instead of drifting layer by layer."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batches
    model.train()
    with torch.no_grad():
        for batch in images.split(batch_size):
            model(batch)
    model.eval()


def table1_files(name: str, size: int, args: argparse.Namespace, folder: Path) -> dict:
    """The four variants' ONNX files of zoo model ``name`` at ``size`` px, and its MACs before and after pruning."""
    task, target = get_task("detect"), get_target("cpu")
    images = load_calibration_images(args.calib, size, limit=args.calib_images)
    example = images[:1]
    torch.manual_seed(0)
    model = build_model(name, TABLE1_MODELS[name])
    settle_batchnorm(model, images)
    files = {DENSE: folder / f"{name}-dense.onnx", PRUNED: folder / f"{name}-pruned.onnx", OURS: folder / f"{name}-int8-ours.onnx",
             OURS_EVERY_CONV: folder / f"{name}-int8-ours-every-conv.onnx", PEER: folder / f"{name}-int8-peer.onnx"}
    dense_macs = ec.model_stats(model, example).macs
    ec.export_onnx(task.export_module(model), example, files[DENSE])
    ec.prune(model, example, ratio=args.prune_ratio, criterion="l1", round_to=8)
    ec.export_onnx(task.export_module(model), example, files[PRUNED])
    for label, float_layers in ((OURS, None), (OURS_EVERY_CONV, ())):  # None: the model's default float layers, as build keeps
        quantized = quantize_model(model, example, float_layers=float_layers, backend=target.qdq_backend, weight_bits=target.weight_bits)
        calibrate(quantized, list(images.split(8)), method="mse")
        ec.export_onnx(task.export_module(quantized), example, files[label], int8=True)
    quantize_static(str(files[PRUNED]), str(files[PEER]), _CalibrationImages(images, 8), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return {"image_size": size, "classes": TABLE1_MODELS[name], "dense_macs": dense_macs, "pruned_macs": ec.model_stats(model, example).macs,
            "qdq_backend": target.qdq_backend, "weight_bits": target.weight_bits, "files": {label: str(path) for label, path in files.items()}}


def run_table1(args: argparse.Namespace, results: Results) -> None:
    section = results.section("table1")
    models = section.setdefault("models", {})
    folder = args.out / "table1"
    folder.mkdir(parents=True, exist_ok=True)
    for name in TABLE1_MODELS:
        settings = {"image_size": args.image_size or ZOO[name].image_size, "prune_ratio": args.prune_ratio, "calib_images": args.calib_images}
        info = models.get(name)
        if info and info["settings"] == settings and list(info["files"]) == list(VARIANTS) and all(Path(p).exists() for p in info["files"].values()):
            continue
        print(f"[table 1] building the {name} variants", flush=True)
        models[name] = {"settings": settings, **table1_files(name, settings["image_size"], args, folder)}
        results.save()
    section["batches"] = [1, args.throughput_batch]
    jobs = {f"{name} | {runtime} | {batch} | {label}": Job(path, runtime, (batch, 3, info["image_size"], info["image_size"]))
            for name, info in models.items() for runtime in RUNTIMES for batch in section["batches"]
            for label, path in info["files"].items()}
    section["ms"] = time_interleaved(jobs, section.setdefault("timing", {}), args, results.save, "table 1")
    results.save()


def table1_markdown(section: dict) -> str:
    ms = section["ms"]
    lines = ["### Table 1: dense, pruned and int8 in two runtimes", "", timing_note(section["timing"]), ""]
    for name, info in section["models"].items():
        lines.append(f"- {name}: {info['image_size']} px, {info['classes']} classes, random weights; {info['settings']['prune_ratio']:.0%} of channels "
                     f"pruned (L1): {info['dense_macs'] / 1e9:.3f} -> {info['pruned_macs'] / 1e9:.3f} GMACs "
                     f"({info['dense_macs'] / info['pruned_macs']:.2f}x fewer); ours: the cpu target's {info['qdq_backend']} Q/DQ layout, "
                     f"{info['weight_bits']}-bit weights")
    lines += ["- ours keeps the prediction convs float (as build does), ours every conv quantizes them too; the peer (QDQ, per-channel "
              "QInt8 weights, QUInt8 activations, MinMax) quantizes every conv", "", "| model | runtime | batch | variant | ms | speed vs dense fp32 | ours vs peer |", "|---|---|---|---|---|---|---|"]
    for name, info in section["models"].items():
        for runtime in RUNTIMES:
            for batch in section["batches"]:
                key = f"{name} | {runtime} | {batch}"
                for label in info["files"]:
                    versus_peer = f"{ms[f'{key} | {PEER}'] / ms[f'{key} | {label}']:.2f}x" if label in (OURS, OURS_EVERY_CONV) else ""
                    lines.append(f"| {key} | {label} | {ms[f'{key} | {label}']:.2f} | {ms[f'{key} | {DENSE}'] / ms[f'{key} | {label}']:.2f}x "
                                 f"| {versus_peer} |")
    return "\n".join(lines)


# ---- Table 2: MACs-targeted vs latency-targeted pruning of the trained detector ------------------------------------

def table2_runs(args: argparse.Namespace) -> dict[str, list[str]]:
    """Run name -> its pruning goal's build flags, the MACs and latency run of each budget side by side."""
    runs = {}
    for budget in args.budgets:
        runs[f"macs-{budget:g}"] = ["--target-macs", f"{1 - budget:g}"]
        runs[f"latency-{budget:g}"] = ["--target-latency", f"{budget:g}", "--latency-runtime", args.latency_runtime]
    return runs


def build_flags(args: argparse.Namespace) -> list[str]:
    """The build settings every Table 2 run shares: the detector on the bundled digits set, the cpu target, fine-tuning
    alike, no QAT (Table 2 compares fp32 pruning), a short report (Table 2 times the models itself)."""
    return ["--model", DETECTOR, "--target", "cpu", "--image-size", str(args.image_size or ZOO[DETECTOR].image_size),
            "--finetune-epochs", str(args.finetune_epochs), "--qat-epochs", "0", "--profile-runs", "5", "--profile-rounds", "1",
            "--profile-layers", "0", "--round-to", str(BUILD_ROUND_TO), "--min-channels", str(BUILD_MIN_CHANNELS), "--seed", "0",
            *(["--quick"] if args.quick else [])]


def run_build(name: str, flags: list[str], runs_dir: Path, out: Path) -> None:
    """``python -m edgecompress build`` into ``runs_dir``/``name``, its output in ``name``.log there (latency tables
    cached under ``out``/layer-latency); exits on failure."""
    command = [sys.executable, "-m", "edgecompress", "build", "--runs-dir", str(runs_dir), "--name", name, *flags]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGECOMPRESS_LATENCY_CACHE": str(out / "layer-latency")}
    log = runs_dir / f"{name}.log"
    print(f"[table 2] build {name} (log: {log})", flush=True)
    with open(log, "w") as handle:
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log.read_text().strip().splitlines()[-5:]
        raise SystemExit(f"build {name} failed (exit {done.returncode}); see {log}:\n" + "\n".join(tail))


def build_record(run_dir: Path) -> dict:
    """What Table 2 reads from a finished build: the stages' outcomes (never raw manifest keys) and its ONNX files."""
    def manifest(stage: str) -> dict:
        return json.loads((run_dir / stage / "manifest.json").read_text())

    baseline, finetuned = ModelOutcome.from_manifest(manifest("baseline")), ModelOutcome.from_manifest(manifest("finetune"))
    pruned, exported = PruneOutcome.from_manifest(manifest("prune")), ExportOutcome.from_manifest(manifest("export"))
    return {"map50": finetuned.scores["map50"], "map50_95": finetuned.scores["map50_95"], "macs": finetuned.macs, "params": finetuned.params,
            "baseline": {"map50": baseline.scores["map50"], "map50_95": baseline.scores["map50_95"], "macs": baseline.macs},
            "pruned_from_map50": SparseOutcome.from_manifest(manifest("sparse")).scores["map50"], "latency": pruned.latency,
            "channels_removed": pruned.plan["channels_removed"], "channels_total": pruned.plan["channels_total"],
            "onnx": str(run_dir / "export" / exported.outputs["pruned"]), "baseline_onnx": str(run_dir / "export" / exported.outputs["baseline"])}


def check_budgets_reachable(args: argparse.Namespace) -> None:
    """Measure the detector's latency tables as the builds will (they then read them from the cache) and plan every
    budget on the untrained model: the fewest channels the planner may keep do not depend on the weights, so a budget
    out of reach stops the benchmark here, before any training."""
    size = args.image_size or ZOO[DETECTOR].image_size
    model, example = build_model(DETECTOR, num_classes=10).eval(), torch.zeros(1, 3, size, size)
    tables = measure_latency_tables(model, example, runtime=args.latency_runtime, step=BUILD_ROUND_TO, cache_dir=args.out / "layer-latency")
    for budget in args.budgets:
        try:
            plan_pruning(model, example, target_latency=budget, criterion="l1", latency_tables=tables, round_to=BUILD_ROUND_TO,
                         min_channels=BUILD_MIN_CHANNELS)
        except ec.EdgeCompressError as error:
            print(f"error: --budgets {budget:g} cannot be met at {size} px: {error}", file=sys.stderr)
            raise SystemExit(2) from None


def run_table2(args: argparse.Namespace, results: Results) -> None:
    check_budgets_reachable(args)
    section = results.section("table2")
    builds = section.setdefault("builds", {})
    runs_dir = args.out / "table2"
    runs_dir.mkdir(parents=True, exist_ok=True)
    runs = table2_runs(args)
    first = next(iter(runs))
    for name, goal in runs.items():
        if name == first:
            start = ["--epochs", str(args.epochs), "--sparse-epochs", str(args.sparse_epochs)]
        else:  # the first run's sparse-trained model: every run prunes the same one
            start = ["--weights", str(runs_dir / first / "sparse" / "model.pt"), "--epochs", "0", "--sparse-epochs", "0"]
        flags = build_flags(args) + start + goal
        if name not in builds or builds[name]["flags"] != flags or not Path(builds[name]["onnx"]).exists():
            run_build(name, flags, runs_dir, args.out)
        builds[name] = {"flags": flags, **build_record(runs_dir / name)}
        results.save()
    section.update(builds={name: builds[name] for name in runs}, first=first, budgets=list(args.budgets), latency_runtime=args.latency_runtime, finetune_epochs=args.finetune_epochs,
                   image_size=args.image_size or ZOO[DETECTOR].image_size)
    files = {"dense": builds[first]["baseline_onnx"], **{name: builds[name]["onnx"] for name in runs}}
    size = section["image_size"]
    jobs = {f"{runtime} | {name}": Job(path, runtime, (1, 3, size, size)) for runtime in RUNTIMES for name, path in files.items()}
    section["ms"] = time_interleaved(jobs, section.setdefault("timing", {}), args, results.save, "table 2")
    results.save()


def prediction_errors(section: dict) -> dict[str, dict]:
    """Per latency-targeted run: the planner's predicted fraction of dense latency, the measured one (this table, the
    tables' runtime; and the build's own quick check) and the relative error of the prediction against this table's."""
    errors = {}
    for budget in section["budgets"]:
        latency = section["builds"][f"latency-{budget:g}"]["latency"]
        if not latency:
            continue
        runtime = latency["runtime"]
        measured = section["ms"][f"{runtime} | latency-{budget:g}"] / section["ms"][f"{runtime} | dense"]
        errors[f"latency-{budget:g}"] = {"runtime": runtime, "predicted": latency["predicted_fraction"], "measured": measured,
                                         "build_measured": latency["measured_fraction"], "error": latency["predicted_fraction"] / measured - 1}
    return errors


def pruning_verdicts(section: dict) -> list[str]:
    """Per budget and runtime: does latency-targeted pruning win against MACs-targeted, and by how much (computed)."""
    builds, ms, budgets = section["builds"], section["ms"], section["budgets"]
    lines = []
    for runtime in RUNTIMES:
        macs_points = sorted((ms[f"{runtime} | macs-{b:g}"], builds[f"macs-{b:g}"]["map50"]) for b in budgets)
        for budget in budgets:
            macs, latency = f"macs-{budget:g}", f"latency-{budget:g}"
            own_ms = ms[f"{runtime} | {latency}"]
            speed = ms[f"{runtime} | {macs}"] / own_ms
            gain = builds[latency]["map50"] - builds[macs]["map50"]
            if speed >= 1 and gain >= 0:
                verdict = "latency-aware wins"
            elif speed <= 1 and gain <= 0:
                verdict = "MACs-targeted wins"
            else:
                verdict = "trade-off"
            line = f"- {runtime}, budget {budget:g}: {verdict}: latency-targeted runs at {speed:.2f}x the speed of MACs-targeted, {gain:+.4f} mAP50"
            if len(macs_points) > 1 and macs_points[0][0] <= own_ms <= macs_points[-1][0]:
                at_same = float(np.interp(own_ms, [point[0] for point in macs_points], [point[1] for point in macs_points]))
                line += (f"; at its measured {own_ms:.3f} ms the MACs-targeted runs interpolate to {at_same:.4f} mAP50 "
                         f"({builds[latency]['map50'] - at_same:+.4f} for latency-aware)")
            else:
                line += "; its measured latency lies outside the MACs-targeted runs' range (no interpolation)"
            lines.append(line)
    return lines


def table2_markdown(section: dict) -> str:
    builds, ms, errors = section["builds"], section["ms"], prediction_errors(section)
    dense = {runtime: ms[f"{runtime} | dense"] for runtime in RUNTIMES}
    threads, baseline = section["timing"]["settings"]["threads"], builds[section["first"]]["baseline"]
    lines = ["### Table 2: MACs-targeted vs latency-targeted pruning, fine-tuned alike", "", timing_note(section["timing"]), "",
             f"- {DETECTOR} on the bundled digits set at {section['image_size']} px; pairing: at budget b, MACs-targeted keeps b of the dense "
             f"MACs (--target-macs 1-b), latency-targeted b of the dense latency predicted from {section['latency_runtime']} tables "
             f"(--target-latency b); {section['finetune_epochs']} fine-tuning epoch(s) each; batch 1, fp32 ONNX.",
             "- every run pruned the first run's sparse-trained model, mAP50 as each run saw it: "
             + ", ".join(f"{name} {build['pruned_from_map50']:.4f}" for name, build in builds.items()),
             *([f"- the tables were timed with the runtime's default threads, this table with {threads}: the prediction error compares unlike "
                "settings"] if threads else []), "",
             "| run | MACs (M) | channels removed | mAP50 | mAP50-95 | onnxruntime ms | OpenVINO ms | speed vs dense (ort / OV) "
             "| predicted / measured fraction of dense | prediction error |", "|---|---|---|---|---|---|---|---|---|---|",
             f"| dense (baseline, not fine-tuned) | {baseline['macs'] / 1e6:.1f} | | {baseline['map50']:.4f} | {baseline['map50_95']:.4f} "
             f"| {dense['onnxruntime']:.3f} | {dense['openvino']:.3f} | 1.00x / 1.00x | | |"]
    for budget in section["budgets"]:
        for name in (f"macs-{budget:g}", f"latency-{budget:g}"):
            build, error = builds[name], errors.get(name)
            own = {runtime: ms[f"{runtime} | {name}"] for runtime in RUNTIMES}
            predicted = (f"{error['predicted']:.3f} / {error['measured']:.3f} ({error['runtime']}; build's check "
                         f"{error['build_measured']:.3f})" if error else "")
            relative = f"{error['error']:+.1%}" if error else ""
            lines.append(f"| {name} | {build['macs'] / 1e6:.1f} | {build['channels_removed']} of {build['channels_total']} | {build['map50']:.4f} "
                         f"| {build['map50_95']:.4f} | {own['onnxruntime']:.3f} | {own['openvino']:.3f} "
                         f"| {dense['onnxruntime'] / own['onnxruntime']:.2f}x / {dense['openvino'] / own['openvino']:.2f}x | {predicted} | {relative} |")
    return "\n".join(lines + ["", "Latency-aware vs MACs-targeted pruning:", *pruning_verdicts(section)])


# ---- goals ---------------------------------------------------------------------------------------------------------

def goals_markdown(results: Results) -> str:
    """The issue's goals, computed from the figures above."""
    rows = []
    table1 = results.data.get("table1", {})
    if "ms" in table1:
        ms, batches = table1["ms"], table1["batches"]
        for runtime in RUNTIMES:
            for batch in batches:
                key = f"yolov8n | {runtime} | {batch}"
                speed = ms[f"{key} | {DENSE}"] / ms[f"{key} | {OURS}"]
                rows.append(("pruned + int8 yolov8n vs dense fp32 >= 6x", f"{runtime}, batch {batch}", f"{speed:.2f}x", speed >= 6))
        for name in table1["models"]:
            for runtime in RUNTIMES:
                for batch in batches:
                    key = f"{name} | {runtime} | {batch}"
                    ratio = ms[f"{key} | {PEER}"] / ms[f"{key} | {OURS}"]
                    rows.append(("ours vs peer int8 >= 1.0x", f"{name}, {runtime}, batch {batch}", f"{ratio:.2f}x", ratio >= 1.0))
    table2 = results.data.get("table2", {})
    if "ms" in table2:
        for name, error in prediction_errors(table2).items():
            rows.append(("predicted latency within 10% of measured", f"{name} ({error['runtime']})",
                         f"{error['predicted']:.3f} vs {error['measured']:.3f} of dense: {error['error']:+.1%}", abs(error["error"]) <= 0.10))
    lines = ["### Goals of issue 15", "", "| goal | case | figure | met |", "|---|---|---|---|"]
    lines += [f"| {goal} | {case} | {figure} | {'yes' if met else 'no'} |" for goal, case, figure, met in rows]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 px images, few images and runs, one epoch per stage")
    parser.add_argument("--tables", type=int, nargs="+", choices=(1, 2), default=(1, 2), help="which tables to measure")
    parser.add_argument("--out", type=Path, help=f"results folder (default {FULL['out'].relative_to(ROOT)}, or ...-quick)")
    parser.add_argument("--rounds", type=int, help="interleaved timing rounds (5; quick 2)")
    parser.add_argument("--runs", type=int, help="timed runs per variant and round (20; quick 3)")
    parser.add_argument("--warmup", type=int, help="untimed runs before them (5; quick 1)")
    parser.add_argument("--threads", type=int, help="intra-op threads of the timed runtimes; 0: the runtime's default (0; quick 1)")
    parser.add_argument("--throughput-batch", type=int, help="the batch timed besides batch 1 in Table 1 (8; quick 2)")
    parser.add_argument("--image-size", type=int, help="one input size for every model (default: each zoo model's own; quick 64)")
    parser.add_argument("--calib", type=Path, default=ROOT / "calib_data", help="calibration images of Table 1")
    parser.add_argument("--calib-images", type=int, help="calibration images used in Table 1 (32; quick 4)")
    parser.add_argument("--prune-ratio", type=float, default=0.5, help="share of channels Table 1 prunes")
    parser.add_argument("--budgets", type=float, nargs="+", help="Table 2's kept fractions of MACs / latency (0.6 0.45; quick 0.9 0.8)")
    parser.add_argument("--latency-runtime", choices=RUNTIMES, default="onnxruntime", help="runtime of Table 2's per-layer latency tables")
    parser.add_argument("--epochs", type=int, help="baseline training epochs of Table 2 (20; quick 1)")
    parser.add_argument("--sparse-epochs", type=int, help="sparse-training epochs of Table 2 (8; quick 1)")
    parser.add_argument("--finetune-epochs", type=int, help="fine-tuning epochs of every Table 2 run (8; quick 1)")
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if min(args.rounds, args.runs, args.throughput_batch, args.calib_images) < 1 or args.warmup < 0 or args.threads < 0:
        parser.error("--rounds, --runs, --throughput-batch and --calib-images must be >= 1, --warmup and --threads >= 0")
    if not 0 < args.prune_ratio < 1 or not all(0 < budget < 1 for budget in args.budgets) or len(set(args.budgets)) != len(args.budgets):
        parser.error("--prune-ratio and every --budgets value must lie strictly between 0 and 1, budgets distinct")
    if 1 in args.tables and not args.calib.is_dir():
        parser.error(f"--calib {args.calib} is not a folder of images; pass the bundled calib_data/ or your own")
    return args


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = Results(args.out)
    if 1 in args.tables:
        run_table1(args, results)
    if 2 in args.tables:
        run_table2(args, results)
    print()
    if "ms" in results.data.get("table1", {}):
        print(table1_markdown(results.data["table1"]), end="\n\n")
    if "ms" in results.data.get("table2", {}):
        print(table2_markdown(results.data["table2"]), end="\n\n")
    print(goals_markdown(results))


if __name__ == "__main__":
    main()
