"""The build pipeline: baseline -> sparse -> prune -> finetune -> qat -> export -> engine -> report.

Each stage writes its artifacts into ``runs/<name>/<stage>/`` with a ``manifest.json`` saying what
produced them (a fingerprint of the settings it read and of every stage before it). Rerunning the
same build reuses stages whose fingerprint is unchanged; ``from_stage`` reruns from a stage on. A
stage works in ``runs/<name>/.partial/<stage>/`` and is renamed into place only when complete, so
an interrupted build leaves no half-written stage, and training resumes from its last epoch. The run
folder is locked while a build uses it and cleaned only inside (see :mod:`edgecompress.run_folder`);
``config.json`` is written when the build finishes, so it always describes what is on disk.

Under torchrun (``torchrun --nproc_per_node N -m edgecompress build ...``, or ``build --gpus N``) every process
runs the stages that train, under DistributedDataParallel; rank 0 alone checks the inputs, holds the lock,
writes every file and runs the other stages (export, engine, report), and hands its decisions (reuse a stage
or run it, the manifests) to the others. The run folder must be on a filesystem every process sees.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from .artifacts import read_marker, recover_dir, replace_dir, write_json, write_marker
from .errors import EdgeCompressError
from .progress import console, silenced
from .run import Run
from .run_folder import MARKER, PARTIAL, check_run_name, claim, discard_unresumable, locked, run_name_from
from .settings import BuildConfig
from .stages import STAGE_NAMES, STAGES, Stage
from .train.device import resolve_device
from .train.distributed import barrier, from_main_process, is_main_process, launched_by_torchrun, leave_process_group, process_group, rank

__all__ = ["BuildConfig", "Run", "build", "run_stage"]


def _fingerprint(stage: Stage, config: BuildConfig, previous: str) -> str:
    settings = {key: getattr(config, key) for key in stage.settings}
    if "target" in settings:  # the cpu target's int8 layout follows the machine's CPU: a folder moved elsewhere re-quantizes
        from .targets import get_target
        target = get_target(config.target)
        settings["target"] = {"name": target.name, "qdq_backend": target.qdq_backend, "weight_bits": target.weight_bits}
    blob = json.dumps({"stage": stage.name, "settings": settings, "previous": previous}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _reusable(manifest_path: Path, fingerprint: str) -> dict[str, Any] | None:
    if not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    outputs_present = all((manifest_path.parent / rel).exists() for rel in manifest.get("outputs", {}).values())
    return manifest if manifest.get("fingerprint") == fingerprint and outputs_present else None


def run_stage(run: Run, stage: Stage, fingerprint: str, force: bool) -> dict[str, Any]:
    """Reuse the stage if its manifest matches, else run it in a partial folder and move it into place.

    Either way the stage's typed outcome is recorded in ``run.outcomes`` and its manifest returned. In a
    distributed build rank 0 decides and writes; the other processes run a stage that trains alongside it,
    writing nothing, and take rank 0's manifest.
    """
    final = run.dir / stage.name
    manifest = from_main_process(lambda: None if force else _reusable(final / "manifest.json", fingerprint))
    if manifest:
        console.print(f"[green]✓[/] {stage.name}: reused (fingerprint {fingerprint})")
        run.outcomes[stage.name] = stage.outcome.from_manifest(manifest)
        return manifest
    if is_main_process():
        manifest = _run_and_record(run, stage, fingerprint, force)
    elif stage.trains:
        run.reseed()
        stage.run(run, run.dir / PARTIAL / stage.name)  # under DDP with rank 0; only rank 0 writes
    manifest = from_main_process(lambda: manifest)
    if not is_main_process():
        run.outcomes[stage.name] = stage.outcome.from_manifest(manifest)
    return manifest


def _run_and_record(run: Run, stage: Stage, fingerprint: str, force: bool) -> dict[str, Any]:
    """Run the stage in its partial folder, write its manifest and move the folder into place."""
    final, partial = run.dir / stage.name, run.dir / PARTIAL / stage.name
    marker = partial / ".fingerprint"
    if partial.exists() and (force or read_marker(marker) != fingerprint):
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    write_marker(marker, fingerprint)
    console.rule(f"[bold]{stage.name}")
    run.reseed()
    started = time.time()
    outcome = stage.run(run, partial)
    manifest = {
        "stage": stage.name,
        "status": "skipped" if outcome.skipped else "done",
        "reason": outcome.skipped,
        "fingerprint": fingerprint,
        "settings": {key: getattr(run.config, key) for key in stage.settings},
        "outputs": outcome.outputs,
        "metrics": outcome.metrics(),
        "wall_s": round(time.time() - started, 2),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(partial / "manifest.json", manifest)
    marker.unlink()
    replace_dir(partial, final)
    run.outcomes[stage.name] = outcome
    status = f"skipped: {outcome.skipped}" if outcome.skipped else f"done in {manifest['wall_s']:.1f}s"
    console.print(f"[green]✓[/] {stage.name}: {status}")
    return manifest


def build(config: BuildConfig | None = None, **overrides: Any) -> Path:
    """Run the whole pipeline; returns the run folder. Keyword arguments override ``config`` fields."""
    config = replace(config or BuildConfig(), **overrides)
    named = config.name is not None
    config = config.resolved()
    config = replace(config, name=check_run_name(config.name) if named else run_name_from(config.name))
    if config.from_stage is not None and config.from_stage not in STAGE_NAMES:
        raise EdgeCompressError(f"unknown stage {config.from_stage!r} for --from; choose one of {', '.join(STAGE_NAMES)}")
    if config.gpus is not None and config.gpus > 1 and not launched_by_torchrun():
        raise EdgeCompressError(f"gpus={config.gpus} starts torchrun from the command line (edgecompress build --gpus {config.gpus}); "
                                f"from Python, run your script under torchrun --nproc_per_node {config.gpus}")
    config.check()
    run = Run(config)
    with process_group(resolve_device(config.device)), silenced(not is_main_process()):
        if is_main_process():
            run.preflight()  # every input checked before the first training step; a refusal leaves no run folder
            claim(run.dir)
        barrier()
        if not (run.dir / MARKER).is_file():
            raise EdgeCompressError(f"process {rank()} does not see the run folder {run.dir} that rank 0 made; a build on several machines "
                                    "needs a --runs-dir on a filesystem every machine shares")
        with locked(run.dir) if is_main_process() else nullcontext():
            if is_main_process():
                for name in STAGE_NAMES:
                    recover_dir(run.dir / name)  # a stage move a killed build left half done
            _run_stages(run)
    return run.dir


def _run_stages(run: Run) -> None:
    config = run.config
    previous = ""
    force_from = STAGE_NAMES.index(config.from_stage) if config.from_stage else len(STAGE_NAMES)
    last_training = max(index for index, stage in enumerate(STAGES) if stage.trains)
    try:
        for index, stage in enumerate(STAGES):
            if index == last_training + 1:
                leave_process_group()  # the stages left run on rank 0 alone
                if not is_main_process():
                    return
            fingerprint = _fingerprint(stage, config, previous)
            run.manifests[stage.name] = run_stage(run, stage, fingerprint, force=index >= force_from)
            previous = fingerprint
    except BaseException:
        if is_main_process():
            discard_unresumable(run.dir, STAGE_NAMES)
        raise
    if is_main_process():
        shutil.rmtree(run.dir / PARTIAL, ignore_errors=True)
        write_json(run.dir / "config.json", asdict(config))
