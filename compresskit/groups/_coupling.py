"""One coupled channel set traced on the dependency graph, converted to a :class:`RawGroup`.

:func:`coupled_set` follows every dependency from all output channels of one conv/linear, the
way Torch-Pruning's ``get_pruning_group`` does, but safely: it raises :class:`Protected` as soon
as the set reaches a protected layer or a model output, :class:`Diverged` when the index mappings
keep producing new indices, and it does not walk through an op that makes removal inexact (it
returns the reason instead). :func:`to_raw_group` turns the traced Torch-Pruning group into our
:class:`~compresskit.groups._sets.RawGroup`: one :class:`~compresskit.groups._sets.Item` per module axis or
graph op, keyed by channel unit, with the first reason (if any) why the set cannot be pruned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch_pruning as tp
from torch import nn
from torch_pruning import ops as tp_ops
from torch_pruning.dependency.dependency import Dependency

from compresskit.groups._channel_ops import count_chunks, is_channel_edge, op_reason
from compresskit.groups._sets import Item, RawGroup, by_unit, channel_units
from compresskit.groups._tp_internals import GRAPH_OPS, ElementWiseOp, GroupItem, HybridIndex, module_names
from compresskit.layers.pool import ChannelPool
from compresskit.layers.rules import BOTH, IN, OUT, axis_size, is_depthwise
from compresskit.layers.shuffle import ChannelShuffle

__all__ = ["Diverged", "Protected", "ProtectionTest", "coupled_set", "to_raw_group"]

#: ``is_protected(node, handler)``: whether the set may not shrink this node's channels.
ProtectionTest = Callable[[Any, Any], bool]

_TRAVERSAL_BUDGET = 2_000_000  # index entries mapped while collecting one coupled set


class Protected(Exception):
    """The coupled set reaches a protected layer or a model output."""


class Diverged(Exception):
    """Torch-Pruning's index mapping keeps producing new index lists."""


def coupled_set(
    graph: tp.DependencyGraph,
    module: nn.Module,
    num_channels: int,
    is_protected: ProtectionTest,
) -> tuple[tp.Group, str | None]:
    """Torch-Pruning's ``get_pruning_group`` for all channels of ``module``, made safe.

    Returns the group and, if it reaches an op that makes removal inexact (see
    :func:`~compresskit.groups._channel_ops.op_reason`), the reason; the traversal does not continue
    through that op.

    Same traversal over the dependency graph (Torch-Pruning's index mappings are reused
    as built once by ``build_dependency``), but it stops as soon as the set reaches a
    protected layer or a model output (raises :class:`Protected`) and gives up when the
    index mapping diverges (raises :class:`Diverged`) instead of running for ever, as
    it does on some detection heads that reshape and concatenate their outputs.
    """
    pruner = graph.get_pruner_of_module(module)
    pruning_fn = pruner.prune_out_channels
    if is_depthwise(module):
        pruning_fn = tp.prune_depthwise_conv_out_channels
    root = graph.module2node[module]
    if is_protected(root, pruning_fn):
        raise Protected
    group = tp.Group()
    group.add_dep(
        Dependency(pruning_fn, pruning_fn, source=root, target=root),
        [HybridIndex(idx=i, root_idx=i) for i in range(num_channels)],
    )
    unsafe = _traverse(graph, group, is_protected)
    return _every_pair(group), unsafe


def _traverse(graph: tp.DependencyGraph, group: tp.Group, is_protected: ProtectionTest) -> str | None:
    """Add to ``group`` every dependency its root reaches; the first reason the set is unsafe, or ``None``.

    Worklist of deltas: each (node, handler) is pushed only the (index, root) pairs it has not
    seen yet, so the traversal is monotone and ends after every pair was reached once (every
    index mapping acts on each index on its own). The work budget still catches mappings that
    keep producing new indices.
    """
    failures = getattr(graph, "compresskit_failures", {})
    root_dep, root_idxs = group[0].dep, group[0].idxs
    seen: dict[tuple[Any, Any], set[tuple[int, Any]]] = {
        (root_dep.target, root_dep.handler): {(i.idx, i.root_idx) for i in root_idxs}
    }
    stack = [(root_dep, root_idxs)]
    work = 0
    unsafe: str | None = None
    while stack:
        dep, idxs = stack.pop()
        node, fn = dep.target, dep.handler
        for new_dep in node.dependencies:
            if not new_dep.is_triggered_by(fn):
                continue
            neighbour = new_dep.target
            stop = _stop_reason(failures, node, neighbour)
            if stop is not None:
                unsafe = unsafe or stop
                continue
            if neighbour is not node and not is_channel_edge(graph, node, neighbour):
                continue
            new_idxs = idxs
            for mapping in new_dep.index_mapping:
                if mapping is not None:
                    new_idxs = mapping(new_idxs)
            work += len(new_idxs)
            if work > _TRAVERSAL_BUDGET:
                raise Diverged(new_dep.target)
            have = seen.setdefault((neighbour, new_dep.handler), set())
            fresh = [i for i in dict.fromkeys(new_idxs) if (i.idx, i.root_idx) not in have]
            if not fresh:
                continue
            if is_protected(neighbour, new_dep.handler):
                raise Protected
            have.update((i.idx, i.root_idx) for i in fresh)
            group.add_dep(new_dep, fresh)
            stack.append((new_dep, fresh))
    return unsafe


def _stop_reason(failures: dict[Any, str], node: Any, neighbour: Any) -> str | None:
    """Why the traversal must not enter ``neighbour`` from ``node`` (the set is then unsafe), else ``None``."""
    if neighbour in failures:
        return (
            f"Torch-Pruning could not map channels through {neighbour.name} ({failures[neighbour]}); "
            "an inline view/transpose channel shuffle? write it as compresskit.ChannelShuffle"
        )
    if isinstance(neighbour.module, ElementWiseOp) and node in neighbour.inputs:
        return op_reason(neighbour.grad_fn)
    return None


def _every_pair(group: tp.Group) -> tp.Group:
    """One item per (target, handler) with *every* (index, root) pair reached.

    Torch-Pruning's ``add_and_merge`` keeps one root per index; that loses the relation "root j
    and root k reach the same channel" (a ghost module's cat([x1, cheap(x1)]) into a residual
    add), which :func:`~compresskit.groups._sets.channel_units` needs. Raw parameters are dropped: they
    are never pruned.
    """
    pairs: dict[tuple[Any, Any], tuple[Any, dict[tuple[int, Any], None]]] = {}
    for dep, idxs in group.items:
        if isinstance(dep.target.module, nn.Parameter):  # raw parameters are never pruned
            continue
        _, seen = pairs.setdefault((dep.target, dep.handler), (dep, {}))
        for k in idxs:
            seen[(k.idx, k.root_idx)] = None
    merged = tp.Group()
    for dep, seen in pairs.values():
        item = GroupItem(dep, [idx for idx, _ in seen])
        item.root_idxs = [root for _, root in seen]
        merged.add_dep(dep, [])
        merged[len(merged) - 1] = item
    return merged


def to_raw_group(
    graph: tp.DependencyGraph,
    group: tp.Group,
    protected: set[str],
    output_nodes: set[Any],
    root: str,
    num_channels: int,
) -> RawGroup:
    """Torch-Pruning group -> :class:`RawGroup` (items keyed by channel unit, see :func:`channel_units`).

    The set's reason is the first one met over its items in order; it is protected when it
    shrinks a model output or the output channels of a layer named in ``protected``.
    """
    names = module_names(graph)
    items: list[Item] = []
    reason: str | None = None
    is_protected = False
    for entry in group.items:
        item, entry_reason, entry_protected = _to_item(entry, names, protected, output_nodes)
        reason = reason or entry_reason
        is_protected = is_protected or entry_protected
        if item is not None:
            items.append(item)
    units = channel_units(num_channels, items)
    if len(units) < num_channels:
        items = by_unit(items, units)
    return RawGroup(root, len(units), items, reason, is_protected)


def _to_item(
    entry: Any, names: dict[Any, str], protected: set[str], output_nodes: set[Any]
) -> tuple[Item | None, str | None, bool]:
    """``(item, reason, protected)`` of one traced group entry; no item for outputs and raw parameters."""
    dep = entry.dep
    node, module = dep.target, dep.target.module
    axis = OUT if dep.handler.__name__ == "prune_out_channels" else IN
    name = names.get(module, str(module))
    tie = getattr(node, "compresskit_tie", None)  # an inline shuffle's input: key by slot, see _routing
    index, reason = _index_by_root(entry, tie, name)
    if node.type == tp_ops.OPTYPE.OUTPUT or (axis == OUT and node.grad_fn in output_nodes):
        return None, reason, True
    if isinstance(module, nn.Parameter):
        return None, reason, False
    layer = _classify(node, module, axis, name)
    reason = reason or layer.reason
    size = axis_size(module, layer.axis) or 0  # graph ops have no size of their own
    if layer.groups > 1 and layer.kind == "op":  # x.chunk(k, dim=1): equal parts, like a grouped conv's groups
        size = int(node.grad_fn._saved_self_sym_sizes[1])
    if size and any(not 0 <= i < size for idxs in index.values() for i in idxs):
        reason = reason or (
            f"Torch-Pruning's index mapping is inconsistent at {layer.name} (indices beyond its {size} "
            "channels; a split/chunk whose parts are concatenated again?)"
        )
    item = Item(layer.name, layer.kind, layer.axis, size, index, layer.groups, tied=bool(tie))
    return item, reason, layer.axis in (OUT, BOTH) and layer.name in protected


def _index_by_root(entry: Any, tie: int | None, name: str) -> tuple[dict[int, tuple[int, ...]], str | None]:
    """``{root channel: sorted indices}`` of one entry (indices taken modulo ``tie`` when set)."""
    index: dict[int, list[int]] = {}
    reason: str | None = None
    for idx, root_idx in zip(entry.idxs, entry.root_idxs):
        if root_idx is None:
            reason = reason or f"Torch-Pruning lost the channel mapping at {name}"
            continue
        index.setdefault(int(root_idx), []).append(int(idx) % tie if tie else int(idx))
    return {k: tuple(sorted(set(v))) for k, v in index.items()}, reason


class _Layer(NamedTuple):
    """What one traced module axis or graph op is to a coupled set."""

    kind: str  # see Item.kind
    axis: str
    groups: int
    name: str
    reason: str | None  # why the set cannot be pruned through it; None: it can


def _classify(node: Any, module: Any, axis: str, name: str) -> _Layer:
    """The :class:`_Layer` of a module (or graph op, renamed ``"<Op>:<autograd node>:<id>"``)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return _classify_conv(module, axis, name)
    if isinstance(module, nn.Linear):
        return _Layer("linear", axis, 1, name, None)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        reason = None if module.affine else f"BatchNorm {name} without affine parameters cannot be soft-zeroed"
        return _Layer("bn", OUT, 1, name, reason)
    if isinstance(module, nn.PReLU):
        return _Layer("prelu", OUT, 1, name, None)
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
        return _Layer("op", axis, 1, name, (
            f"{type(module).__name__} {name} normalises over these channels: removing one changes the "
            "mean and variance the others are normalised with, so removal is not exact"
        ))
    if isinstance(module, nn.MultiheadAttention):
        return _Layer("op", axis, 1, name, (
            f"nn.MultiheadAttention {name}: its projections must stay as wide as the query, so neither "
            "its channels nor its heads can be removed (write attention with q/k/v Linears and num_heads)"
        ))
    if isinstance(module, ChannelShuffle):
        return _Layer("shuffle", axis, 1, name, None)
    if isinstance(module, ChannelPool):
        reason = None if axis == IN else f"the output maps of ChannelPool {name} cannot be pruned"
        return _Layer("pool", axis, 1, name, reason)
    if isinstance(module, GRAPH_OPS):
        grad_name = getattr(node.grad_fn, "name", lambda: "?")()
        op_name = f"{type(module).__name__.strip('_')}:{grad_name}:{getattr(module, 'id', '')}"
        return _Layer("op", axis, count_chunks(node.grad_fn), op_name, op_reason(node.grad_fn))
    return _Layer("op", axis, 1, name, f"unsupported layer {name} ({type(module).__name__})")


def _classify_conv(module: nn.modules.conv._ConvNd, axis: str, name: str) -> _Layer:
    """Convs: transposed, depthwise (both axes at once), grouped (balance constraint) or plain."""
    if module.transposed:
        reason = f"grouped transposed conv {name} is not supported" if module.groups > 1 else None
        return _Layer("conv_transpose", axis, 1, name, reason)
    if is_depthwise(module):
        return _Layer("conv", BOTH, 1, name, None)
    if module.groups > 1:
        reason = None
        if module.groups in (module.in_channels, module.out_channels):
            reason = (
                f"conv {name} with groups={module.groups}, in={module.in_channels}, "
                f"out={module.out_channels} (one channel per group) cannot be pruned evenly"
            )
        return _Layer("conv", axis, module.groups, name, reason)
    return _Layer("conv", axis, 1, name, None)
