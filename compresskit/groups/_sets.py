"""Coupled channel sets as plain data, and the set algebra done on them after tracing.

A :class:`RawGroup` is one coupled set as traced (before layer-group assignment and the
numerical check of :func:`compresskit.find_groups`); each :class:`Item` is one module axis or
graph op it touches, with the indices every channel of the set occupies there. The functions
here only regroup channels, never trace: :func:`channel_units` joins root channels that reach
one index twice, :func:`merge_overlapping` joins sets that share a channel or a grouped conv,
:func:`split_into_cells` splits a set into equal-removal cells. Nothing here imports
Torch-Pruning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "FILTER_KINDS",
    "PRUNABLE_KINDS",
    "Item",
    "RawGroup",
    "by_unit",
    "channel_units",
    "merge_overlapping",
    "split_into_cells",
]

#: Item kinds whose layers own filters (weights with one row per output channel).
FILTER_KINDS = ("conv", "conv_transpose", "linear")
#: Item kinds surgery can shrink; ``"op"`` items (graph ops) only carry the index relation.
PRUNABLE_KINDS = ("conv", "conv_transpose", "linear", "bn", "prelu", "shuffle", "pool", "heads")


@dataclass
class Item:
    """One module axis (or graph op) touched by a coupled set.

    ``index`` maps each channel of the set (a *root* index) to the indices it occupies
    on this axis: one for most layers, ``H*W`` for a Linear after a flatten, none where
    a split routes the channel elsewhere.
    """

    module: str
    kind: str  # "conv", "conv_transpose", "linear", "bn", "prelu", "shuffle", "pool", "heads", "op"
    axis: str
    size: int
    index: dict[int, tuple[int, ...]]
    groups: int = 1  # > 1 only for grouped (not depthwise) convs
    tied: bool = False  # an inline shuffle's input keyed by slot: sets sharing it are merged


@dataclass
class RawGroup:
    """A coupled channel set before layer-group assignment.

    Attributes:
        root: Name of the conv/linear whose output channels the set was traced from.
        num_channels: Channels of the set (units, see :func:`channel_units`): the keys of each item's index.
        items: Every module axis / graph op the set touches.
        reason: Why the set cannot be pruned exactly; ``None`` when it may be (still checked numerically).
        protected: The set reaches a protected layer or a model output: never pruned, not reported.
        cells: Partition of ``range(num_channels)`` into exchangeable channels (:func:`split_into_cells`).
        balanced: Grouped convs / chunks: cells lose channels in proportion to their sizes.
    """

    root: str
    num_channels: int
    items: list[Item]
    reason: str | None = None
    protected: bool = False
    cells: list[list[int]] = field(default_factory=list)
    balanced: bool = False  # grouped convs / chunks: cells lose channels in proportion to their sizes


def _find(parent: list[int], i: int) -> int:
    """Root of ``i`` in the union-find forest ``parent`` (path halving)."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def channel_units(num_channels: int, items: list[Item]) -> list[list[int]]:
    """Partition the root channels into units that must be removed together.

    Two roots belong to one unit when they reach the same index of the same module axis or
    graph op: removing one without the other would either keep a channel the other one
    zeroes or remove a channel the other one still needs. Derived from the traced index
    relations (concat offsets, splits, slices, depthwise convs, residual adds), never assumed.
    """
    parent = list(range(num_channels))

    for item in items:
        owner: dict[int, int] = {}
        for root, idxs in item.index.items():
            for i in idxs:
                if i in owner:
                    parent[_find(parent, root)] = _find(parent, owner[i])
                else:
                    owner[i] = root
    units: dict[int, list[int]] = {}
    for root in range(num_channels):
        units.setdefault(_find(parent, root), []).append(root)
    return sorted(units.values())


def by_unit(items: list[Item], units: list[list[int]]) -> list[Item]:
    """Items re-keyed from root channels to units (the union of their roots' indices)."""
    out = []
    for item in items:
        index = {}
        for u, roots in enumerate(units):
            idxs = sorted({i for r in roots for i in item.index.get(r, ())})
            if idxs:
                index[u] = tuple(idxs)
        out.append(Item(item.module, item.kind, item.axis, item.size, index, item.groups, item.tied))
    return out


def merge_overlapping(groups: list[RawGroup]) -> list[RawGroup]:
    """Merge sets that share a grouped conv axis (its groups need equal removal counts) or any
    channel of a layer or op (partial overlaps, e.g. through an inline channel shuffle)."""
    parent = _union_overlapping(groups)
    clusters: dict[int, list[int]] = {}
    for g in range(len(groups)):
        clusters.setdefault(_find(parent, g), []).append(g)
    merged: list[RawGroup] = []
    for members in sorted(clusters.values()):
        if len(members) == 1:
            merged.append(groups[members[0]])
        else:
            merged.append(_combine([groups[g] for g in members]))
    return merged


def _union_overlapping(groups: list[RawGroup]) -> list[int]:
    """Union-find forest over ``groups``: sets sharing a channel slot or a partly covered grouped conv."""
    parent = list(range(len(groups)))

    owner: dict[tuple[str, str], int] = {}
    slot_owner: dict[tuple[str, str, int], int] = {}
    for g, group in enumerate(groups):
        for item in group.items:
            # sets that reach the same channel of one layer or op (or the same slot of an inline
            # shuffle's input) are one set: removing it for one would remove it for the other
            for idxs in item.index.values():
                for i in idxs:
                    slot = (item.module, item.axis, i)
                    if slot in slot_owner:
                        parent[_find(parent, g)] = _find(parent, slot_owner[slot])
                    else:
                        slot_owner[slot] = g
            if item.groups > 1:
                covered = {i for idxs in item.index.values() for i in idxs}
                if len(covered) < item.size:
                    key = (item.module, item.axis)
                    if key in owner:
                        parent[_find(parent, g)] = _find(parent, owner[key])
                    else:
                        owner[key] = g
    return parent


def _combine(members: list[RawGroup]) -> RawGroup:
    """One set from ``members``: their channels side by side, in order, then joined into units."""
    first = members[0]
    combined: dict[tuple[str, str, str], Item] = {}
    offset = 0
    reason = None
    for group in members:
        if group.reason or group.protected:
            reason = reason or (
                f"shares a grouped conv or an inline channel shuffle with {group.root}, whose channels "
                f"cannot be pruned ({group.reason or 'protected'})"
            )
        for item in group.items:
            key = (item.module, item.kind, item.axis)
            shifted = {r + offset: idxs for r, idxs in item.index.items()}
            if key in combined:
                combined[key].index.update(shifted)
            else:
                combined[key] = Item(
                    item.module, item.kind, item.axis, item.size, shifted, item.groups, item.tied
                )
        offset += group.num_channels
    items = list(combined.values())
    units = channel_units(offset, items)  # tied slots join channels of different members
    if len(units) < offset:
        items = by_unit(items, units)
    return RawGroup(first.root, len(units), items, reason)


def split_into_cells(groups: list[RawGroup]) -> list[RawGroup]:
    """Check grouped-conv coverage and split each set into equally sized cells."""
    for group in groups:
        if group.reason or group.protected or not group.items:
            continue
        roots = range(group.num_channels)
        signatures: dict[int, list[int]] = {r: [] for r in roots}
        grouped = [item for item in group.items if item.groups > 1]
        for item in grouped:
            covered = {i for idxs in item.index.values() for i in idxs}
            if len(covered) < item.size:
                group.reason = (
                    f"grouped conv or chunk {item.module} (groups={item.groups}) also reads channels "
                    f"that cannot be pruned with this set"
                )
                break
            block = item.size // item.groups
            for r in roots:
                blocks = {i // block for i in item.index.get(r, ())}
                signatures[r].append(blocks.pop() if len(blocks) == 1 else -len(blocks))
        if group.reason:
            continue
        for item in group.items:
            for r in roots:
                signatures[r].append(len(item.index.get(r, ())))
        cells: dict[tuple[int, ...], list[int]] = {}
        for r in roots:
            cells.setdefault(tuple(signatures[r]), []).append(r)
        group.cells = list(cells.values())
        sizes = sorted({len(c) for c in group.cells})
        # Each grouped conv / chunk asks for equal removal per group: homogeneous linear constraints
        # that removing *all* channels satisfies (the set covers those axes), so removing the same
        # fraction of every cell does too. That is possible in whole channels when every cell size
        # is a multiple of the smallest: k * size / smallest from each (see ChannelGroup.removal_counts).
        if grouped and any(size % sizes[0] for size in sizes):
            group.reason = (
                f"grouped convs or chunks split this set into cells of sizes {sizes}, not multiples of the "
                "smallest; a channel shuffle between grouped convs with g groups needs a multiple of g "
                "channels per group"
            )
        group.balanced = bool(grouped)
    return groups
