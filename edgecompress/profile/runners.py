"""The built-in runner factories: onnxruntime's CPU and CUDA providers and OpenVINO's CPU plugin (see :mod:`.runtimes`)."""

from __future__ import annotations

import numpy as np

from .runtimes import INPUT_DTYPES, Runner, random_input

CUDA_PROVIDER = "CUDAExecutionProvider"
CUDA_FIX = ("pip uninstall onnxruntime && pip install onnxruntime-gpu (a build matching this machine's CUDA and cuDNN: "
            "https://onnxruntime.ai/docs/install/), or profile with --device cpu")


def onnxruntime_runner(model: str, shape: tuple[int, ...], threads: int | None, seed: int) -> Runner:
    """A closure running ``model`` on onnxruntime's CPU provider with seeded input of ``shape``."""
    return _onnxruntime_session_runner(model, shape, threads, seed, ["CPUExecutionProvider"])


def onnxruntime_cuda_runner(model: str, shape: tuple[int, ...], threads: int | None, seed: int) -> Runner:
    """A closure running ``model`` on onnxruntime's CUDA provider (GPU 0); each run copies the input in and the outputs back,
    so its time is the host's view (https://onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html)."""
    import onnxruntime as ort

    if CUDA_PROVIDER not in ort.get_available_providers():
        raise SystemExit(f"onnxruntime {ort.__version__} here has no {CUDA_PROVIDER}; {CUDA_FIX}")
    return _onnxruntime_session_runner(model, shape, threads, seed, [(CUDA_PROVIDER, {"device_id": 0})])


def _onnxruntime_session_runner(model: str, shape: tuple[int, ...], threads: int | None, seed: int, providers: list) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=providers)
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].type not in INPUT_DTYPES:
        raise SystemExit(f"profiling needs one float input; {model} has {[(i.name, i.type) for i in inputs]}")
    feed = {inputs[0].name: random_input(shape, INPUT_DTYPES[inputs[0].type], seed)}
    return lambda: session.run(None, feed)


def openvino_runner(model: str, shape: tuple[int, ...], threads: int | None, seed: int) -> Runner:
    """A closure running ``model`` compiled by OpenVINO's CPU plugin for ``shape`` (fp32 precision hint)."""
    try:
        import openvino as ov
    except ImportError:
        raise SystemExit("openvino is not installed; pip install 'edgecompress[openvino]' to profile with it") from None
    core = ov.Core()
    network = core.read_model(model)
    if len(network.inputs) != 1 or not network.input().get_element_type().is_real():
        raise SystemExit(f"profiling needs one float input; {model} has {[str(i) for i in network.inputs]}")
    network.reshape({network.input(): ov.PartialShape(list(shape))})
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
    request = core.compile_model(network, "CPU", config).create_infer_request()
    dtype = np.float16 if network.input().get_element_type() == ov.Type.f16 else np.float32
    feed = random_input(shape, dtype, seed)
    return lambda: request.infer({0: feed})
