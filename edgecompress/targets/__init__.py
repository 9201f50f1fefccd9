"""Deployment targets (policy): the one home of every fact about a board.

A :class:`~edgecompress.engine.target.Target` record says a board's GPU architecture, JetPack,
TensorRT, int8/fp16 support, DLA cores, memory, the Q/DQ layout its int8 model uses, how its engine
is built, and (derived) the highest ONNX opset it parses and which precision and ONNX it ships.
A new board is one ``register_target(Target(...))``, in one of these modules or in a user's own.
"""

from ..engine.target import Target
from .registry import TARGETS, get_target, list_targets, register_target
from . import jetson, gpu, cpu  # noqa: E402,F401  (registers the boards, in this order)

__all__ = ["TARGETS", "Target", "get_target", "list_targets", "register_target"]
