"""Index mapping of channel layouts through ops that move channels around (concat, flatten, split).

A *layout* lists, for every index of a tensor's channel dimension (dim 1), the id of the channel
atom living there. Ops that only pass channels through keep the layout; the functions here build
the layout of ops that shift or repeat channel indices, so the offsets live in one place.
"""

from __future__ import annotations

from typing import Sequence

Layout = list[int]


def concat(layouts: Sequence[Layout]) -> Layout:
    """Layout of ``torch.cat(tensors, dim=1)``: input k's channel i lands at offset_k + i."""
    return [atom for layout in layouts for atom in layout]


def flatten(layout: Layout, spatial: int) -> Layout:
    """Layout of flattening (N, C, *S) to (N, C * prod(S)): channel c becomes features c*S .. c*S+S-1."""
    return [atom for atom in layout for _ in range(spatial)]


def split(layout: Layout, sizes: Sequence[int]) -> list[Layout]:
    """Layouts of ``torch.split(x, sizes, dim=1)``: piece k is the index range [offset_k, offset_k + sizes[k])."""
    offsets = [sum(sizes[:k]) for k in range(len(sizes) + 1)]
    return [layout[start:stop] for start, stop in zip(offsets, offsets[1:])]

