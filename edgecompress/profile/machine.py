"""What machine a latency was measured on: the CPU model, the GPU's name, and on a Jetson its power mode and clocks."""

from __future__ import annotations

import glob
import platform
import shutil
import subprocess
from typing import Any

from . import tegrastats

# /proc/cpuinfo keys naming the CPU: x86 ("model name"), Arm boards ("Hardware", "Model"), in order of preference.
CPUINFO_NAME_KEYS = ("model name", "Hardware", "Model", "cpu model")


def cpu_model(cpuinfo: str | None = None) -> str | None:
    """The CPU model from ``/proc/cpuinfo`` (Linux), else what Python's ``platform`` knows."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as handle:
                cpuinfo = handle.read()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            fields.setdefault(key.strip(), value.strip())
    return next((fields[key] for key in CPUINFO_NAME_KEYS if key in fields), None) or platform.processor() or None


def gpu_name() -> str | None:
    """The NVIDIA GPU here: the driver's /proc entry, else ``nvidia-smi``, else a Jetson's device-tree model; None without one."""
    for path in sorted(glob.glob("/proc/driver/nvidia/gpus/*/information")):
        with open(path) as handle:
            for line in handle:
                if line.startswith("Model:"):
                    return line.partition(":")[2].strip()
    if shutil.which("nvidia-smi"):
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip().splitlines()[0]
    try:
        with open("/proc/device-tree/model") as handle:
            model = handle.read().strip("\x00\n ")
    except OSError:
        return None
    return f"{model} (integrated GPU)" if "jetson" in model.lower() else None


def machine_info(target: str | None = None) -> dict[str, Any]:
    """The schema's ``machine`` record for this machine."""
    return {"cpu": cpu_model(), "gpu": gpu_name(), "target": target, "power_mode": tegrastats.power_mode(),
            "clocks": tegrastats.clocks()}
