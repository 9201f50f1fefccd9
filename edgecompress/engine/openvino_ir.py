"""The CPU target's OpenVINO IR: ``openvino.convert_model`` of the ONNX, saved without fp16 compression, then loaded
and checked against onnxruntime on fresh random input.

``save_model(..., compress_to_fp16=False)`` keeps the weights as they are: its default halves float weights to fp16
(https://docs.openvino.ai/2025/openvino-workflow/model-preparation/conversion-parameters.html#compression-of-a-model-to-fp16),
which is a change of model this stage must not make silently. Only when the ``openvino`` package is installed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..artifacts import atomic_dir
from ..errors import EdgeCompressError

# Agreement with onnxruntime: float graphs agree to rounding; a Q/DQ graph may differ by a few quantization steps
# (OpenVINO runs the int8 layers with its own kernels, onnxruntime emulates them), so its bound scales with the output.
FLOAT_TOLERANCE = 1e-4
QDQ_RELATIVE_TOLERANCE = 0.05


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def _random_feed(model_path: Path, seed: int) -> dict[str, np.ndarray]:
    """Seeded standard-normal input for every graph input, dynamic dimensions set to 1."""
    import onnx
    from onnx import helper

    graph = onnx.load(str(model_path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    rng = np.random.default_rng(seed)
    feed = {}
    for value in graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        shape = [dim.dim_value if dim.HasField("dim_value") else 1 for dim in tensor.shape.dim]
        feed[value.name] = rng.standard_normal(shape).astype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
    return feed


def write_openvino_ir(onnx_path: Path, folder: Path, stem: str, *, qdq: bool, seed: int) -> tuple[Path, float]:
    """Convert ``onnx_path`` to ``folder/stem.xml`` (+ ``.bin``), load it on OpenVINO's CPU plugin and compare its
    outputs with onnxruntime's on seeded random input; return the IR and the largest absolute difference."""
    import onnxruntime as ort
    import openvino as ov

    with atomic_dir(folder) as tmp:
        ov.save_model(ov.convert_model(str(onnx_path)), str(tmp / f"{stem}.xml"), compress_to_fp16=False)
    xml = folder / f"{stem}.xml"
    feed = _random_feed(onnx_path, seed)
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    results = compiled(feed)
    theirs = [np.asarray(results[output]) for output in compiled.outputs]
    ours = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, feed)
    worst = 0.0
    for reference, candidate in zip(ours, theirs):
        difference = float(np.max(np.abs(reference.astype(np.float64) - candidate.astype(np.float64)), initial=0.0))
        scale = float(np.max(np.abs(reference), initial=0.0))
        bound = QDQ_RELATIVE_TOLERANCE * max(scale, 1.0) if qdq else FLOAT_TOLERANCE * max(scale, 1.0)
        if reference.shape != candidate.shape or difference > bound:
            raise EdgeCompressError(
                f"the OpenVINO IR {xml} disagrees with onnxruntime on {onnx_path} (max difference {difference:.3g} > "
                f"{bound:.3g}, input seed {seed}); report it with both files, and deploy the onnxruntime model meanwhile"
            )
        worst = max(worst, difference)
    return xml, worst
