"""edgecompress: prune, quantize and deploy CNNs to edge hardware.

Python API (the CLI is a thin layer over it)::

    import edgecompress as ec
    run_dir = ec.build(target="jetson-orin-nano")          # the whole pipeline
    small = ec.prune(model, example_input, ratio=0.5)      # structural channel pruning
    ec.model_stats(small, example_input)                   # params and MACs
    ec.save_model(small, "pruned.pt"); ec.load_model("pruned.pt")
"""

from .artifacts import load_model, save_model
from .errors import EdgeCompressError
from .pipeline import BuildConfig, build
from .stats import ModelStats, model_stats

__all__ = ["build", "BuildConfig", "EdgeCompressError", "load_model", "save_model", "model_stats", "ModelStats", "prune", "export_onnx"]


def __getattr__(name: str):
    """Load the heavier stage APIs on first use, so `import edgecompress` stays fast."""
    if name == "prune":
        from .prune import prune

        return prune
    if name == "export_onnx":
        from .export import export_onnx

        return export_onnx
    raise AttributeError(f"module 'edgecompress' has no attribute {name!r}")
