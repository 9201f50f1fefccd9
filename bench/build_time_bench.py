"""How long `edgecompress build --model M` takes next to the default build (issue 11): side by side, one core each.

Every model of ``--models`` is built at once in its own process with one torch thread (``OMP_NUM_THREADS=1``), all
with the default profile's data, image size, batch and targets, but one epoch per training stage, so the whole run
takes minutes. Each build's ``report.json`` gives its stage times and each training epoch's seconds; the default
profile's time is extrapolated per stage as (stage time - its epochs' seconds) + default epochs x seconds per
epoch, with the epochs of ``BuildConfig``'s defaults (baseline, sparse, fine-tune, QAT). The builds share the
machine equally, so the ratios between them mean more than the absolute seconds; the CPU model and the load
average are printed beside the table. The report stage (about a minute) is not in the table: report.json is its own output.

    OMP_NUM_THREADS=1 .venv/bin/python bench/build_time_bench.py                       # yolo-mbv2 (the default) and yolov8n
    .venv/bin/python bench/build_time_bench.py --models yolo-mbv2 yolov8s --out /tmp/build-time
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))  # this checkout's edgecompress, not an installed one

from edgecompress.profile.machine import cpu_model  # noqa: E402
from edgecompress.settings import BuildConfig  # noqa: E402

TRAINING_STAGES = {"baseline": "epochs", "sparse": "sparse_epochs", "finetune": "finetune_epochs", "qat": "qat_epochs"}


def build_all(models: list[str], target: str, out: Path) -> dict[str, dict]:
    """Run one build per model at once, one thread each; return each finished build's report.json."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    one_epoch = ["--epochs", "1", "--sparse-epochs", "1", "--finetune-epochs", "1", "--qat-epochs", "1"]
    processes = {}
    for model in models:
        command = [sys.executable, "-m", "edgecompress", "build", "--model", model, "--target", target, *one_epoch,
                   "--runs-dir", str(out / "runs"), "--name", model]
        log = open(out / f"{model}.log", "w")
        processes[model] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log)
    reports = {}
    for model, (process, log) in processes.items():
        process.wait()
        log.close()
        if process.returncode != 0:
            raise SystemExit(f"the {model} build failed (exit {process.returncode}); see {out / f'{model}.log'}")
        reports[model] = json.loads((out / "runs" / model / "report.json").read_text())
    return reports


def stage_times(report: dict) -> dict[str, tuple[float, float]]:
    """Per stage: (measured seconds with one epoch, seconds extrapolated to the default profile's epochs)."""
    defaults = BuildConfig()
    times = {}
    for name, stage in report["stages"].items():
        measured = stage["wall_s"]
        epochs = (stage["metrics"].get("epochs") or []) if name in TRAINING_STAGES else []
        if epochs:
            per_epoch = sum(epoch["seconds"] for epoch in epochs) / len(epochs)
            outside = measured - per_epoch * len(epochs)
            times[name] = (measured, outside + per_epoch * getattr(defaults, TRAINING_STAGES[name]))
        else:
            times[name] = (measured, measured)
    return times


def table(reports: dict[str, dict]) -> str:
    times = {model: stage_times(report) for model, report in reports.items()}
    models = list(times)
    reference = models[0]
    stages = list(times[reference])
    header = "| stage | " + " | ".join(f"{model} 1 epoch s | {model} default profile s" for model in models) + " |"
    lines = [header, "|---|" + "---|---|" * len(models)]
    for stage in stages:
        cells = [f"{times[m][stage][0]:.1f} | {times[m][stage][1]:.0f}" if stage in times[m] else "- | -" for m in models]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    totals = {m: (sum(v[0] for v in times[m].values()), sum(v[1] for v in times[m].values())) for m in models}
    lines.append("| total | " + " | ".join(f"{totals[m][0]:.0f} | {totals[m][1]:.0f}" for m in models) + " |")
    ratios = [f"{m}: {totals[m][1] / totals[reference][1]:.2f}x {reference}'s default-profile time" for m in models[1:]]
    defaults = BuildConfig()
    return "\n".join([*lines, "", f"Default profile: {defaults.epochs} baseline, {defaults.sparse_epochs} sparse, "
                      f"{defaults.finetune_epochs} fine-tune and {defaults.qat_epochs} QAT epochs at {defaults.image_size} px, "
                      f"batch {defaults.batch_size}. " + "; ".join(ratios) + "."])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["yolo-mbv2", "yolov8n"], help="zoo models; the first is the reference")
    parser.add_argument("--target", default="jetson-orin-nano")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/runs/build-time")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    reports = build_all(args.models, args.target, args.out)
    (args.out / "results.json").write_text(json.dumps({m: stage_times(r) for m, r in reports.items()}, indent=1))
    print(f"CPU: {cpu_model() or 'unknown'}, {os.cpu_count()} CPUs; load average at the end {os.getloadavg()[0]:.1f}; one torch thread per build\n")
    print(table(reports))


if __name__ == "__main__":
    main()
