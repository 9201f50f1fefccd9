"""A user's profiling runtime: one module (its runner factory), one registration.

It times onnxruntime with graph optimisations switched off, a baseline for what the optimiser buys.
"""

import onnxruntime as ort

from edgecompress.profile import register_runtime
from edgecompress.profile.runtimes import INPUT_DTYPES, random_input


def unoptimised_runner(model, shape, threads, seed):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    feed = {first.name: random_input(shape, INPUT_DTYPES[first.type], seed)}
    return lambda: session.run(None, feed)


register_runtime("onnxruntime-unoptimised", f"{__name__}:unoptimised_runner", package="onnxruntime")
