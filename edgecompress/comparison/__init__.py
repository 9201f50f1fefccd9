"""``edgecompress report``: runs and latency reports side by side in comparison.md, .json and one self-contained .html;
and the sources of latency reports ``edgecompress profile`` reads (a model timed here, imported files)."""

from __future__ import annotations

from pathlib import Path

from ..artifacts import write_json, write_text
from ..errors import EdgeCompressError
from ..profile import LatencyReport
from .compare import Comparison, LatencySource
from .render import html_page, markdown
from .runs import RunSummary, read_run
from .sources import import_report, profile_file

OUTPUTS = ("comparison.md", "comparison.json", "comparison.html")


def compare_runs(run_dirs: list[str | Path], latency_files: list[str | Path] = (), out: str | Path = "comparison") -> dict[str, Path]:
    """Read every run folder and latency report (any bad one is a one-line error before anything is written), then write
    comparison.md, comparison.json and comparison.html into ``out``; returns their paths."""
    if not run_dirs and not latency_files:
        raise EdgeCompressError("nothing to compare; pass run folders (edgecompress report runs/NAME ...) and/or --latency FILE.json")
    runs = [read_run(folder) for folder in run_dirs]
    names = [run.name for run in runs]
    if len(set(names)) < len(names):
        raise EdgeCompressError(f"two run folders share the name {next(n for n in names if names.count(n) > 1)}; compare runs with distinct names")
    sources = [LatencySource(Path(file), LatencyReport.load(file)) for file in latency_files]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EdgeCompressError(f"{out} exists and is not a folder; pass another --out")
    comparison = Comparison(runs, sources)
    page = html_page(comparison)
    paths = {name: out / name for name in OUTPUTS}
    write_text(paths["comparison.md"], markdown(comparison))
    write_json(paths["comparison.json"], comparison.to_dict())
    write_text(paths["comparison.html"], page)
    return paths


__all__ = ["Comparison", "LatencySource", "OUTPUTS", "RunSummary", "compare_runs", "import_report", "profile_file", "read_run"]
