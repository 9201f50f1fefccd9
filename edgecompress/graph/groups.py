"""Channel groups: the channels that must be pruned together, and every layer index they touch."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

import torch

from .context import AnalysisContext, LayerDim, Role


@dataclass(frozen=True)
class ChannelMember:
    """One layer dimension of a group: group channel i is index ``indices[i]`` of ``module``'s
    ``role`` dimension (several indices when a flatten spreads one channel over H*W features,
    offset indices behind a concat)."""

    module: str
    role: Role
    indices: tuple[tuple[int, ...], ...]

    def select(self, channels: Iterable[int]) -> list[int]:
        """This layer's indices for the given group channels."""
        return sorted(index for channel in channels for index in self.indices[channel])


@dataclass(frozen=True)
class ChannelGroup:
    """Channels coupled by the graph: removing group channel i removes it from every member."""

    id: int
    size: int
    members: tuple[ChannelMember, ...]
    blocked_reason: str = ""  # why the group cannot be pruned; empty when it can

    @property
    def prunable(self) -> bool:
        return not self.blocked_reason

    def members_with(self, *roles: Role) -> list[ChannelMember]:
        return [member for member in self.members if member.role in roles]


@dataclass(frozen=True)
class ChannelGraph:
    """Result of the analysis: every channel group plus what the pruned model must still accept and return."""

    groups: tuple[ChannelGroup, ...]
    input_shape: tuple[int, ...]
    input_dtype: torch.dtype
    output_shapes: tuple[tuple[int, ...], ...]
    notes: tuple[str, ...]  # ops handled conservatively (their channels kept)
    layer_macs: dict[str, int] = field(default_factory=dict)  # conv/linear module -> MACs on the example input
    ignored: frozenset[str] = frozenset()  # the modules the analysis was told to keep whole

    @property
    def prunable_groups(self) -> list[ChannelGroup]:
        return [group for group in self.groups if group.prunable]


def build_groups(ctx: AnalysisContext, module_order: dict[str, int]) -> tuple[ChannelGroup, ...]:
    """Collect atoms into groups: atoms touching the same layer dimensions (and equally blocked)
    form one group, ordered by their index in the group's first member."""
    root_of = ctx.roots()
    touched: dict[int, dict[LayerDim, list[int]]] = defaultdict(dict)  # root -> layer dim -> its indices, ascending
    for dim, atoms in ctx.members.items():
        for index, atom in enumerate(atoms):
            touched[root_of[atom]].setdefault(dim, []).append(index)
    reason_of = {root: ctx.blocked_reason(root) for root in touched}
    buckets: dict[tuple[frozenset, bool], list[int]] = defaultdict(list)
    for root, dims in touched.items():
        buckets[(frozenset(dims), reason_of[root] is not None)].append(root)

    def layer_order(key: LayerDim) -> tuple[int, str]:
        return module_order[key[0]], key[1].value

    groups: list[ChannelGroup] = []
    for (dims, _), roots in sorted(buckets.items(), key=lambda item: min(map(layer_order, item[0][0]))):
        keys = sorted(dims, key=layer_order)
        roots.sort(key=lambda root: touched[root][keys[0]][0])
        members = tuple(ChannelMember(module, role, tuple(tuple(touched[root][(module, role)]) for root in roots)) for module, role in keys)
        reason = next((reason_of[root] for root in roots if reason_of[root]), "")
        if not reason and not any(role.produces for _, role in keys):
            reason = "no conv or linear layer produces these channels"
        groups.append(ChannelGroup(len(groups), len(roots), members, reason))
    return tuple(groups)
