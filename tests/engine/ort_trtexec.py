"""A stand-in for trtexec in the latency-bundle tests, on machines without TensorRT: it times the ``--onnx`` model
for real, in onnxruntime on this CPU, and writes the per-inference records of trtexec's ``--exportTimes`` file with
``computeMs`` = each measured inference (no transfers, as TensorRT 11 writes them). So the bundle's script, its
collector and the import run on real measured numbers; they are CPU numbers, not a GPU's.

As trtexec: ``--warmUp=MS`` of untimed inferences first (the records' clock starts before them, so their times are
past the warm-up, as trtexec's are), then ``--iterations=N`` timed ones (``--duration=0``). Other flags (precision,
workspace, timing cache) are recorded, not used. It prints no TensorRT banner: it is not TensorRT.

Environment: ``FAKE_TRTEXEC_LOG``, a file that gets one JSON line of argv per call.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    if os.environ.get("FAKE_TRTEXEC_LOG"):
        with open(os.environ["FAKE_TRTEXEC_LOG"], "a") as log:
            log.write(json.dumps(argv) + "\n")
    flags = dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)
    if "onnx" not in flags:
        print("usage: trtexec --onnx=MODEL [options] (a stand-in that times in onnxruntime)")
        return 0
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(flags["onnx"], options, providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    dtype = np.float16 if first.type == "tensor(float16)" else np.float32
    feed = {first.name: np.random.default_rng(0).standard_normal(first.shape).astype(dtype)}
    start = time.perf_counter()

    def now_ms() -> float:
        return (time.perf_counter() - start) * 1e3

    warmup_ms = float(flags.get("warmUp", 200))
    while True:
        session.run(None, feed)
        if now_ms() >= warmup_ms:
            break
    records = []
    for _ in range(int(flags.get("iterations", 10))):
        begin = now_ms()
        session.run(None, feed)
        end = now_ms()
        records.append({"startEnqMs": begin, "endEnqMs": end, "startH2dMs": begin, "endH2dMs": begin, "startComputeMs": begin,
                        "endComputeMs": end, "startD2hMs": end, "endD2hMs": end, "h2dMs": 0.0, "computeMs": end - begin,
                        "d2hMs": 0.0, "latencyMs": end - begin})
    if "exportTimes" in flags:
        with open(flags["exportTimes"], "w") as handle:
            json.dump(records, handle)
    print(f"GPU Compute Time: median = {sorted(r['computeMs'] for r in records)[len(records) // 2]:.5f} ms (onnxruntime stand-in)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
