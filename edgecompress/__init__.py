"""edgecompress: prune, quantize and deploy CNNs to edge hardware.

Python API (the CLI is a thin layer over it)::

    import edgecompress as ec
    run_dir = ec.build(target="jetson-orin-nano")          # the whole pipeline
    small = ec.prune(model, example_input, ratio=0.5)      # structural channel pruning
    ec.model_stats(small, example_input)                   # params and MACs
    ec.save_model(small, "pruned.pt"); ec.load_model("pruned.pt")
"""

from importlib import import_module

from .errors import EdgeCompressError

# Public name -> module defining it; modules load on first use so `import edgecompress` stays fast.
_API = {
    "build": ".pipeline",
    "BuildConfig": ".pipeline",
    "load_model": ".artifacts",
    "save_model": ".artifacts",
    "model_stats": ".stats",
    "ModelStats": ".stats",
    "prune": ".prune",
    "export_onnx": ".export",
}

__all__ = ["EdgeCompressError", *_API]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'edgecompress' has no attribute {name!r}")
    return getattr(import_module(_API[name], __name__), name)
