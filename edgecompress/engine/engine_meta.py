"""Which TensorRT and GPU built an engine, recorded beside it and checked before it is used; what the device is.

A TensorRT engine runs only with the TensorRT version that built it ("by default, TensorRT engines are compatible
only with the version of TensorRT with which they are built") and only on the GPU architecture that built it:
hardware compatibility (``HardwareCompatibilityLevel::kAMPERE_PLUS``) covers Ampere-and-newer discrete GPUs only,
never a Jetson, and edgecompress does not build with it
(https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/advanced.html#version-compatibility,
include/NvInfer.h of https://github.com/NVIDIA/TensorRT). Loading a mismatched engine fails deep in deserialization;
this module refuses it first, with the fix, from the sidecar ``<engine>.json`` written beside every engine.

Standard library only and Python 3.6 syntax: the deployment bundle copies this file to the device (a Jetson Nano's
JetPack 4 has Python 3.6). On the device::

    python3 engine_meta.py detect --out device.json --expect-tensorrt 10.3 --expect-arch sm_87 [--trtexec PATH]
    python3 engine_meta.py cache-name --device device.json        # timing-cache file for this GPU + TensorRT
    python3 engine_meta.py stamp model.engine --device device.json --target T --precision P [--dla-core N]
    python3 engine_meta.py check model.engine --device device.json
    python3 engine_meta.py annotate latency.json --device device.json --engine model.engine
    python3 engine_meta.py choose --engine model.engine GPU latency.json int8_proof.json \\
        --engine model_dla0.engine DLA0 latency_dla0.json int8_proof_dla0.json --device device.json --out deployment.json

Exit status 2 (one line on stderr) when the device or an engine does not match.
"""

import argparse
import datetime
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

SCHEMA = "edgecompress.engine/1"
DEPLOYMENT_SCHEMA = "edgecompress.deployment/1"

# /proc/device-tree/compatible of each Jetson SoC -> its GPU's compute capability (https://developer.nvidia.com/cuda-gpus,
# cuda-legacy-gpus): Nano T210 5.3, TX2 T186 6.2, Xavier T194 7.2, Orin T234 8.7, Thor T264 11.0.
TEGRA_ARCH = {"tegra210": "sm_53", "tegra186": "sm_62", "tegra194": "sm_72", "tegra234": "sm_87", "tegra264": "sm_110"}


class MismatchError(Exception):
    """The device or an engine is not what the bundle was made for; the message names the fix."""


def short_version(version):
    """``"10.3.0.30"`` -> ``"10.3.0"``: the release an engine is tied to (the build number does not matter)."""
    parts = re.findall(r"\d+", str(version or ""))
    return ".".join(parts[:3]) if parts else None


def timing_cache_name(gpu_arch, tensorrt_version):
    """One timing cache per GPU architecture and TensorRT release: its timings are valid for that pair only."""
    return "timing-{}-trt{}.cache".format(gpu_arch or "unknown-gpu", short_version(tensorrt_version) or "unknown")


def sidecar_path(engine_path):
    """``model.engine`` -> ``model.engine.json``."""
    return str(engine_path) + ".json"


def _write_json(path, data):
    """Write ``data`` to ``path`` atomically (a crash leaves the old file or none, never half a file)."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(data, out, indent=2, sort_keys=True)
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _read_json(path, what):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise MismatchError("cannot read {} {}: {}".format(what, path, exc))


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_sidecar(engine_path, tensorrt, gpu_arch, target=None, precision=None, device_type="GPU", jetpack=None,
                  power_mode=None):
    """Record beside ``engine_path`` what built it; every engine edgecompress writes gets one."""
    record = {
        "schema": SCHEMA, "engine": os.path.basename(str(engine_path)), "bytes": os.path.getsize(str(engine_path)),
        "sha256": _sha256(str(engine_path)), "tensorrt": short_version(tensorrt), "gpu_arch": gpu_arch,
        "hardware_compatibility": "none", "target": target, "precision": precision, "device_type": device_type,
        "jetpack": jetpack, "power_mode": power_mode,
        "built": datetime.datetime.utcnow().replace(microsecond=0).isoformat() + "Z",
    }
    return _write_json(sidecar_path(engine_path), record)


def mismatch(record, tensorrt, gpu_arch):
    """Why the engine described by ``record`` cannot run with ``tensorrt`` on ``gpu_arch``; None if it can."""
    built_trt, here_trt = short_version(record.get("tensorrt")), short_version(tensorrt)
    where = "{} (target {})".format(record.get("engine", "the engine"), record.get("target") or "unknown")
    fix = "rebuild it on this device (./build_engine.sh) or run it where it was built"
    if built_trt and here_trt and built_trt != here_trt:
        return "{} was built with TensorRT {} but this machine has TensorRT {}: an engine only runs with the TensorRT " \
               "release that built it; {}".format(where, built_trt, here_trt, fix)
    built_arch = record.get("gpu_arch")
    if built_arch and gpu_arch and built_arch != gpu_arch:
        return "{} was built for GPU {} but this GPU is {}: engines are tied to the GPU architecture that built them " \
               "(hardware compatibility covers Ampere-and-newer discrete GPUs only, never a Jetson); {}".format(
                   where, built_arch, gpu_arch, fix)
    return None


def check_engine(engine_path, tensorrt, gpu_arch):
    """Raise :class:`MismatchError` unless the engine's sidecar says it runs here; return the sidecar record."""
    path = sidecar_path(engine_path)
    if not os.path.isfile(path):
        raise MismatchError("{} has no {} saying which TensorRT and GPU built it; rebuild it with edgecompress (or "
                            "./build_engine.sh) so it can be checked before loading".format(engine_path, path))
    record = _read_json(path, "engine record")
    problem = mismatch(record, tensorrt, gpu_arch)
    if problem:
        raise MismatchError(problem)
    if record.get("sha256") and os.path.isfile(str(engine_path)) and _sha256(str(engine_path)) != record["sha256"]:
        raise MismatchError("{} does not match its record {} (the engine was replaced); rebuild it".format(engine_path, path))
    return record


# ---- what the device is ---------------------------------------------------------------------------------------


def _run(command):
    """stdout of ``command``, or None when it is missing or fails (detection is best effort)."""
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                              timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout


def _tensorrt_from_python():
    try:
        import tensorrt  # noqa: F401  (JetPack's python3-libnvinfer)
    except Exception:  # noqa: BLE001  (any import failure means "not this way")
        return None
    return short_version(getattr(tensorrt, "__version__", None))


def _tensorrt_from_dpkg():
    for package in ("libnvinfer-bin", "libnvinfer10", "libnvinfer8", "tensorrt"):
        out = _run(["dpkg-query", "-W", "-f=${Version}", package])
        if out and re.match(r"\d+\.\d+", out.strip()):
            return short_version(out.strip())
    return None


def _tensorrt_from_trtexec(trtexec):
    """trtexec's banner: ``[TensorRT v8502]`` (8.x: major*1000 + minor*100 + patch) or ``v100300`` (10+: *10000)."""
    out = _run([trtexec]) if trtexec else None
    found = re.search(r"\[TensorRT v(\d+)\]", out or "")
    if not found:
        return None
    code = int(found.group(1))
    if code >= 100000:
        return "{}.{}.{}".format(code // 10000, code // 100 % 100, code % 100)
    return "{}.{}.{}".format(code // 1000, code // 100 % 10, code % 100)


def detect_gpu_arch():
    """``sm_XY`` of this machine's GPU: the Jetson SoC from the device tree, else nvidia-smi's compute capability."""
    try:
        with open("/proc/device-tree/compatible", "rb") as handle:
            compatible = handle.read().decode("ascii", "replace")
        for soc, arch in TEGRA_ARCH.items():
            if soc in compatible:
                return arch
    except OSError:
        pass
    out = _run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"])
    found = re.match(r"\s*(\d+)\.(\d+)", out or "")
    return "sm_{}{}".format(found.group(1), found.group(2)) if found else None


def detect_jetpack():
    """JetPack from the nvidia-jetpack package, and the Jetson Linux (L4T) release from /etc/nv_tegra_release."""
    out = _run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"])
    jetpack = out.strip().split("-")[0].split("+")[0] if out and re.match(r"\d", out.strip()) else None
    l4t = None
    try:
        with open("/etc/nv_tegra_release") as handle:
            found = re.search(r"R(\d+).*?REVISION:\s*([\d.]+)", handle.read())
        l4t = "{}.{}".format(found.group(1), found.group(2)) if found else None
    except OSError:
        pass
    return jetpack, l4t


def detect_power_mode():
    """``nvpmodel -q``: ``NV Power Mode: MAXN`` then the mode number -> ``"MAXN (0)"``; None off a Jetson."""
    out = _run(["nvpmodel", "-q"])
    found = re.search(r"Power Mode:\s*(\S+)\s*(\d+)?", out or "")
    if not found:
        return None
    return found.group(1) + (" ({})".format(found.group(2)) if found.group(2) else "")


def detect_device(trtexec=None):
    """What this machine is: TensorRT release, GPU architecture, JetPack/L4T and power mode (None where unknown)."""
    tensorrt = _tensorrt_from_python() or _tensorrt_from_dpkg() or _tensorrt_from_trtexec(trtexec)
    jetpack, l4t = detect_jetpack()
    return {"tensorrt": tensorrt, "gpu_arch": detect_gpu_arch(), "jetpack": jetpack, "l4t": l4t,
            "power_mode": detect_power_mode()}


def check_device(device, expect_tensorrt, expect_arch, target=None):
    """Refuse a device whose TensorRT major or GPU differs from the bundle's target (its flags would be wrong)."""
    name = target or "this bundle's target"
    expected_major = str(expect_tensorrt).split(".")[0] if expect_tensorrt else None
    found = device.get("tensorrt")
    if expected_major and found and found.split(".")[0] != expected_major:
        raise MismatchError("this device has TensorRT {} but the bundle was made for {} with TensorRT {}: its build "
                            "flags differ between majors; make the bundle for this device's target (edgecompress "
                            "targets lists them)".format(found, name, expect_tensorrt))
    if expect_arch and device.get("gpu_arch") and device["gpu_arch"] != expect_arch:
        raise MismatchError("this GPU is {} but the bundle was made for {} ({}); make the bundle for this device's "
                            "target".format(device["gpu_arch"], name, expect_arch))


# ---- after profiling ------------------------------------------------------------------------------------------


def annotate(latency_path, device, engine_path=None):
    """Add the device facts (power mode, TensorRT, DLA core) to a latency report written from trtexec's exports."""
    report = _read_json(latency_path, "latency report")
    record = _read_json(sidecar_path(engine_path), "engine record") if engine_path else {}
    machine = report.setdefault("machine", {})
    runtime = report.setdefault("runtime", {"name": "trtexec"})
    machine["power_mode"] = device.get("power_mode")
    if record.get("target"):
        machine["target"] = record["target"]
    if record.get("device_type"):
        runtime["device"] = record["device_type"]
    if device.get("tensorrt") and not runtime.get("version"):
        runtime["version"] = device["tensorrt"]
    _write_json(latency_path, report)
    return report


def _median(latency_path):
    return float(_read_json(latency_path, "latency report")["latency_ms"]["host"]["median"])


def _proof_status(proof_path):
    """``passed``/``failed`` from an int8 proof report, ``not run`` without one (an fp16/fp32 engine)."""
    if not proof_path or not os.path.isfile(proof_path):
        return "not run"
    return "passed" if _read_json(proof_path, "int8 proof").get("ok") else "failed"


def choose(engines, device):
    """Which engine to deploy: the fastest median host latency among those whose int8 proof did not fail.

    ``engines`` is a list of ``(engine, device_type, latency_report, int8_proof_or_None)``, the GPU-only engine
    first. A DLA engine is not assumed faster: layers the DLA cannot run fall back to the GPU, and the transfers
    can make it several times slower than the GPU alone.
    """
    candidates = [{"engine": engine, "device": kind, "latency": latency, "median_ms": _median(latency),
                   "int8_proof": _proof_status(proof)} for engine, kind, latency, proof in engines]
    eligible = [entry for entry in candidates if entry["int8_proof"] != "failed"] or candidates[:1]
    best = min(eligible, key=lambda entry: entry["median_ms"])
    others = ", ".join("{} {:.3f} ms{}".format(entry["device"], entry["median_ms"],
                                               " (int8 proof failed)" if entry["int8_proof"] == "failed" else "")
                       for entry in candidates if entry is not best)
    reason = "fastest median host latency: {} {:.3f} ms".format(best["device"], best["median_ms"])
    return {"schema": DEPLOYMENT_SCHEMA, "use": best["engine"], "device": best["device"],
            "reason": reason + ("; " + others if others else ""), "candidates": candidates,
            "tensorrt": device.get("tensorrt"), "jetpack": device.get("jetpack"), "l4t": device.get("l4t"),
            "power_mode": device.get("power_mode"), "gpu_arch": device.get("gpu_arch")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    detect = commands.add_parser("detect", help="record this device (TensorRT, GPU, JetPack, power mode)")
    detect.add_argument("--out", required=True)
    detect.add_argument("--expect-tensorrt")
    detect.add_argument("--expect-arch")
    detect.add_argument("--target")
    detect.add_argument("--trtexec")
    cache = commands.add_parser("cache-name", help="print the timing-cache file name for this device")
    cache.add_argument("--device", required=True)
    stamp = commands.add_parser("stamp", help="write the engine's sidecar record")
    stamp.add_argument("engine")
    stamp.add_argument("--device", required=True)
    stamp.add_argument("--target")
    stamp.add_argument("--precision")
    stamp.add_argument("--dla-core", type=int)
    check = commands.add_parser("check", help="refuse an engine built with another TensorRT or GPU")
    check.add_argument("engine")
    check.add_argument("--device", required=True)
    note = commands.add_parser("annotate", help="add power mode, TensorRT and device to a latency report")
    note.add_argument("latency")
    note.add_argument("--device", required=True)
    note.add_argument("--engine")
    pick = commands.add_parser("choose", help="write which engine to deploy (GPU or DLA), from the latency reports")
    pick.add_argument("--engine", action="append", nargs=4, required=True, metavar=("ENGINE", "DEVICE", "LATENCY", "PROOF"),
                      help="an engine, GPU or DLAn, its latency report and its int8 proof report ('-' for none)")
    pick.add_argument("--device", required=True)
    pick.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "detect":
            device = detect_device(args.trtexec)
            _write_json(args.out, device)
            check_device(device, args.expect_tensorrt, args.expect_arch, args.target)
            print("device: TensorRT {tensorrt}, GPU {gpu_arch}, JetPack {jetpack}, L4T {l4t}, power mode {power_mode}"
                  .format(**device))
        elif args.command == "cache-name":
            device = _read_json(args.device, "device record")
            print(timing_cache_name(device.get("gpu_arch"), device.get("tensorrt")))
        elif args.command == "stamp":
            device = _read_json(args.device, "device record")
            device_type = "GPU" if args.dla_core is None else "DLA{}".format(args.dla_core)
            write_sidecar(args.engine, device.get("tensorrt"), device.get("gpu_arch"), args.target, args.precision,
                          device_type, device.get("jetpack"), device.get("power_mode"))
        elif args.command == "check":
            device = _read_json(args.device, "device record")
            check_engine(args.engine, device.get("tensorrt"), device.get("gpu_arch"))
        elif args.command == "annotate":
            annotate(args.latency, _read_json(args.device, "device record"), args.engine)
        elif args.command == "choose":
            engines = [(engine, kind, latency, None if proof == "-" else proof) for engine, kind, latency, proof in args.engine]
            decision = choose(engines, _read_json(args.device, "device record"))
            _write_json(args.out, decision)
            print("deploy {use} on {device}: {reason}".format(**decision))
        else:
            parser.error("name a command: detect, cache-name, stamp, check, annotate or choose")
    except MismatchError as exc:
        sys.stderr.write("error: {}\n".format(exc))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
