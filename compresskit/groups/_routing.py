"""Index mappings of graph ops derived from the autograd graph instead of assumed.

Torch-Pruning attaches an index mapping to every dependency between two graph nodes; for
splits, slices, concatenations and reshapes it guesses them from discovery order and the
nearest producer's channel count. :func:`derive_routing` replaces those guesses on a built
graph with mappings read off the autograd edges (which output of a split an edge carries) and
the recorded shapes (a concat input's offset, a flatten's stride, an inline channel shuffle's
groups).

Contract: a mapping takes and returns a list of
:data:`~compresskit.groups._tp_internals.HybridIndex` ``(idx, root_idx)`` pairs, keeps every root
and never invents channels outside the target; where the recorded shapes do not make a
relation unambiguous Torch-Pruning's own mapping is kept.
"""

from __future__ import annotations

import math
from typing import Any

import torch_pruning as tp

from compresskit.groups._channel_ops import normalise_dims, output_ranges
from compresskit.groups._tp_internals import HybridIndex

__all__ = ["Permute", "derive_routing"]


class Permute:
    """Index mapping through a permutation (list: new position of each old index)."""

    def __init__(self, mapping: list[int]) -> None:
        self.mapping = mapping

    def __call__(self, idxs: list[HybridIndex]) -> list[HybridIndex]:
        return [HybridIndex(idx=self.mapping[i.idx], root_idx=i.root_idx) for i in idxs]


class _Route:
    """Index mapping along every autograd edge between two graph nodes (``[(a_range, b_offset)]``).

    ``a_range = (start, stop, step)`` selects the source channels that travel along one edge
    (one output of a split, a slice, or everything); ``b_offset`` is where they land in the
    target (a concat input's offset, or 0). ``reverse`` maps target indices back.
    """

    def __init__(self, edges: list[tuple[tuple[int, int, int], int, int]], reverse: bool) -> None:
        self.edges = edges  # ((start, stop, step), b_offset, b_size)
        self.reverse = reverse

    def __call__(self, idxs: list[HybridIndex]) -> list[HybridIndex]:
        out: dict[tuple[int, Any], None] = {}
        for (start, stop, step), b_offset, b_size in self.edges:
            for i in idxs:
                if self.reverse:
                    part = i.idx - b_offset
                    if 0 <= part < b_size:
                        out[(start + part * step, i.root_idx)] = None
                elif start <= i.idx < stop and (i.idx - start) % step == 0:
                    out[(b_offset + (i.idx - start) // step, i.root_idx)] = None
        return [HybridIndex(idx=idx, root_idx=root) for idx, root in out]


_VIEWS = ("ViewBackward", "UnsafeViewBackward", "ReshapeAliasBackward", "_ReshapeAliasBackward")


def _set_mapping(source: Any, target: Any, forward: Any, backward: Any) -> None:
    """Index mappings of the dependencies ``source -> target`` and ``target -> source``."""
    for dep in source.dependencies:
        if dep.target is target:
            dep.index_mapping = [forward, None]
    for dep in target.dependencies:
        if dep.target is source:
            dep.index_mapping = [backward, None]


def _inline_shuffle(fn: Any, shapes: dict[Any, Any]) -> tuple[list[Any], int, int] | None:
    """``([view, transpose, (clone,) view] grad_fns, groups, channels)`` if ``fn`` ends an inline
    channel shuffle ``x.view(N, g, C/g, *).transpose(1, 2)(.contiguous()).view(N, C, *)``."""
    if fn is None or not fn.name().startswith(_VIEWS) or not fn.next_functions:
        return None
    chain = [fn]
    node = fn.next_functions[0][0]
    if node is not None and node.name().startswith("CloneBackward"):
        chain.append(node)
        node = node.next_functions[0][0]
    if node is None:
        return None
    name = node.name()
    swaps = (name.startswith("TransposeBackward") and {int(node._saved_dim0), int(node._saved_dim1)} == {1, 2}) or (
        name.startswith("PermuteBackward") and tuple(node._saved_dims)[:3] == (0, 2, 1)
        and tuple(node._saved_dims)[3:] == tuple(range(3, len(node._saved_dims)))
    )
    if not swaps or not node.next_functions:
        return None
    chain.append(node)
    first = node.next_functions[0][0]
    if first is None or not first.name().startswith(_VIEWS):
        return None
    chain.append(first)
    (split_shape, in_shapes), (joined_shape, _) = shapes.get(first, (None, [None])), shapes.get(fn, (None, None))
    in_shape = in_shapes[0] if in_shapes else None
    if split_shape is None or in_shape is None or joined_shape is None or len(in_shape) < 2:
        return None
    channels, rest = int(in_shape[1]), tuple(in_shape[2:])
    groups = int(split_shape[1]) if len(split_shape) == len(in_shape) + 1 else 0
    if (
        groups < 2 or tuple(split_shape) != (in_shape[0], groups, channels // groups, *rest)
        or channels % groups or tuple(joined_shape) != tuple(in_shape)
    ):
        return None
    return chain[::-1], groups, channels


def _derive_shuffles(graph: tp.DependencyGraph, by_grad_fn: dict[Any, Any], shapes: dict[Any, Any]) -> set[Any]:
    """Map channels through inline ``view/transpose/view`` shuffles (torchvision's ShuffleNetV2).

    Input channel ``a * C/g + b`` becomes output channel ``b * g + a``. The ops in between carry
    input coordinates. The shuffle stays a shuffle after removal only if every removed ``b``
    is removed from all ``g`` input groups at once, so the first view is marked with
    ``compresskit_tie = C/g``: :func:`compresskit.groups._coupling.to_raw_group` keys its item by ``index % (C/g)`` and
    :func:`compresskit.groups._sets.channel_units` joins those channels into one unit.
    """
    failures = getattr(graph, "compresskit_failures", {})
    shuffle_nodes: set[Any] = set()
    for node in list(by_grad_fn.values()):
        found = _inline_shuffle(node.grad_fn, shapes)
        if found is None or any(fn not in by_grad_fn for fn in found[0]):
            continue
        chain, groups, channels = found
        nodes = [by_grad_fn[fn] for fn in chain]
        per_group = channels // groups
        in_to_out = [(k % per_group) * groups + k // per_group for k in range(channels)]
        out_to_in = [0] * channels
        for k, j in enumerate(in_to_out):
            out_to_in[j] = k
        for producer in nodes[0].inputs:
            _set_mapping(producer, nodes[0], None, None)
        for source, target in zip(nodes[:-1], nodes[1:-1]):
            _set_mapping(source, target, None, None)
        _set_mapping(nodes[-2], nodes[-1], Permute(in_to_out), Permute(out_to_in))
        for consumer in nodes[-1].outputs:
            _set_mapping(nodes[-1], consumer, None, None)
        for shuffle_node in nodes:
            failures.pop(shuffle_node, None)
        nodes[0].compresskit_tie = per_group
        shuffle_nodes.update(nodes)
    return shuffle_nodes


class _Flatten:
    """``(N, C, *rest) -> (N, C * S)``: channel ``c`` becomes features ``[c*S, (c+1)*S)`` (reverse: ``j // S``)."""

    def __init__(self, stride: int, reverse: bool) -> None:
        self.stride, self.reverse = stride, reverse

    def __call__(self, idxs: list[HybridIndex]) -> list[HybridIndex]:
        if self.reverse:
            pairs = {(i.idx // self.stride, i.root_idx): None for i in idxs}
        else:
            pairs = {(i.idx * self.stride + s, i.root_idx): None for i in idxs for s in range(self.stride)}
        return [HybridIndex(idx=idx, root_idx=root) for idx, root in pairs]


def _derive_reshapes(graph: tp.DependencyGraph, shapes: dict[Any, Any], skip: set[Any]) -> None:
    """Index mappings of views/reshapes read off their recorded shapes where that is unambiguous.

    Torch-Pruning infers a flatten's stride from the channel count of the nearest producer it
    finds, which is wrong behind an inline shuffle or a split. Here: a view that keeps the batch
    and channel axes maps channels to themselves; ``(N, C, *rest) -> (N, C * S)`` maps channel
    ``c`` to ``[c*S, (c+1)*S)``. Other reshapes keep Torch-Pruning's mapping.
    """
    for node in graph.module2node.values():
        fn = node.grad_fn
        if node in skip or fn is None or not fn.name().startswith(_VIEWS) or fn not in shapes:
            continue
        out_shape, in_shapes = shapes[fn]
        in_shape = in_shapes[0] if in_shapes else None
        if out_shape is None or in_shape is None or len(in_shape) < 2 or len(out_shape) < 2:
            continue
        if in_shape[0] != out_shape[0]:
            continue
        if in_shape[1] == out_shape[1] and (len(in_shape) > 2 or len(out_shape) > 2):
            forward = backward = None  # channels untouched: (N, C, H, W) <-> (N, C, H*W)
        elif len(out_shape) == 2 and math.prod(in_shape[1:]) == out_shape[1]:
            stride = math.prod(in_shape[2:])
            forward, backward = _Flatten(stride, reverse=False), _Flatten(stride, reverse=True)
        else:
            continue
        for producer in node.inputs:
            _set_mapping(producer, node, forward, backward)
        for consumer in node.outputs:
            _set_mapping(node, consumer, None, None)


def derive_routing(graph: tp.DependencyGraph) -> None:
    """Replace Torch-Pruning's split / slice / concat index mappings by ones read off the autograd graph.

    Torch-Pruning matches a split's outputs to its consumers by discovery order and composes a
    split followed by a concat in the wrong order, so a CSP block (``chunk`` whose parts are
    concatenated again) or a ShuffleNetV2 unit gets indices outside the layers. Here every edge
    carries its output number (``next_functions``) and every concat input its offset (recorded
    input shapes), so the mapping of each edge is derived, not assumed.
    """
    shapes = getattr(graph, "compresskit_shapes", {})
    if not shapes:
        return
    by_grad_fn = {node.grad_fn: node for node in graph.module2node.values() if node.grad_fn is not None}
    shuffles = _derive_shuffles(graph, by_grad_fn, shapes)
    _derive_reshapes(graph, shapes, shuffles)
    for target in graph.module2node.values():
        grad_fn = target.grad_fn
        if grad_fn is None or not hasattr(grad_fn, "next_functions"):
            continue
        is_cat = grad_fn.name().startswith("CatBackward")
        offsets: list[tuple[int, int]] = []
        if is_cat:
            out_shape, in_shapes = shapes.get(grad_fn, (None, []))
            if out_shape is None or len(out_shape) < 2 or normalise_dims(grad_fn._saved_dim, len(out_shape)) != {1}:
                continue
            if len(in_shapes) != len(grad_fn.next_functions) or any(s is None for s in in_shapes):
                continue
            start = 0
            for shape in in_shapes:
                offsets.append((start, int(shape[1])))
                start += int(shape[1])
        edges: dict[Any, list[tuple[tuple[int, int, int], int, int]]] = {}
        for slot, (fn, output_nr) in enumerate(grad_fn.next_functions):
            source = by_grad_fn.get(fn)
            if source is None or source is target:
                continue
            ranges = output_ranges(fn)
            if ranges is None and not is_cat:
                continue
            if ranges is not None:
                a_range = ranges[output_nr]
            else:
                a_range = (0, 1 << 62, 1)
            b_offset, b_size = offsets[slot] if is_cat else (0, len(range(*a_range)))
            edges.setdefault(source, []).append((a_range, b_offset, b_size))
        for source, routes in edges.items():
            _set_mapping(source, target, _Route(routes, reverse=False), _Route(routes, reverse=True))
