"""State of one channel analysis: channel atoms, the union-find that couples them, and their users.

Every channel index of every traced tensor is an *atom*. Ops that tie two channels together (a
residual add, a depthwise conv) unify their atoms; layers record which of their weight indices read
or write an atom (a *member*). Atoms that must keep their channel are *blocked*, with a reason.
"""

from __future__ import annotations

import math
from enum import Enum

from torch import nn
from torch.fx import Node
from torch.fx.passes.shape_prop import TensorMetadata

from .index_mapping import Layout


class Role(str, Enum):
    """How a layer touches a channel; ``dims`` names the layer dimensions that surgery slices."""

    CONV_OUT = "conv-out"
    CONV_IN = "conv-in"
    DEPTHWISE = "depthwise"
    BN = "bn"
    NORM = "norm"  # GroupNorm / LayerNorm over channels: per-channel affine, statistics over several channels
    LINEAR_OUT = "linear-out"
    LINEAR_IN = "linear-in"
    CHANNELWISE = "channel-wise"  # per-channel parameters of a custom layer (a learned scale, ...)

    @property
    def dims(self) -> tuple[str, ...]:
        return _ROLE_DIMS[self]

    @property
    def produces(self) -> bool:
        """Whether the layer computes the channel (so removing it saves work and has a filter to score)."""
        return self in (Role.CONV_OUT, Role.LINEAR_OUT)


_ROLE_DIMS = {
    Role.CONV_OUT: ("out",),
    Role.CONV_IN: ("in",),
    Role.DEPTHWISE: ("out", "in"),
    Role.BN: ("out",),
    Role.NORM: ("out",),
    Role.LINEAR_OUT: ("out",),
    Role.LINEAR_IN: ("in",),
    Role.CHANNELWISE: ("out",),
}

LayerDim = tuple[str, Role]  # (module qualified name, role): one dimension of one layer


class AnalysisContext:
    """Union-find over channel atoms plus the layout of every traced tensor."""

    def __init__(self, modules: dict[str, nn.Module], ignore: frozenset[str], opaque: dict[str, str] | None = None):
        self.modules = modules
        self.ignore = ignore
        self.opaque = opaque or {}  # untraceable submodule -> why it is kept whole
        self.layouts: dict[Node, Layout] = {}
        self.pieces: dict[Node, list[Layout]] = {}  # layouts of the tensors in a tuple output (split, chunk)
        self.members: dict[LayerDim, list[int]] = {}  # layer dimension -> the atom each of its indices carries
        self.notes: list[str] = []
        self._parent: list[int] = []
        self._blocked: dict[int, str] = {}  # root atom -> why its channel must stay

    # -- atoms ---------------------------------------------------------------------------------
    def new_atoms(self, count: int, blocked: str | None = None) -> Layout:
        """Fresh, independent atoms; ``blocked`` gives the reason when they can never be pruned."""
        start = len(self._parent)
        self._parent.extend(range(start, start + count))
        atoms = list(range(start, start + count))
        if blocked is not None:
            self._blocked.update((atom, blocked) for atom in atoms)
        return atoms

    def find(self, atom: int) -> int:
        parent = self._parent
        while parent[atom] != atom:
            parent[atom] = parent[parent[atom]]
            atom = parent[atom]
        return atom

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a == root_b:
            return
        self._parent[root_b] = root_a
        if root_b in self._blocked:
            self._blocked.setdefault(root_a, self._blocked[root_b])
            del self._blocked[root_b]

    def unify(self, a: Layout, b: Layout) -> Layout:
        """Tie channel i of ``a`` to channel i of ``b`` (same-channel elementwise ops)."""
        for atom_a, atom_b in zip(a, b, strict=True):
            self.union(atom_a, atom_b)
        return a

    def tie_groups(self, layout: Layout, groups: int) -> None:
        """Tie channel i of every one of ``groups`` equal slices to channel i of the first, so cuts
        stay identical in every slice (grouped convs and chunks need equal-sized slices)."""
        per = len(layout) // groups
        for start in range(per, len(layout), per):
            self.unify(layout[:per], layout[start : start + per])

    def block(self, layout: Layout, reason: str) -> None:
        for atom in layout:
            self._blocked.setdefault(self.find(atom), reason)

    def blocked_reason(self, atom: int) -> str | None:
        return self._blocked.get(self.find(atom))

    def roots(self) -> list[int]:
        """Root atom of every atom, in atom order (one pass instead of a find per lookup)."""
        return [self.find(atom) for atom in range(len(self._parent))]

    def add_members(self, layout: Layout, module: str, role: Role) -> None:
        """Record that index i of ``module``'s ``role`` dimension carries ``layout[i]``.

        A module called twice shares its weights, so the atoms of the second call are unified with
        those of the first.
        """
        known = self.members.setdefault((module, role), [])
        for atom, first in zip(layout, known):
            self.union(atom, first)
        known.extend(layout[len(known) :])

    # -- tensors -------------------------------------------------------------------------------
    def shape(self, arg: object) -> tuple[int, ...] | None:
        """Shape of a traced tensor from the shape pass; None for non-tensors."""
        meta = arg.meta.get("tensor_meta") if isinstance(arg, Node) else None
        return tuple(meta.shape) if isinstance(meta, TensorMetadata) else None

    def has_channels(self, arg: object) -> bool:
        shape = self.shape(arg)
        return shape is not None and len(shape) >= 2

    def channels(self, arg: Node) -> Layout:
        """Layout of a tensor with a channel dim; untracked tensors (constants) get blocked atoms."""
        if arg not in self.layouts:
            shape = self.shape(arg)
            if shape is None or len(shape) < 2:
                raise ValueError(f"{arg.name} has no channel dimension")
            self.layouts[arg] = self.new_atoms(shape[1], blocked=f"{arg.name} is a constant or untracked tensor")
        return self.layouts[arg]

    def channel_inputs(self, node: Node) -> list[Node]:
        return [arg for arg in node.all_input_nodes if self.has_channels(arg)]

    def module(self, node: Node) -> nn.Module:
        return self.modules[str(node.target)]

    def where(self, node: Node) -> str:
        """Qualified path of the module whose forward runs ``node`` ('' for the model's own forward)."""
        if node.op == "call_module":
            return str(node.target)
        stack = node.meta.get("nn_module_stack") or {}
        return next(reversed(stack.values()))[0] if stack else ""

    def spatial_size(self, arg: Node) -> int:
        shape = self.shape(arg)
        return math.prod(shape[2:]) if shape else 1
