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
from ..profile.cpu import int8_dot_products_saturate

# Agreement with onnxruntime. A float graph agrees to rounding: max |difference| <= 1e-4 x max(1, max |output|).
# A Q/DQ graph runs in int8 on both, with different kernels and rounding, so it is compared by relative L2 error
# ||ov - ort|| / ||ort||: within 5%, or 20% on an x86 CPU without VNNI, where oneDNN's u8 x s8 int8 kernels sum
# pairs of products in 16 bits with saturation (vpmaddubsw) and lose accuracy on large activations
# (https://uxlfoundation.github.io/oneDNN/dev_guide_int8_computations.html, "Processors with the Intel AVX2 or
# Intel AVX-512 Support"); measured here on an AVX2 machine: 9-13% on a calibrated residual net, against 2.5%
# between onnxruntime's own int8 and float-emulated runs of the same graph. A broken conversion is ~100%.
FLOAT_TOLERANCE = 1e-4
QDQ_RELATIVE_L2 = 0.05
QDQ_RELATIVE_L2_WITHOUT_VNNI = 0.20


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
    outputs with onnxruntime's on seeded random input; return the IR and the worst disagreement (max difference for
    a float graph, relative L2 error for a Q/DQ one)."""
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
    qdq_bound = QDQ_RELATIVE_L2_WITHOUT_VNNI if int8_dot_products_saturate() else QDQ_RELATIVE_L2
    worst = 0.0
    for reference, candidate in zip(ours, theirs):
        reference, candidate = reference.astype(np.float64), candidate.astype(np.float64)
        if reference.shape != candidate.shape:
            raise EdgeCompressError(f"the OpenVINO IR {xml} gives an output of shape {candidate.shape}, onnxruntime "
                                    f"{reference.shape} on {onnx_path}; report it with both files")
        if qdq:
            error, bound = float(np.linalg.norm(reference - candidate) / max(np.linalg.norm(reference), 1e-12)), qdq_bound
            what = "relative L2 error"
        else:
            error = float(np.max(np.abs(reference - candidate), initial=0.0))
            bound, what = FLOAT_TOLERANCE * max(float(np.max(np.abs(reference), initial=0.0)), 1.0), "max difference"
        if error > bound:
            raise EdgeCompressError(
                f"the OpenVINO IR {xml} disagrees with onnxruntime on {onnx_path} ({what} {error:.3g} > {bound:.3g}, "
                f"input seed {seed}); report it with both files, and deploy the onnxruntime model meanwhile"
            )
        worst = max(worst, error)
    return xml, worst
