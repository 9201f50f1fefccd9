"""Jetson board state during a timed run: ``tegrastats`` sampled in the background, the power mode and the clocks.

tegrastats prints one line per interval (Jetson Linux Developer Guide, "tegrastats Utility":
https://docs.nvidia.com/jetson/archives/r35.4.1/DeveloperGuide/text/AT/JetsonLinuxDevelopmentTools/TegrastatsUtility.html;
JetPack 4 / L4T 32: https://docs.nvidia.com/jetson/archives/l4t-archived/l4t-325/Tegra%20Linux%20Driver%20Package%20Development%20Guide/AppendixTegraStats.html).
The fields read here:

- ``RAM X/YMB (lfb NxZMB)``: RAM in use and total, MB.
- ``CPU [X%@F,Y%@F,off,...]`` (or ``CPU [X%,Y%]@F`` on old releases): load per core; ``off`` is a core powered down.
- ``GR3D_FREQ X%`` with ``@F`` (JetPack 4), ``@[F]`` (JetPack 5) or ``@[F,F]`` (JetPack 6, one per GPC): iGPU load.
- power rails ``NAME Xmw/Ymw`` (JetPack 5 and 6, e.g. ``VDD_IN 5000mW/5000mW``) or ``NAME X/Y`` in mW (JetPack 4,
  e.g. ``POM_5V_IN 1234/1234``): X is the current reading, Y the average since tegrastats started.

The power mode is ``nvpmodel -q`` and the clocks ``jetson_clocks --show`` (Developer Guide, "Platform Power and
Performance": https://docs.nvidia.com/jetson/archives/r36.4/DeveloperGuide/SD/PlatformPowerAndPerformance.html).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from typing import Any, Iterable

RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
CPU = re.compile(r"\bCPU \[([^\]]*)\]")
CORE_LOAD = re.compile(r"(\d+)%")
GR3D = re.compile(r"\bGR3D_FREQ (\d+)%")
# A rail: a name then current/average in mW, with or without the unit; RAM, SWAP and IRAM share the X/Y shape but end in MB/kB.
RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?![\w/])")
NOT_RAILS = {"RAM", "SWAP", "IRAM"}


def parse_line(line: str) -> dict[str, Any]:
    """One tegrastats line as numbers: RAM used/total (MB), GR3D load (%), mean load of the online CPU cores (%), power per rail (mW, current reading)."""
    sample: dict[str, Any] = {}
    if ram := RAM.search(line):
        sample["ram_used_mb"], sample["ram_total_mb"] = float(ram.group(1)), float(ram.group(2))
    if cpu := CPU.search(line):
        loads = [float(load.group(1)) for core in cpu.group(1).split(",") if (load := CORE_LOAD.search(core))]
        if loads:
            sample["cpu_percent"] = sum(loads) / len(loads)
    if gr3d := GR3D.search(line):
        sample["gr3d_percent"] = float(gr3d.group(1))
    rails = {name: float(now) for name, now, _average in RAIL.findall(line) if name not in NOT_RAILS}
    if rails:
        sample["power_mw"] = rails
    return sample


def _range(values: list[float]) -> dict[str, float]:
    return {"mean": sum(values) / len(values), "max": max(values)}


def summarize(lines: Iterable[str], interval_ms: int) -> dict[str, Any] | None:
    """The schema's ``tegrastats`` record (mean and max of each figure) from tegrastats lines; None when no line parses.

    ``cpu_percent`` (mean load of the online cores) is kept next to the schema's fields.
    """
    samples = [sample for sample in map(parse_line, lines) if sample]
    if not samples:
        return None
    summary: dict[str, Any] = {"samples": len(samples), "interval_ms": int(interval_ms)}
    for key in ("ram_used_mb", "gr3d_percent", "cpu_percent"):
        values = [sample[key] for sample in samples if key in sample]
        if values:
            summary[key] = _range(values)
    rails = sorted({name for sample in samples for name in sample.get("power_mw", {})})
    summary["power_mw"] = {name: _range([s["power_mw"][name] for s in samples if name in s.get("power_mw", {})]) for name in rails}
    return summary


class TegrastatsSampler:
    """``with TegrastatsSampler(100) as sampler: ...timed run...``; then ``sampler.summary()``. Does nothing where tegrastats is absent.

    Entering waits for tegrastats' first line (it prints one per interval, the first after starting up) and drops it, as
    it describes the time before the block; leaving waits for at least one line from inside the block, so a block
    shorter than the interval still gets a sample.
    """

    STARTUP_S = 3.0

    def __init__(self, interval_ms: int = 100, enabled: bool = True, executable: str = "tegrastats") -> None:
        self.interval_ms = interval_ms
        self.executable = shutil.which(executable) if enabled else None
        self.lines: list[str] = []
        self._process: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._new_line = threading.Condition()

    def __enter__(self) -> TegrastatsSampler:
        if self.executable:
            self._process = subprocess.Popen([self.executable, "--interval", str(self.interval_ms)],
                                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
            self._wait_for_lines(1, self.STARTUP_S)
            with self._new_line:
                self.lines.clear()
        return self

    def _read(self) -> None:
        for line in self._process.stdout:
            with self._new_line:
                self.lines.append(line.strip())
                self._new_line.notify_all()

    def _wait_for_lines(self, count: int, timeout_s: float) -> None:
        with self._new_line:
            self._new_line.wait_for(lambda: len(self.lines) >= count, timeout=timeout_s)

    def __exit__(self, *exc_info: object) -> None:
        if self._process is None:
            return
        self._wait_for_lines(1, self.interval_ms / 1e3 + self.STARTUP_S)
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join(timeout=5)

    def summary(self) -> dict[str, Any] | None:
        """What tegrastats said during the block, or None without tegrastats (or without a line)."""
        return summarize(self.lines, self.interval_ms) if self.executable else None


def _run(command: list[str]) -> str | None:
    """The output of a board tool, or None where it is absent or fails (e.g. jetson_clocks --show without root)."""
    if not shutil.which(command[0]):
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def parse_power_mode(text: str) -> str | None:
    """``NV Power Mode: MAXN`` then the mode's number (``nvpmodel -q``) -> ``"MAXN (0)"``."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.startswith("NV Power Mode:"):
            name = line.partition(":")[2].strip()
            number = lines[index + 1] if index + 1 < len(lines) and lines[index + 1].isdigit() else None
            return f"{name} ({number})" if number else name
    return None


def parse_clocks(text: str) -> dict[str, dict[str, str]]:
    """``jetson_clocks --show`` lines such as ``GPU MinFreq=306000000 MaxFreq=624750000 CurrentFreq=...`` or
    ``cpu0: Online=1 Governor=schedutil ...`` -> ``{"GPU": {"MinFreq": "306000000", ...}, "cpu0": {...}}``."""
    clocks: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        name, _, rest = line.strip().partition(" ")
        settings = dict(re.findall(r"(\w+)=(\S+)", rest))
        if name and settings and "=" not in name:
            clocks[name.rstrip(":")] = settings
    return clocks


def power_mode() -> str | None:
    """The Jetson's nvpmodel mode, or None off a Jetson."""
    text = _run(["nvpmodel", "-q"])
    return parse_power_mode(text) if text else None


def clocks() -> dict[str, dict[str, str]] | None:
    """The clocks ``jetson_clocks --show`` reports, or None where it is absent or refuses (it needs root)."""
    text = _run(["jetson_clocks", "--show"])
    return parse_clocks(text) or None if text else None
