"""docs/BUNDLES.md shows the ``build_engine.sh`` that the bundles of four boards run on the device (Nano: TensorRT 8.2
fp16; Orin Nano and AGX Orin: TensorRT 10.3 int8, the AGX with its DLA; AGX Thor on TensorRT 11); this test keeps the
page equal to what the code writes. Regenerate it with
``UPDATE_BUNDLE_DOCS=1 .venv/bin/python -m pytest tests/engine/test_bundle_docs.py``."""

from __future__ import annotations

import os
from pathlib import Path

from edgecompress.engine import build_engine
from edgecompress.targets import get_target

DOC = Path(__file__).resolve().parents[2] / "docs" / "BUNDLES.md"
BOARDS = (("jetson-nano", "fp16"), ("jetson-orin-nano", "int8"), ("jetson-agx-orin", "int8"), ("jetson-agx-thor-trt11", "int8"))


def render(float_onnx: Path, int8_onnx: Path, folder: Path) -> str:
    """The page: per board, its facts and the script its bundle holds."""
    parts = [
        "# The deployment bundles' device scripts\n",
        "What `edgecompress build --target T` (or `edgecompress engine MODEL.onnx --target T`) writes to `engine/` for four "
        "boards, generated from a small test model exported as the build exports (input `images`, 3x32x32, a dynamic batch "
        "that `--minShapes/--optShapes/--maxShapes` pin to 1; your model's name and size appear there). Run `./build_engine.sh` on the device; it stops at the "
        "first failing step. `tests/engine/test_bundle_docs.py` keeps this page equal to what the code writes, and "
        "`tests/engine/test_bundle_device_flow.py` runs each script against a stand-in `trtexec`.\n",
    ]
    for name, precision in BOARDS:
        target = get_target(name)
        result = build_engine(target, int8_onnx if precision == "int8" else float_onnx, folder / name, precision=precision)
        script = result.paths["script"].read_text()
        parts.append(f"## {name}: {precision}, TensorRT {target.tensorrt} ({target.gpu_arch}, JetPack {target.jetpack}, "
                     f"{target.dla_cores} DLA)\n\n```bash\n{script}```\n")
    return "\n".join(parts)


def test_bundle_scripts_page_matches_the_code(residual_float_onnx: Path, residual_int8_onnx: Path, tmp_path: Path) -> None:
    text = render(residual_float_onnx, residual_int8_onnx, tmp_path)
    if os.environ.get("UPDATE_BUNDLE_DOCS"):
        DOC.write_text(text)
    assert DOC.is_file() and DOC.read_text() == text, (
        "docs/BUNDLES.md differs from the bundles the code writes: "
        "UPDATE_BUNDLE_DOCS=1 .venv/bin/python -m pytest tests/engine/test_bundle_docs.py")
