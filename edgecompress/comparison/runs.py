"""A finished build's run folder, read for comparison: its ``report.json``, ``config.json`` and stage manifests.

The layout is what the pipeline writes (``edgecompress.pipeline``, ``edgecompress.report``): ``RUN/.edgecompress-run``
(the marker), ``RUN/config.json`` (the settings), ``RUN/report.json`` (one row per deployable model: metrics in torch and
onnxruntime, params, MACs, ONNX bytes, latency by runtime) and ``RUN/<stage>/manifest.json`` per stage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EdgeCompressError
from ..run_folder import MARKER

RUN_FIX = "pass a run folder written by `edgecompress build` (runs/NAME) whose report stage has finished"


@dataclass(frozen=True)
class RunSummary:
    """What a run folder says about its models; ``metric`` is the task's primary metric (the first the report lists)."""

    name: str
    folder: Path
    config: dict[str, Any]
    report: dict[str, Any]
    manifests: dict[str, dict[str, Any]]

    @property
    def models(self) -> list[dict[str, Any]]:
        return self.report["models"]

    @property
    def metric(self) -> str | None:
        first = self.models[0] if self.models else {}
        return next(iter(first.get("metrics_onnx") or first.get("metrics_torch") or {}), None)

    @property
    def runtimes(self) -> list[str]:
        """The CPU runtimes the build's report timed the models in, in its order."""
        return list(dict.fromkeys(runtime for row in self.models for runtime in row.get("latency_by_runtime", {})))

    @property
    def target(self) -> str | None:
        return (self.report.get("target") or {}).get("name") or self.config.get("target")


def _read(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise EdgeCompressError(f"{path}: cannot read the run's {what} ({type(error).__name__}); {RUN_FIX}") from None


def read_run(folder: str | Path) -> RunSummary:
    """Read a run folder; one that is missing, not a run, or unfinished is a one-line error naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgeCompressError(f"{folder} is not a folder; {RUN_FIX}")
    if not (folder / MARKER).is_file():
        raise EdgeCompressError(f"{folder} is not an edgecompress run folder (no {MARKER}); {RUN_FIX}")
    if not (folder / "report.json").is_file():
        raise EdgeCompressError(f"{folder} has no report.json (its build has not reached the report stage); "
                                f"finish it with `edgecompress build --name {folder.name} --runs-dir {folder.parent}`")
    report = _read(folder / "report.json", "report.json")
    if not isinstance(report, dict) or not isinstance(report.get("models"), list) or not isinstance(report.get("stages"), dict):
        raise EdgeCompressError(f"{folder / 'report.json'} is not a build's report (no models and stages); {RUN_FIX}")
    config = _read(folder / "config.json", "config.json") if (folder / "config.json").is_file() else {}
    stages = [*report["stages"], *sorted(path.parent.name for path in folder.glob("*/manifest.json"))]
    manifests = {stage: _read(folder / stage / "manifest.json", f"{stage} manifest")
                 for stage in dict.fromkeys(stages) if (folder / stage / "manifest.json").is_file()}
    return RunSummary(name=report.get("name") or folder.name, folder=folder.resolve(), config=config, report=report, manifests=manifests)
