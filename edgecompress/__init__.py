"""edgecompress: prune, quantize and deploy CNNs to edge hardware.

Python API (the CLI is a thin layer over it)::

    import edgecompress as ec
    run_dir = ec.build(target="jetson-orin-nano")            # the whole pipeline
    small = ec.prune(model, example_input, ratio=0.5)        # structural channel pruning
    small = ec.prune(model, example_input, target_macs=0.5)  # ... or half the MACs
    ec.model_stats(small, example_input)                     # params and MACs
    int8 = ec.quantize(small, calib_loader, method="percentile")
    ec.export_onnx(int8, example_input, "model.onnx", int8=True)
    ec.build_engine("model.onnx", "jetson-orin-nano", "engine/")  # engine here, or a bundle for the device
    ec.save_model(small, "pruned.pt"); ec.load_model("pruned.pt")
"""

from importlib import import_module

from .errors import EdgeCompressError

# `prune` and `quantize` are both a subpackage and a function. Importing the function here, once,
# binds the name to the function for good: Python sets a package attribute to its subpackage only
# when the subpackage is first loaded, which happens on this line.
from .prune import prune  # noqa: E402  (after the errors module it depends on)
from .quant import quantize  # noqa: E402

# Other public names -> module defining them; they load on first use.
_API = {
    "build": ".pipeline",
    "BuildConfig": ".pipeline",
    "load_model": ".artifacts",
    "save_model": ".artifacts",
    "model_stats": ".stats",
    "ModelStats": ".stats",
    "export_onnx": ".export",
    "build_engine": ".targets.deploy",
}

__all__ = ["EdgeCompressError", "prune", "quantize", *_API]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'edgecompress' has no attribute {name!r}")
    return getattr(import_module(_API[name], __name__), name)
