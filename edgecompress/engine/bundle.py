"""Deployment bundle: what we ship when the engine cannot be built here (wrong GPU or no TensorRT).

A TensorRT engine only runs on the GPU architecture and TensorRT version that built it, so for another device we
ship the ONNX and a ``build_engine.sh`` that, on the device: records the device (TensorRT, GPU, JetPack, power mode)
and refuses one the bundle was not made for; builds with a timing cache per GPU and TensorRT release and exports the
layer information; proves every Q/DQ layer runs in int8 (``int8_proof.py``); profiles with trtexec's JSON exports and
turns them into an ``edgecompress.latency/1`` report (``trtexec_reports.py``); and on a board with DLA also builds and
times a DLA engine and writes which of the two to use (``deployment.json``): a DLA engine whose layers fall back to
the GPU can be several times slower than the GPU alone. The helper scripts are standard-library Python that runs on
the device's own python3 (3.6 on JetPack 4).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from dataclasses import asdict
from pathlib import Path

import onnx

from ..artifacts import atomic_path, write_text
from ..errors import EdgeCompressError
from .qdq_nodes import write_qdq_nodes
from .target import Target
from .trtexec import autocast_command, autocast_path, profile_command, recipe_for, static_shapes, trtexec_command

ONNX_NAME = "model.onnx"
ENGINE_NAME = "model.engine"
QDQ_NAME = "qdq_nodes.json"
# Standard-library modules of this package the script runs on the device, copied into the bundle.
DEVICE_SCRIPTS = ("engine_meta.py", "int8_proof.py", "trtexec_reports.py")
CACHE = "$CACHE"  # the timing-cache path, chosen on the device once its TensorRT release is known


SHELL_VARIABLE = re.compile(r"(--[\w-]+=)?(\$\w+)")


def shell_line(command: list[str]) -> str:
    """Render a command for a script: trtexec from $TRTEXEC (JetPack keeps it off PATH), python3 from $PYTHON, and
    a word that is a shell variable (``$CACHE``, or a flag's value: ``--timingCacheFile=$CACHE``) expanded, quoted."""
    words = [f'{found.group(1) or ""}"{found.group(2)}"' if (found := SHELL_VARIABLE.fullmatch(word)) else shlex.quote(word)
             for word in command[1:]]
    head = {"trtexec": '"$TRTEXEC"', "python3": '"$PYTHON"'}.get(command[0], shlex.quote(command[0]))
    return " ".join([head, *words])


def is_fp16_onnx(onnx_path: Path) -> bool:
    """Whether the ONNX already stores fp16 weights (an fp16 export needs no AutoCast on the device)."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)


def _suffix(dla_core: int | None) -> str:
    return "" if dla_core is None else f"_dla{dla_core}"


def engine_steps(
    target: Target, precision: str, dla_core: int | None, shapes: str | None, fp16_onnx: bool, workspace_mib: int | None
) -> list[list[str]]:
    """Build, stamp, prove, check, profile and report one engine (GPU-only, or on DLA core ``dla_core``)."""
    suffix = _suffix(dla_core)
    engine, layers = f"model{suffix}.engine", f"layers{suffix}.json"
    latency, proof = f"latency{suffix}.json", f"int8_proof{suffix}.json"
    times, profile = f"times{suffix}.json", f"profile{suffix}.json"
    core = [] if dla_core is None else ["--dla-core", str(dla_core)]
    timing = profile_command(engine, target=target, times=times, profile=profile, dla_core=dla_core)
    warmup_ms = next(word.split("=")[1] for word in timing if word.startswith("--warmUp="))
    return [
        trtexec_command(target, ONNX_NAME, engine, precision=precision, dla_core=dla_core, shapes=shapes,
                        fp16_onnx=fp16_onnx, workspace_mib=workspace_mib, timing_cache=CACHE, layer_info=layers,
                        build_only=True),
        ["python3", "engine_meta.py", "stamp", engine, "--device", "device.json", "--target", target.name,
         "--precision", precision, *core],
        ["python3", "int8_proof.py", "--layers", layers, "--qdq", QDQ_NAME, *(["--dla"] if core else []), "--out", proof],
        ["python3", "engine_meta.py", "check", engine, "--device", "device.json"],
        timing,
        ["python3", "trtexec_reports.py", "--times", times, "--profile", profile, "--layers", layers, "--out", latency,
         "--model", ONNX_NAME, "--warmup-ms", warmup_ms],
        ["python3", "engine_meta.py", "annotate", latency, "--device", "device.json", "--engine", engine],
    ]


def bundle_steps(
    target: Target, precision: str, dla_core: int | None = None, shapes: str | None = None, fp16_onnx: bool = False,
    workspace_mib: int | None = None,
) -> list[list[str]]:
    """Commands run on the device, in order: device check, (AutoCast on TensorRT 11 fp16 from a float ONNX), the
    GPU-only engine, on a DLA board the DLA engine (core ``dla_core``, default 0), and the choice between them."""
    steps = [["python3", "engine_meta.py", "detect", "--out", "device.json", "--expect-tensorrt", str(target.tensorrt),
              "--expect-arch", str(target.gpu_arch), "--target", target.name]]
    if precision == "fp16" and recipe_for(target).fp16_needs_autocast and not fp16_onnx:
        steps.append(autocast_command(ONNX_NAME, autocast_path(ONNX_NAME)))
    engines = [None] + ([dla_core if dla_core is not None else 0] if target.dla_cores else [])
    choose = ["python3", "engine_meta.py", "choose"]
    for core in engines:
        steps += engine_steps(target, precision, core, shapes, fp16_onnx, workspace_mib)
        suffix = _suffix(core)
        choose += ["--engine", f"model{suffix}.engine", "GPU" if core is None else f"DLA{core}", f"latency{suffix}.json",
                   f"int8_proof{suffix}.json"]
    steps.append([*choose, "--device", "device.json", "--out", "deployment.json"])
    return steps


def build_script(target: Target, precision: str, steps: list[list[str]]) -> str:
    """A bash script that stops at the first failing step (a DLA engine's failed int8 proof only disqualifies it)."""
    lines = [
        "#!/usr/bin/env bash",
        f"# Build, prove and profile the {precision} TensorRT engine for {target.name} "
        f"(TensorRT {target.tensorrt}, {target.gpu_arch}). Generated by edgecompress; run it on the device.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        'TRTEXEC="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"',
        '[ -x "$TRTEXEC" ] || { echo "trtexec not found; set TRTEXEC=/path/to/trtexec" >&2; exit 1; }',
        'PYTHON="${PYTHON:-python3}"',
    ]
    for step in steps:
        line = shell_line(step)
        if step[:3] == ["python3", "engine_meta.py", "detect"]:
            lines.append(line + ' --trtexec "$TRTEXEC"')
            lines += ["mkdir -p timing-cache", 'CACHE="timing-cache/$("$PYTHON" engine_meta.py cache-name --device device.json)"']
        elif step[:2] == ["python3", "int8_proof.py"] and "--dla" in step:
            lines.append(line + ' || echo "the DLA engine is not all int8 (see the lines above): it will not be chosen" >&2')
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def readme(target: Target, precision: str, steps: list[list[str]], reason: str) -> str:
    """How to use the bundle on the device, and why the engine was not built here."""
    jetpack = f"JetPack {target.jetpack}, " if target.jetpack else ""
    commands = "\n".join(shlex.join(step) for step in steps)
    dla = (f"\n- DLA: the script also builds `model_dla0.engine` (layers the DLA cannot run fall back to the GPU), "
           "proves and times it, and `deployment.json` names the faster engine whose int8 proof passed: DLA is not "
           "assumed faster (fallback transfers can make it several times slower than the GPU alone)."
           if target.dla_cores else "")
    return f"""# {target.name} deployment bundle ({precision})

{target.description}. Expected software: {jetpack}TensorRT {target.tensorrt}, GPU {target.gpu_arch}.

## Why there is no engine in this folder

{reason} A TensorRT engine is specific to the GPU architecture and the TensorRT version that built it, so it must
be built on the device (or on a machine with the same GPU and the same JetPack/TensorRT).

## Run on the device

```bash
./build_engine.sh            # builds {ENGINE_NAME}, proves its int8 layers, times it with trtexec
TRTEXEC=/usr/src/tensorrt/bin/trtexec ./build_engine.sh   # if trtexec is not on PATH
```

It writes `device.json` (TensorRT, GPU, JetPack, power mode), `{ENGINE_NAME}` with `{ENGINE_NAME}.json` (which
TensorRT and GPU built it; every later step refuses an engine built elsewhere), `layers.json` (the engine's layer
information), `int8_proof.json`, `times.json`/`profile.json` (trtexec's exports), `latency.json`
(edgecompress.latency/1) and `deployment.json` (the engine to use). The timing cache in `timing-cache/` is kept per
GPU and TensorRT release, so a rebuild skips the tactic timing. The script runs, and stops at the first error:

```
{commands}
```

## Notes

- {target.notes or "None."}
- Precision {precision}: {"int8 comes from the Q/DQ nodes in the ONNX (explicit quantization); `int8_proof.py` fails "
    "the build, one line per layer, when a layer that carries Q/DQ did not run in int8."
    if precision == "int8" else "the ONNX is float; TensorRT picks fp16 kernels." if precision == "fp16"
    else "full fp32."}
- Workspace: {target.workspace_mib} MiB by default (an eighth of the board's {target.memory_gb:g} GB, which CPU and GPU share).{dla}
"""


def write_script(path: Path, text: str) -> Path:
    """Atomic write of an executable script."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
        tmp.chmod(0o755)
    return path


def copy_file(source: Path, destination: Path) -> Path:
    with atomic_path(destination) as tmp:
        shutil.copyfile(source, tmp)
    return destination


def write_bundle(
    target: Target,
    onnx_path: Path,
    out_dir: Path,
    *,
    precision: str,
    reason: str,
    dla_core: int | None = None,
    workspace_mib: int | None = None,
) -> tuple[dict[str, Path], list[str]]:
    """Write the bundle folder; return the paths written and the trtexec build command of the engine asked for
    (the DLA one with ``dla_core``, else the GPU-only one)."""
    here = Path(__file__).parent
    missing = [name for name in DEVICE_SCRIPTS if not (here / name).is_file()]
    if missing:
        raise EdgeCompressError(f"edgecompress is missing {', '.join(missing)} in {here}; reinstall edgecompress")
    steps = bundle_steps(target, precision, dla_core, static_shapes(onnx_path), fp16_onnx=is_fp16_onnx(onnx_path),
                         workspace_mib=workspace_mib)
    builds = [step for step in steps if step[0] == "trtexec" and any(arg.startswith("--saveEngine=") for arg in step)]
    wanted = f"--useDLACore={dla_core}"
    build_command = next((step for step in builds if dla_core is None or wanted in step), builds[0])
    manifest = {"target": asdict(target), "precision": precision, "steps": steps, "reason": reason,
                "workspace_mib": workspace_mib or target.workspace_mib}
    paths = {
        "onnx": copy_file(onnx_path, out_dir / ONNX_NAME),
        "qdq_nodes": write_qdq_nodes(onnx_path, out_dir / QDQ_NAME),
        **{name.removesuffix(".py"): copy_file(here / name, out_dir / name) for name in DEVICE_SCRIPTS},
        "script": write_script(out_dir / "build_engine.sh", build_script(target, precision, steps)),
        "readme": write_text(out_dir / "README.md", readme(target, precision, steps, reason)),
        "manifest": write_text(out_dir / "bundle.json", json.dumps(manifest, indent=2) + "\n"),
    }
    return paths, build_command
