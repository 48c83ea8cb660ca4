"""What one autograd op does to the channel axis (dim 1), read off the recorded autograd graph.

Pure queries over ``grad_fn`` nodes and the shapes recorded by :mod:`compresskit.groups._depgraph`;
nothing here changes the graph:

* :func:`op_reason`: why an op makes channel removal inexact (channel mixing outside a prunable
  layer, a reduction over channels), or ``None``;
* :func:`output_ranges` / :func:`count_chunks`: the channel range of each output of a
  split/chunk/slice over dim 1, and whether it is an equal ``chunk``;
* :func:`is_channel_edge`: whether channels flow along a graph edge at all (an input broadcast
  over channels, or ``grid_sample``'s grid, carries none).

Autograd nodes store their arguments in ``_saved_*`` attributes; those names are PyTorch's, and
an attribute that is missing makes a query answer "unknown" (``None`` / no mapping), never raise.
"""

from __future__ import annotations

from typing import Any

import torch_pruning as tp

from compresskit.groups._tp_internals import ElementWiseOp

__all__ = ["count_chunks", "is_channel_edge", "normalise_dims", "op_reason", "output_ranges"]

_MIXING_OPS = (
    "Convolution",
    "Mm",
    "Addmm",
    "Bmm",
    "Baddbmm",
    "Im2Col",
    "Col2Im",
    "GridSampler",
    "Linear",
    "Einsum",
)
_REDUCTIONS = (
    "Mean",
    "Sum",
    "Max",
    "Amax",
    "Min",
    "Amin",
    "Std",
    "Var",
    "Norm",
    "LinalgVectorNorm",
    "Logsumexp",
    "Softmax",
    "LogSoftmax",
    "Prod",
    "Median",
)


def normalise_dims(dims: Any, ndim: int) -> set[int]:
    """Dimensions saved by an autograd node (an int or a sequence, possibly negative) as ``{0..ndim-1}``."""
    if isinstance(dims, int):
        dims = (dims,)
    out = set()
    for d in dims:
        d = int(d)
        if d >= 2**63:  # autograd stores negative dims as unsigned
            d -= 2**64
        out.add(d % ndim if ndim else d)
    return out


def output_ranges(grad_fn: Any) -> list[tuple[int, int, int]] | None:
    """Channel range ``(start, stop, step)`` of each output of a split/slice over dim 1, else ``None``."""
    name = grad_fn.name() if grad_fn is not None else ""
    sizes = getattr(grad_fn, "_saved_self_sym_sizes", None)
    if sizes is None or len(sizes) < 2 or not hasattr(grad_fn, "_saved_dim"):
        return None
    if normalise_dims(grad_fn._saved_dim, len(sizes)) != {1}:
        return None
    channels = int(sizes[1])
    if name.startswith("SplitWithSizesBackward"):
        bounds = [0]
        for size in grad_fn._saved_split_sizes:
            bounds.append(bounds[-1] + int(size))
        return [(bounds[k], bounds[k + 1], 1) for k in range(len(bounds) - 1)]
    if name.startswith("SplitBackward"):
        size = int(grad_fn._saved_split_size)
        return [(k, min(k + size, channels), 1) for k in range(0, channels, size)]
    if name.startswith("SliceBackward"):
        start, end, step = (int(v) for v in (grad_fn._saved_start, grad_fn._saved_end, grad_fn._saved_step))
        start, end = (v + channels if v < 0 else v for v in (start, end))
        return [(max(start, 0), min(end, channels), step)]
    return None


def count_chunks(grad_fn: Any) -> int:
    """Number of equal parts of a ``chunk``/``split(size)`` over channels, else 1.

    The user's code splits the *pruned* tensor into equal parts again, so removal stays exact
    only if every part loses the same number of channels: the part acts like a grouped conv's
    group (equal-removal cells, see :func:`compresskit.groups._sets.split_cells`).
    """
    ranges = output_ranges(grad_fn) if grad_fn is not None and grad_fn.name().startswith("SplitBackward") else None
    if not ranges or len(ranges) < 2 or len({stop - start for start, stop, _ in ranges}) != 1:
        return 1
    return len(ranges)


def op_reason(grad_fn: Any) -> str | None:
    """Why an autograd op breaks channel-wise pruning, or ``None`` if it may be fine."""
    if grad_fn is None or not hasattr(grad_fn, "name"):
        return None
    name = grad_fn.name()
    if name.startswith(tuple(op + "Backward" for op in _MIXING_OPS)):
        return (
            f"channel-mixing op {name} outside a prunable layer (attention's q @ k^T / attn @ v, or a custom "
            "module using F.conv2d / unfold)"
        )
    if name.startswith(tuple(op + "Backward" for op in _REDUCTIONS)):
        sizes = getattr(grad_fn, "_saved_self_sym_sizes", None)
        if sizes is None and hasattr(grad_fn, "_saved_self"):
            sizes = grad_fn._saved_self.shape
        if sizes is None and hasattr(grad_fn, "_saved_result"):
            sizes = grad_fn._saved_result.shape
        if sizes is None or len(sizes) < 2:
            return None
        dims = getattr(grad_fn, "_saved_dim", None)
        if dims is None or 1 in normalise_dims(dims, len(sizes)):
            return (
                f"{name} reduces over the channel axis (e.g. CBAM spatial attention's channel mean/max; "
                "write channel max/mean as compresskit.ChannelPool)"
            )
    return None


def is_channel_edge(graph: tp.DependencyGraph, node: Any, other: Any) -> bool:
    """Whether channels flow between ``node`` and its graph neighbour ``other``.

    Torch-Pruning couples every input of an element-wise op with its output. Inputs
    broadcast along the channel axis (a CBAM spatial gate ``[N, 1, H, W]``, a BiFPN
    fusion weight, a deformable conv's modulator) or feeding a non-channel argument
    (``grid_sample``'s grid) carry no channels; this drops those edges.
    """
    if other in node.inputs:
        consumer, producer = node, other
    elif node in other.inputs:
        consumer, producer = other, node
    else:
        return True
    if not isinstance(consumer.module, ElementWiseOp):
        return True
    grad_fn = consumer.grad_fn
    shapes = getattr(graph, "compresskit_shapes", {}).get(grad_fn)
    if shapes is None or producer.grad_fn is None:
        return True
    out_shape, in_shapes = shapes
    slots = [i for i, (f, _) in enumerate(grad_fn.next_functions) if f is producer.grad_fn]
    if not slots or out_shape is None:
        return True
    if grad_fn.name().startswith("GridSampler"):
        return 0 in slots
    for slot in slots:
        in_shape = in_shapes[slot] if slot < len(in_shapes) else None
        if in_shape is None or not _broadcasts_over_channels(tuple(in_shape), tuple(out_shape)):
            return True
    return False


def _broadcasts_over_channels(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> bool:
    """``in_shape`` broadcasts to ``out_shape`` without a channel axis of its own."""
    if len(out_shape) < 2 or out_shape[1] == 1 or len(in_shape) > len(out_shape):
        return False
    padded = (1,) * (len(out_shape) - len(in_shape)) + in_shape
    if any(i not in (1, o) for i, o in zip(padded, out_shape)):
        return False
    return padded[1] == 1
